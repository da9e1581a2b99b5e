"""Ranking metrics for retrieval evaluation: nDCG@k, recall@k and MRR@k over graded judgements.

Conventions follow trec_eval/BEIR: linear gain, log2 discount, grades <= 0 count as not relevant.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable, Hashable, Mapping, Sequence
from pathlib import Path
from typing import Any, TypeVar

Id = TypeVar("Id", bound=Hashable)
T = TypeVar("T")


def _unique(ranked_ids: Sequence[Id], k: int) -> list[Id]:
    # A retriever that returns the same id twice must not be credited twice.
    seen: dict[Id, None] = {}
    for rid in ranked_ids:
        if len(seen) == k:
            break
        seen.setdefault(rid, None)
    return list(seen)


def ndcg_at_k(ranked_ids: Sequence[Id], relevant: Mapping[Id, float], k: int = 10) -> float:
    """Normalised discounted cumulative gain of the first `k` ids; 0.0 when nothing is relevant."""
    ideal = sorted((g for g in relevant.values() if g > 0), reverse=True)[:k]
    if not ideal or k <= 0:
        return 0.0
    dcg = sum(max(relevant.get(rid, 0), 0) / math.log2(i + 2) for i, rid in enumerate(_unique(ranked_ids, k)))
    idcg = sum(g / math.log2(i + 2) for i, g in enumerate(ideal))
    return dcg / idcg


def recall_at_k(ranked_ids: Sequence[Id], relevant: Mapping[Id, float], k: int = 10) -> float:
    """Share of the relevant ids found among the first `k`; 0.0 when nothing is relevant."""
    wanted = {rid for rid, g in relevant.items() if g > 0}
    if not wanted:
        return 0.0
    return len(wanted.intersection(_unique(ranked_ids, k))) / len(wanted)


def mrr_at_k(ranked_ids: Sequence[Id], relevant: Mapping[Id, float], k: int = 10) -> float:
    """Reciprocal rank of the first relevant id among the first `k`, else 0.0."""
    for i, rid in enumerate(_unique(ranked_ids, k)):
        if relevant.get(rid, 0) > 0:
            return 1.0 / (i + 1)
    return 0.0


def read_jsonl(path: str | Path, parse: Callable[[dict[str, Any]], T], expected: str, limit: int | None = None) -> list[T]:
    """Parse each non-blank JSON line of `path` with `parse`; a bad line is an InputError naming
    the file, the line and `expected`; an empty file is one too."""
    from agentkit.errors import InputError

    p = Path(path)
    out: list[T] = []
    with p.open(encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                out.append(parse({"_line": n, **json.loads(line)}))
            except InputError as exc:
                raise InputError(f"{p}:{n}: {exc}") from None
            except (ValueError, KeyError, TypeError) as exc:
                raise InputError(f"{p}:{n}: not {expected} ({type(exc).__name__}: {exc})") from None
            if limit and len(out) >= limit:
                break
    if not out:
        raise InputError(f"{p}: no lines in the file; expected {expected}")
    return out
