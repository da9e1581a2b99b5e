"""Routing: decide per question which knowledge it needs."""
