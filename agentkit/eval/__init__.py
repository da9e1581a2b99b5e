"""Evaluation: what the `agentkit eval ...` commands and `agentkit tune eval` measure, in one place.

`metrics` (nDCG, recall, MRR; JSONL reading), `retrieval` (BEIR), `qa` (SQuAD 2.0 scoring),
`routing` (labelled route accuracy, router fitting), `perplexity` (llama.cpp, with LoRA),
`adapters` (evidence use, base versus base + adapter) and `corpus` (the evaluation store).
Nothing is imported here, so importing one module pulls in only what it needs.
"""
