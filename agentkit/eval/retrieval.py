"""Retrieval evaluation on BEIR-layout data: ingest the corpus if needed, run the queries,
score the ranking with nDCG@10, recall@100 and MRR@10 (what `agentkit eval retrieval` prints).
"""

from __future__ import annotations

import csv
import json
import statistics
import time
from collections.abc import Callable, Mapping
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from agentkit.errors import IngestError
from agentkit.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from agentkit.knowledge.base import KnowledgeSource
from agentkit.types import Passage


@dataclass
class RetrievalReport:
    source: str
    queries: int
    ndcg_at_10: float
    recall_at_100: float
    mrr_at_10: float
    median_query_ms: float
    ingest: str = ""

    def to_dict(self) -> dict[str, Any]:
        """The keys of `--json`: `ndcg@10`, `recall@100`, `mrr@10`, plus context."""
        d = asdict(self)
        return {
            "ndcg@10": round(d.pop("ndcg_at_10"), 4),
            "recall@100": round(d.pop("recall_at_100"), 4),
            "mrr@10": round(d.pop("mrr_at_10"), 4),
            **d,
        }


def load_queries(path: Path) -> dict[str, str]:
    """BEIR queries.jsonl: `_id` and `text` per line."""
    out: dict[str, str] = {}
    with open(path, encoding="utf-8") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
                out[str(rec["_id"])] = str(rec["text"])
            except (ValueError, KeyError) as exc:
                raise IngestError(f"{path}:{n}: not a BEIR query line ({exc}); expected {{\"_id\", \"text\"}}") from None
    return out


def load_qrels(path: Path) -> dict[str, dict[str, float]]:
    """BEIR qrels TSV with the header `query-id corpus-id score`."""
    qrels: dict[str, dict[str, float]] = {}
    with open(path, encoding="utf-8", newline="") as fh:
        rows = csv.reader(fh, delimiter="\t")
        header = next(rows, None)
        if not header or [h.strip() for h in header[:3]] != ["query-id", "corpus-id", "score"]:
            raise IngestError(f"{path}: expected a TSV header 'query-id<TAB>corpus-id<TAB>score', got {header!r}")
        for row in rows:
            if len(row) >= 3 and float(row[2]) > 0:
                qrels.setdefault(row[0], {})[row[1]] = float(row[2])
    return qrels


def rank_documents(passages: list[Passage], k: int) -> list[str]:
    """Chunks -> documents: a document ranks where its best chunk does."""
    seen: dict[str, None] = {}
    for p in passages:
        seen.setdefault(p.doc_id, None)
        if len(seen) == k:
            break
    return list(seen)


def evaluate_retrieval(
    source: KnowledgeSource,
    queries: Mapping[str, str],
    qrels: Mapping[str, Mapping[str, float]],
    *,
    progress: Callable[[int], None] | None = None,
) -> RetrievalReport:
    judged = [qid for qid in qrels if qid in queries]
    if not judged:
        raise IngestError("no query in the queries file has a judgement in the qrels file; check that the ids match")
    ndcg, recall, mrr, times = [], [], [], []
    for qid in judged:
        t = time.perf_counter()
        # Ask for extra passages: several chunks of one document collapse into one rank.
        found = source.search(queries[qid], k=150)
        times.append((time.perf_counter() - t) * 1000)
        ranked = rank_documents(found, 100)
        ndcg.append(ndcg_at_k(ranked, qrels[qid], 10))
        recall.append(recall_at_k(ranked, qrels[qid], 100))
        mrr.append(mrr_at_k(ranked, qrels[qid], 10))
        if progress:
            progress(1)
    return RetrievalReport(
        source=source.name,
        queries=len(judged),
        ndcg_at_10=statistics.fmean(ndcg),
        recall_at_100=statistics.fmean(recall),
        mrr_at_10=statistics.fmean(mrr),
        median_query_ms=round(statistics.median(times), 3),
    )
