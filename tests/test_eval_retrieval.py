"""`agentkit eval retrieval`: BEIR loading, document-level ranking, and the SciFact target."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentkit.cli import cli
from agentkit.errors import IngestError
from agentkit.eval.retrieval import load_qrels, rank_documents
from agentkit.types import Passage

SCIFACT = Path(__file__).resolve().parents[2] / "shared" / "data" / "scifact"


def write_beir(root: Path) -> tuple[Path, Path, Path]:
    corpus = root / "corpus.jsonl"
    corpus.write_text("\n".join(json.dumps(d) for d in [
        {"_id": "d1", "title": "Tides", "text": "Tides are caused by the Moon's gravity."},
        {"_id": "d2", "title": "Lava", "text": "Volcanoes erupt molten lava and ash."},
        {"_id": "d3", "title": "Bees", "text": "Honey bees dance to show where flowers are."},
    ]) + "\n")
    queries = root / "queries.jsonl"
    queries.write_text("\n".join(json.dumps(q) for q in [
        {"_id": "q1", "text": "what causes tides"},
        {"_id": "q2", "text": "how do bees show flowers"},
        {"_id": "q3", "text": "unjudged query"},
    ]) + "\n")
    qrels = root / "qrels.tsv"
    qrels.write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td3\t1\n")
    return corpus, queries, qrels


def test_chunks_collapse_to_documents() -> None:
    ps = [Passage("a#1", "x"), Passage("b#0", "x"), Passage("a#0", "x"), Passage("c#0", "x")]
    assert rank_documents(ps, 10) == ["a", "b", "c"]
    assert rank_documents(ps, 2) == ["a", "b"]


def test_qrels_header_is_checked(tmp_path: Path) -> None:
    bad = tmp_path / "q.tsv"
    bad.write_text("q1\td1\t1\n")
    with pytest.raises(IngestError, match="header"):
        load_qrels(bad)


def test_cli_json_on_a_tiny_corpus(tmp_path: Path) -> None:
    corpus, queries, qrels = write_beir(tmp_path)
    args = ["--data-dir", str(tmp_path / "data"), "eval", "retrieval", "--corpus", str(corpus),
            "--queries", str(queries), "--qrels", str(qrels), "--json", "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["queries"] == 2
    assert data["ndcg@10"] == 1.0 and data["recall@100"] == 1.0 and data["mrr@10"] == 1.0


@pytest.mark.skipif(not SCIFACT.is_dir(), reason=f"SciFact not found at {SCIFACT} (../shared/data/scifact)")
def test_scifact_bm25_meets_the_published_range(tmp_path: Path) -> None:
    args = ["--data-dir", str(tmp_path), "eval", "retrieval", "--corpus", str(SCIFACT / "corpus.jsonl"),
            "--queries", str(SCIFACT / "queries.jsonl"), "--qrels", str(SCIFACT / "qrels.tsv"), "--json", "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["queries"] == 300
    assert data["ndcg@10"] >= 0.67  # published BM25: 0.665 to 0.690


@pytest.mark.real_model  # loads the bundled ONNX sentence encoder
def test_cli_hybrid_mode_on_a_tiny_corpus(tmp_path: Path) -> None:
    corpus, queries, qrels = write_beir(tmp_path)
    args = ["--data-dir", str(tmp_path / "data"), "eval", "retrieval", "--mode", "hybrid", "--corpus", str(corpus),
            "--queries", str(queries), "--qrels", str(qrels), "--json", "--no-progress"]
    result = CliRunner().invoke(cli, args)
    assert result.exit_code == 0, result.output
    data = json.loads(result.output)
    assert data["queries"] == 2 and data["ndcg@10"] == 1.0
    assert (tmp_path / "data" / "embeddings").exists()  # vectors cached for the next run
