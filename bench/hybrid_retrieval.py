"""Benchmark of BM25, dense and hybrid retrieval through QdrantSource on SciFact, with bm25s as the peer.

Prints one table: nDCG@10, R@100, MRR@10 and query latency per retriever, with the dense encoder's
rate. Run from the repository root: `python bench/hybrid_retrieval.py [--limit N] [--cache-dir DIR]`.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from embedded_store import DEFAULT_DATA, _english_stemmer, load_scifact

from agentkit.eval.metrics import mrr_at_k, ndcg_at_k, recall_at_k
from agentkit.types import Passage


@dataclass
class Row:
    retriever: str
    median_ms: float
    p95_ms: float
    ndcg10: float
    recall100: float
    mrr10: float


def evaluate(
    name: str, search: Callable[[str, int], list[str]], queries: dict[str, str], qrels: dict[str, dict[str, int]]
) -> Row:
    search(next(iter(queries.values())), 10)  # first-query costs (lazy loads) are not latency
    latencies, ndcgs, recalls, mrrs = [], [], [], []
    for qid, rel in qrels.items():
        t0 = time.perf_counter()
        top10 = search(queries[qid], 10)
        latencies.append((time.perf_counter() - t0) * 1000)
        ndcgs.append(ndcg_at_k(top10, rel, 10))
        mrrs.append(mrr_at_k(top10, rel, 10))
        recalls.append(recall_at_k(search(queries[qid], 100), rel, 100))
    latencies.sort()
    return Row(
        retriever=name,
        median_ms=statistics.median(latencies),
        p95_ms=latencies[min(len(latencies) - 1, round(0.95 * (len(latencies) - 1)))],
        ndcg10=statistics.fmean(ndcgs),
        recall100=statistics.fmean(recalls),
        mrr10=statistics.fmean(mrrs),
    )


def bm25s_search(passages: list[Passage]) -> Callable[[str, int], list[str]] | None:
    try:
        import bm25s
    except ImportError:
        print("bm25s is not installed (pip install bm25s); its row is left out", file=sys.stderr)
        return None
    stem, _ = _english_stemmer()
    retriever = bm25s.BM25(k1=1.2, b=0.75)
    ids = [p.id for p in passages]
    texts = [f"{p.title}\n{p.text}" if p.title else p.text for p in passages]
    retriever.index(bm25s.tokenize(texts, stopwords="en", stemmer=stem, show_progress=False), show_progress=False)

    def search(query: str, k: int) -> list[str]:
        tokens = bm25s.tokenize([query], stopwords="en", stemmer=stem, return_ids=False, show_progress=False)
        known = [[t for t in tokens[0] if t in retriever.vocab_dict]]
        if not known[0]:
            return []
        docs, _scores = retriever.retrieve(known, k=min(k, len(ids)), show_progress=False, n_threads=1)
        return [ids[i] for i in docs[0]]

    return search


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--limit", type=int, default=0, help="evaluate only the first N judged queries (0 = all)")
    parser.add_argument(
        "--data", type=Path, default=DEFAULT_DATA, help="directory with corpus.jsonl, queries.jsonl, qrels.tsv"
    )
    parser.add_argument("--model", default="all-MiniLM-L6-v2", help="bundled encoder name")
    parser.add_argument("--path", default=None, help="a folder with model.onnx and tokenizer.json instead")
    parser.add_argument("--engine", default="edge", choices=["edge", "client"])
    parser.add_argument("--batch-size", type=int, default=32, help="texts per forward pass of the encoder")
    parser.add_argument("--cache-dir", type=Path, default=None, help="keep the embedding cache here between runs")
    args = parser.parse_args()

    missing = [f for f in ("corpus.jsonl", "queries.jsonl", "qrels.tsv") if not (args.data / f).is_file()]
    if missing:
        print(f"SciFact not found: {args.data} lacks {', '.join(missing)}; pass --data DIR. Skipping.")
        return 0
    from agentkit.knowledge.embeddings import CachedEmbedder, EmbedderConfig, EmbeddingCache, OnnxEmbedder
    from agentkit.knowledge.qdrant import QdrantSource

    passages, queries, qrels = load_scifact(args.data)
    if args.limit > 0:
        qrels = dict(list(qrels.items())[: args.limit])
    print(
        f"SciFact: {len(passages)} passages, {len(qrels)} judged queries; encoder {args.path or args.model}; "
        f"engine {args.engine}; Python {platform.python_version()}, {os.cpu_count()} CPUs"
    )

    with tempfile.TemporaryDirectory(prefix="agentkit-bench-") as tmp:
        config = EmbedderConfig(model=args.model, path=args.path, batch_size=args.batch_size)
        encoder = OnnxEmbedder.from_config(config)
        cache = EmbeddingCache(args.cache_dir or Path(tmp) / "embeddings")
        embedder = CachedEmbedder(encoder, cache)
        texts = [f"{p.title}\n{p.text}" if p.title else p.text for p in passages]

        t0 = time.perf_counter()
        encoder.warm_up()
        load_s = time.perf_counter() - t0
        cached_before = sum(
            v is not None for v in cache.get([cache.key(encoder.name, t) for t in texts], encoder.dimension)
        )
        t0 = time.perf_counter()
        embedder.embed_documents(texts)  # what add() would encode; fills the cache
        encode_s = time.perf_counter() - t0
        fresh = len(texts) - cached_before
        print(
            f"  encoder loaded in {load_s:.1f} s; encoded {fresh} passages in {encode_s:.0f} s"
            + (f" ({fresh / encode_s:.1f} passages/s)" if fresh else " (all cached)"),
            file=sys.stderr,
        )
        query_ms = []
        for q in list(queries.values())[:100]:
            t1 = time.perf_counter()
            encoder.embed_query(q)
            query_ms.append((time.perf_counter() - t1) * 1000)

        where = {"path": Path(tmp) / "store"} if args.engine == "edge" else {"location": ":memory:"}
        source = QdrantSource("bench", engine=args.engine, embedder=embedder, **where)
        t0 = time.perf_counter()
        source.add(passages)  # BM25 + cached dense vectors + upsert
        ingest_rate = len(passages) / (time.perf_counter() - t0)

        rows = []
        for mode in ("bm25", "dense", "hybrid"):
            source.mode = mode
            rows.append(
                evaluate(
                    f"qdrant-{args.engine} {mode}", lambda q, k: [p.id for p in source.search(q, k)], queries, qrels
                )
            )
            print(f"  done: {mode}", file=sys.stderr)
        source.close()
        peer = bm25s_search(passages)
        if peer:
            rows.append(evaluate("bm25s (peer, no store)", peer, queries, qrels))
        cache.close()

    header = ("retriever", "query median ms", "query p95 ms", "nDCG@10", "R@100", "MRR@10")
    table = [
        (r.retriever, f"{r.median_ms:.2f}", f"{r.p95_ms:.2f}")
        + tuple(f"{x:.4f}" for x in (r.ndcg10, r.recall100, r.mrr10))
        for r in rows
    ]
    widths = [max(len(h), *(len(row[i]) for row in table)) for i, h in enumerate(header)]
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in table:
        print(
            "| " + " | ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths))) + " |"
        )
    rate = f"{fresh / encode_s:,.1f} passages/s" if fresh else "all cached"
    print(
        f"encoder {encoder.name.split('|')[0]} ({encoder.dimension} dims): {rate} (batch {args.batch_size}); "
        f"query encoding median {statistics.median(query_ms):.1f} ms; "
        f"ingest with cached vectors {ingest_rate:,.0f} passages/s"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
