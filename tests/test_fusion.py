"""Reciprocal rank fusion on hand-made rankings, and the reranker's reordering (with a fake scorer)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import pytest

from agentkit.errors import ModelNotFound
from agentkit.knowledge.fusion import CrossEncoderReranker, RerankerConfig, build_reranker, rrf
from agentkit.types import Passage


def P(pid: str, score: float = 0.0, text: str = "", **metadata: object) -> Passage:
    return Passage(pid, text or pid, score=score, metadata=dict(metadata))


def ids(passages: Sequence[Passage]) -> list[str]:
    return [p.id for p in passages]


BM25 = [P("a", 9.0), P("b", 7.0), P("c", 5.0)]
DENSE = [P("c", 0.9), P("a", 0.8), P("d", 0.7)]


def test_equal_weights_sum_reciprocal_ranks() -> None:
    fused = rrf([BM25, DENSE], k=60)
    # a: 1/61 + 1/62, c: 1/63 + 1/61, b: 1/62, d: 1/63
    assert ids(fused) == ["a", "c", "b", "d"]
    assert fused[0].score == pytest.approx(1 / 61 + 1 / 62)
    assert fused[3].score == pytest.approx(1 / 63)


def test_weights_shift_the_order() -> None:
    fused = rrf([BM25, DENSE], weights=[1.0, 3.0], k=60)
    # c: 1/63 + 3/61 > a: 1/61 + 3/62 > d: 3/63 > b: 1/62
    assert ids(fused) == ["c", "a", "d", "b"]
    assert ids(rrf([BM25, DENSE], weights=[1.0, 0.0])) == ["a", "b", "c"]  # weight 0 = ignored


def test_k_flattens_or_sharpens_rank_differences() -> None:
    one = [P("top"), P("x1"), P("x2"), P("x3")]
    other = [P("y0"), P("x3")]
    # k=0: top 1/1 beats x3 (1/4 + 1/2); a large k lets the passage found twice win.
    assert ids(rrf([one, other], k=0))[0] == "top"
    assert ids(rrf([one, other], k=1000))[0] == "x3"


def test_ties_keep_the_order_of_first_appearance() -> None:
    assert ids(rrf([[P("x")], [P("y")]])) == ["x", "y"]
    assert ids(rrf([[P("y")], [P("x")]])) == ["y", "x"]


def test_duplicate_keeps_the_copy_that_counted_most_and_records_ranks() -> None:
    from_bm25 = P("p", 3.0, "copy from bm25")
    from_dense = P("p", 0.5, "copy from dense")
    fused = rrf([[P("q"), P("r"), from_bm25], [from_dense]], names=["bm25", "dense"])
    top = fused[0]
    assert top.id == "p"
    assert top.text == "copy from dense"  # rank 1 there, rank 3 in bm25
    assert top.metadata["ranks"] == {"bm25": 3, "dense": 1}
    assert fused[1].metadata["ranks"] == {"bm25": 1}
    assert from_dense.metadata == {}  # inputs are not modified


def test_within_one_ranking_a_repeat_counts_once() -> None:
    fused = rrf([[P("a"), P("b"), P("a")]])
    assert ids(fused) == ["a", "b"]
    assert fused[0].score == pytest.approx(1 / 61)
    assert fused[0].metadata["ranks"] == {"0": 1}


def test_limit_and_empty_input() -> None:
    assert ids(rrf([BM25, DENSE], limit=2)) == ["a", "c"]
    assert rrf([]) == []
    assert rrf([[], []]) == []


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"weights": [1.0]}, "1 weights for 2 rankings"),
        ({"weights": [1.0, -1.0]}, ">= 0"),
        ({"names": ["bm25"]}, "1 names"),
        ({"k": -1}, "k must be"),
    ],
)
def test_bad_arguments_are_named(kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        rrf([BM25, DENSE], **kwargs)


# --- reranking --------------------------------------------------------------------------------


class WordOverlapReranker(CrossEncoderReranker):
    """The reranker's logic with a scorer that needs no model: shared words with the query."""

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        words = set(query.lower().split())
        return [float(len(words & set(t.lower().split()))) for t in texts]


def test_reranker_reorders_only_the_top_k() -> None:
    first_stage = [
        P("a", 3.0, "red"),
        P("b", 2.0, "red green blue"),
        P("c", 1.0, "red green"),
        P("d", 0.5, "red green blue"),
    ]
    out = WordOverlapReranker("/unused", top_k=3).rerank("red green blue", first_stage)
    assert ids(out) == ["b", "c", "a", "d"]  # d is past top_k: it keeps its place after them
    assert out[0].score == 3.0
    assert out[0].metadata["first_stage_score"] == 2.0
    assert ids(WordOverlapReranker("/unused", top_k=3).rerank("red green blue", first_stage, k=2)) == ["b", "c"]


def test_reranker_is_off_without_config_and_reports_a_bad_folder(tmp_path: Path) -> None:
    assert build_reranker(None) is None
    reranker = build_reranker(RerankerConfig(path=str(tmp_path)))
    assert isinstance(reranker, CrossEncoderReranker)
    with pytest.raises(ModelNotFound, match="remove rerank:"):
        reranker.rerank("query", [P("a")])
    assert reranker.rerank("query", []) == []  # nothing to score: the model is not needed


