"""Benchmark of the embedded BM25 stores on SciFact: ingestion rate, query latency and nDCG@10.

Compares qdrant-edge and qdrant-client local mode (on disk and in memory) with bm25s as the peer.
Run from the repository root: `python bench/embedded_store.py [--limit N]`.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from agentkit.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from agentkit.eval.retrieval import load_qrels, load_queries
from agentkit.types import Passage

DEFAULT_DATA = ROOT.parent / "shared" / "data" / "scifact"
K = 10


@dataclass
class Row:
    engine: str
    ingest_per_s: float
    median_ms: float
    p95_ms: float
    ndcg: float
    recall: float
    mrr: float


def load_scifact(data: Path) -> tuple[list[Passage], dict[str, str], dict[str, dict[str, float]]]:
    passages = []
    with open(data / "corpus.jsonl", encoding="utf-8") as fh:
        for line in fh:
            doc = json.loads(line)
            # Whole documents, title and abstract as one passage, as BEIR's BM25 baselines index them.
            passages.append(Passage(id=str(doc["_id"]), text=doc.get("text", ""), title=doc.get("title", "")))
    queries = load_queries(data / "queries.jsonl")
    # Only the judged (test) queries count.
    qrels = {qid: rel for qid, rel in load_qrels(data / "qrels.tsv").items() if qid in queries}
    return passages, queries, qrels


def evaluate(
    name: str,
    ingest: Callable[[], None],
    search: Callable[[str], list[str]],
    n_docs: int,
    queries: dict[str, str],
    qrels: dict[str, dict[str, int]],
) -> Row:
    t0 = time.perf_counter()
    ingest()
    ingest_s = time.perf_counter() - t0
    search(next(iter(queries.values())))  # first-query costs (lazy imports, caches) are not latency
    latencies, ndcgs, recalls, mrrs = [], [], [], []
    for qid, rel in qrels.items():
        t0 = time.perf_counter()
        ranked = search(queries[qid])
        latencies.append((time.perf_counter() - t0) * 1000)
        ndcgs.append(ndcg_at_k(ranked, rel, K))
        recalls.append(recall_at_k(ranked, rel, K))
        mrrs.append(mrr_at_k(ranked, rel, K))
    latencies.sort()
    return Row(
        engine=name,
        ingest_per_s=n_docs / ingest_s,
        median_ms=statistics.median(latencies),
        p95_ms=latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        ndcg=statistics.fmean(ndcgs),
        recall=statistics.fmean(recalls),
        mrr=statistics.fmean(mrrs),
    )


def bench_qdrant(label: str, passages: list[Passage], queries, qrels, args, **where) -> Row:
    from agentkit.knowledge.qdrant import QdrantSource

    source = QdrantSource("bench", batch_size=args.batch_size, k1=args.k1, b=args.b, avg_len=args.avg_len, **where)
    try:
        return evaluate(
            label,
            lambda: source.add(passages),
            lambda q: [p.id for p in source.search(q, k=K)],
            len(passages),
            queries,
            qrels,
        )
    finally:
        source.close()


def _english_stemmer() -> tuple[object | None, str]:
    # bm25s publishes its numbers with PyStemmer; NLTK's Snowball stems the same way, slower.
    try:
        import Stemmer

        return Stemmer.Stemmer("english"), "PyStemmer"
    except ImportError:
        pass
    try:
        from nltk.stem.snowball import SnowballStemmer

        return SnowballStemmer("english").stem, "NLTK Snowball"
    except ImportError:
        print("neither PyStemmer nor nltk is installed: bm25s runs without stemming", file=sys.stderr)
        return None, "no stemmer"


def bench_bm25s(passages: list[Passage], queries, qrels, args) -> Row | None:
    try:
        import bm25s
    except ImportError:
        print("bm25s is not installed (pip install bm25s); its row is left out", file=sys.stderr)
        return None
    stem, stemmer_name = _english_stemmer()
    retriever = bm25s.BM25(k1=args.k1, b=args.b)
    ids = [p.id for p in passages]

    def ingest() -> None:
        texts = [f"{p.title}\n{p.text}" if p.title else p.text for p in passages]
        tokens = bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False)
        retriever.index(tokens, show_progress=False)

    def search(query: str) -> list[str]:
        tokens = bm25s.tokenize([query], stopwords="en", stemmer=stem, return_ids=False, show_progress=False)
        # The index's vocabulary must know a term for bm25s to accept it.
        known = [[t for t in tokens[0] if t in retriever.vocab_dict]]
        if not known[0]:
            return []
        docs, _scores = retriever.retrieve(known, k=K, show_progress=False, n_threads=1)
        return [ids[i] for i in docs[0]]

    return evaluate(f"bm25s ({stemmer_name}, no store)", ingest, search, len(passages), queries, qrels)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N judged queries (0 = all)")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="directory with corpus.jsonl, queries.jsonl, qrels.tsv"
    )
    parser.add_argument("--engines", default="edge-path,edge-memory,client-path,client-memory,bm25s")
    parser.add_argument("--batch-size", type=int, default=256)
    parser.add_argument("--k1", type=float, default=1.2)
    parser.add_argument("--b", type=float, default=0.75)
    parser.add_argument("--avg-len", type=float, default=256.0, help="BM25 avg_len of the Qdrant encoder")
    args = parser.parse_args()

    missing = [f for f in ("corpus.jsonl", "queries.jsonl", "qrels.tsv") if not (args.data / f).is_file()]
    if missing:
        print(f"SciFact not found: {args.data} lacks {', '.join(missing)}; pass --data DIR. Skipping.")
        return 0
    passages, queries, qrels = load_scifact(args.data)
    if args.limit > 0:
        qrels = dict(list(qrels.items())[: args.limit])
    wanted = [e.strip() for e in args.engines.split(",") if e.strip()]
    print(
        f"SciFact: {len(passages)} passages, {len(qrels)} judged queries; k={K}; "
        f"BM25 k1={args.k1} b={args.b} avg_len={args.avg_len}; "
        f"Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )

    rows: list[Row] = []
    with tempfile.TemporaryDirectory(prefix="agentkit-bench-") as tmp:
        plans: dict[str, tuple[str, dict[str, Any]]] = {
            "edge-path": ("qdrant-edge, path", {"engine": "edge", "path": Path(tmp) / "edge"}),
            "edge-memory": ("qdrant-edge, :memory:", {"engine": "edge", "location": ":memory:"}),
            "client-path": ("qdrant-client local, path", {"engine": "client", "path": Path(tmp) / "client"}),
            "client-memory": ("qdrant-client local, :memory:", {"engine": "client", "location": ":memory:"}),
        }
        for key in wanted:
            if key in plans:
                label, where = plans[key]
                rows.append(bench_qdrant(label, passages, queries, qrels, args, **where))
            elif key == "bm25s":
                peer = bench_bm25s(passages, queries, qrels, args)
                if peer:
                    rows.append(peer)
            else:
                parser.error(f"unknown engine {key!r}; one of: {', '.join([*plans, 'bm25s'])}")
            print(f"  done: {rows[-1].engine}" if rows else "", file=sys.stderr)

    header = ("engine", "ingest passages/s", "query median ms", "query p95 ms", "nDCG@10", "R@10", "MRR@10")
    table = [
        (r.engine, f"{r.ingest_per_s:,.0f}", f"{r.median_ms:.2f}", f"{r.p95_ms:.2f}")
        + tuple(f"{x:.4f}" for x in (r.ndcg, r.recall, r.mrr))
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        cells = [c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))]
        print("| " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
