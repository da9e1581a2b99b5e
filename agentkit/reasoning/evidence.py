"""Evidence assembly: merge passages from several sources, deduplicate, fit a token budget,
and order them so the most relevant sit first and last (models read the middle least well).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from dataclasses import replace

from agentkit.knowledge.fusion import rrf
from agentkit.types import Passage


def merge_ranked(results: Sequence[Sequence[Passage]], weights: Sequence[float] | None = None) -> list[Passage]:
    """Per-source rankings into one: a single ranking as it is, several fused by weighted
    reciprocal rank (knowledge/fusion.py), since scores of different sources don't compare."""
    if len(results) == 1:
        return list(results[0])
    return rrf(results, weights)


def deduplicate(passages: Iterable[Passage]) -> list[Passage]:
    """Keep the first of passages sharing an id or the same whitespace-normalised text."""
    seen_ids: set[str] = set()
    seen_text: set[str] = set()
    out = []
    for p in passages:
        norm = " ".join(p.text.split()).lower()
        if p.id in seen_ids or norm in seen_text:
            continue
        seen_ids.add(p.id)
        seen_text.add(norm)
        out.append(p)
    return out


def fit_budget(passages: Sequence[Passage], budget: int, count_tokens: Callable[[str], int]) -> list[Passage]:
    """Take passages in order while they fit `budget` tokens; the first that overflows is cut to
    the remaining room if that room is worth it (at least 48 tokens), and the rest are dropped."""
    out: list[Passage] = []
    used = 0
    for p in passages:
        cost = count_tokens(f"[{len(out) + 1}] {p.title}\n{p.text}\n")
        if used + cost <= budget:
            out.append(p)
            used += cost
            continue
        room = budget - used
        if room >= 48:
            # Cut by characters in proportion, then confirm with the tokenizer.
            keep = max(1, int(len(p.text) * room / cost))
            text = p.text[:keep]
            while keep > 1 and count_tokens(f"[{len(out) + 1}] {p.title}\n{text}\n") > room:
                keep = int(keep * 0.9)
                text = p.text[:keep]
            out.append(replace(p, text=text.rstrip() + " …", metadata={**p.metadata, "truncated": True}))
        break
    return out


def edges_first(ranked: Sequence[Passage]) -> list[Passage]:
    """Order ranked passages 1st, 3rd, 5th, … 6th, 4th, 2nd: the best two at the two ends."""
    return list(ranked[0::2]) + list(reversed(ranked[1::2]))


def rank_evidence(
    results: Sequence[Sequence[Passage]],
    budget: int,
    count_tokens: Callable[[str], int],
    min_score: float = 0.0,
) -> list[Passage]:
    """Merged, deduplicated and budgeted, best first."""
    if min_score > 0:
        results = [[p for p in ranking if p.score > min_score] for ranking in results]
    return fit_budget(deduplicate(merge_ranked(results)), budget, count_tokens)


def assemble(
    results: Sequence[Sequence[Passage]],
    budget: int,
    count_tokens: Callable[[str], int],
    min_score: float = 0.0,
) -> list[Passage]:
    """The evidence the model sees, in display order: merged, deduplicated, budgeted, reordered."""
    return edges_first(rank_evidence(results, budget, count_tokens, min_score))