@pytest.mark.real_model
def test_reranker_runs_an_onnx_model_from_a_folder(tmp_path: Path) -> None:
    # No cross-encoder ships offline; the bundled bi-encoder stands in to exercise loading, pair
    # tokenisation and batching (its "scores", read off a padded token, mean nothing; they must
    # only be finite and the same on a second call).
    import math
    import os

    from agentkit.knowledge import embeddings

    spec = embeddings.BUNDLED["all-MiniLM-L6-v2"]
    model = embeddings._package_file(*spec.model)
    tokenizer = next(f for f in (embeddings._package_file(*t) for t in spec.tokenizers) if f)
    assert model is not None
    os.symlink(model, tmp_path / "model.onnx")
    os.symlink(tokenizer, tmp_path / "tokenizer.json")
    reranker = CrossEncoderReranker(tmp_path, batch_size=2, max_length=32)
    texts = ["short", "a much longer passage " * 20, "third"]
    scores = reranker.score("a question", texts)
    assert len(scores) == 3 and all(math.isfinite(s) for s in scores)
    assert reranker.score("a question", texts) == pytest.approx(scores, abs=1e-6)
    # Its scores mean nothing, but the order must be theirs: highest first.
    reranked = reranker.rerank("a question", [P("a", text=texts[0]), P("b", text=texts[1]), P("c", text=texts[2])])
    assert ids(reranked) == [pid for _, pid in sorted(zip(scores, "abc"), key=lambda t: -t[0])]
    assert [p.score for p in reranked] == pytest.approx(sorted(scores, reverse=True), abs=1e-6)


def overlap_cross_encoder(folder: Path) -> Path:
    """A BERT-shaped ONNX cross-encoder whose logit is known: how many content tokens of the
    passage (token type 1) also occur in the query (type 0). No cross-encoder ships offline; this
    one lets a test say which order is right, through the real tokenizer, pairs, padding and batches."""
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    from agentkit.knowledge import embeddings

    spec = embeddings.BUNDLED["all-MiniLM-L6-v2"]
    tokenizer = next(f for f in (embeddings._package_file(*t) for t in spec.tokenizers) if f)
    io = [helper.make_tensor_value_info(n, TensorProto.INT64, ["batch", "length"])
          for n in ("input_ids", "attention_mask", "token_type_ids")]
    const = [helper.make_tensor(n, TensorProto.INT64, [len(v)], v)
             for n, v in (("last_special", [102]), ("zero", [0]), ("one", [1]), ("ax1", [1]), ("ax2", [2]))]
    node = helper.make_node
    nodes = [
        node("Greater", ["input_ids", "last_special"], ["content"]),  # not [PAD] [CLS] [SEP] [UNK]
        node("Cast", ["attention_mask"], ["attended"], to=TensorProto.BOOL),
        node("And", ["content", "attended"], ["real"]),
        node("Equal", ["token_type_ids", "zero"], ["type0"]),
        node("Equal", ["token_type_ids", "one"], ["type1"]),
        node("And", ["real", "type0"], ["in_query"]),
        node("And", ["real", "type1"], ["in_passage"]),
        node("Unsqueeze", ["input_ids", "ax2"], ["ids_i"]),
        node("Unsqueeze", ["input_ids", "ax1"], ["ids_j"]),
        node("Equal", ["ids_i", "ids_j"], ["same"]),  # [batch, i, j]
        node("Unsqueeze", ["in_passage", "ax2"], ["passage_i"]),
        node("Unsqueeze", ["in_query", "ax1"], ["query_j"]),
        node("And", ["passage_i", "query_j"], ["pair"]),
        node("And", ["same", "pair"], ["hit"]),
        node("Cast", ["hit"], ["hit_f"], to=TensorProto.FLOAT),
        node("ReduceMax", ["hit_f"], ["in_both"], axes=[2], keepdims=0),
        node("ReduceSum", ["in_both", "ax1"], ["logits"], keepdims=1),  # [batch, 1]
    ]
    out = helper.make_tensor_value_info("logits", TensorProto.FLOAT, ["batch", 1])
    graph = helper.make_graph(nodes, "overlap", io, [out], initializer=const)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 13)], ir_version=8)
    onnx.checker.check_model(model)
    onnx.save(model, str(folder / "model.onnx"))
    (folder / "tokenizer.json").symlink_to(tokenizer)
    return folder


def test_reranker_puts_the_passage_sharing_most_query_words_first(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from agentkit.knowledge.embeddings import FORBID_ENV

    monkeypatch.delenv(FORBID_ENV, raising=False)  # a 2 KB arithmetic graph, not a model
    reranker = CrossEncoderReranker(overlap_cross_encoder(tmp_path), batch_size=2, max_length=64)
    first_stage = [
        P("coffee", 3.0, "Coffee beans were first roasted in Ethiopia."),
        P("honey", 2.0, "Bees make honey from nectar."),
        P("dance", 1.0, "Honey bees tell other bees where flowers are with a waggle dance."),
    ]
    out = reranker.rerank("How do bees tell each other where the flowers are?", first_stage)
    # dance's tokens in the question: bees (twice), tell, other, where, flowers, are; honey's: bees. The
    # third passage sits alone in the second batch, padded differently from the first two.
    assert ids(out) == ["dance", "honey", "coffee"]
    assert [p.score for p in out] == [7.0, 1.0, 0.0]
    assert [p.metadata["first_stage_score"] for p in out] == [1.0, 2.0, 3.0]
