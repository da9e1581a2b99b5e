"""Reasoning: chain-of-thought prompts over numbered evidence, and parsing of cited answers."""
