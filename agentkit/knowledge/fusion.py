"""Fusion of rankings and optional reranking: weighted reciprocal rank fusion (RRF) across sources
or across one source's retrievers, and a cross-encoder reranker for when an offline model is given.

Scores of different retrievers (BM25, cosine, a server's) do not compare; ranks do. RRF scores a
passage `sum(w_i / (k + rank_i))` over the rankings it appears in (rank 1 is the best).

No PyPI package found ships cross-encoder weights (flashrank, rerankers and the like fetch them
at run time, which agentkit never does), so reranking is off unless `rerank.path` names a folder
with an ONNX cross-encoder (`model.onnx`, `tokenizer.json`), e.g. an export of
cross-encoder/ms-marco-MiniLM-L-6-v2.
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from agentkit.errors import ConfigError, MissingDependency, ModelLoadError, ModelNotFound
from agentkit.types import Passage

#: The usual RRF constant (Cormack et al., 2009); larger values flatten the rank differences.
RRF_K = 60


def rrf(
    rankings: Sequence[Sequence[Passage]],
    weights: Sequence[float] | None = None,
    k: float = RRF_K,
    *,
    names: Sequence[str] | None = None,
    limit: int | None = None,
) -> list[Passage]:
    """Fuse best-first `rankings` into one, best first, by weighted reciprocal rank.

    A passage found by several rankings is returned once: the copy from the ranking where it
    counted most (highest `w / (k + rank)`; the earlier ranking on a tie), with `score` set to the
    fused score and `metadata["ranks"]` mapping each ranking's name (`names`, else its index as a
    string) to the passage's rank there. Ties keep the order of first appearance. A ranking with
    weight 0 is ignored; a passage repeated within one ranking counts at its best rank only.
    """
    if weights is not None and len(weights) != len(rankings):
        raise ValueError(f"rrf: {len(weights)} weights for {len(rankings)} rankings; give one weight per ranking")
    if names is not None and len(names) != len(rankings):
        raise ValueError(f"rrf: {len(names)} names for {len(rankings)} rankings; give one name per ranking")
    if weights is not None and any(w < 0 for w in weights):
        raise ValueError(f"rrf: weights must be >= 0, got {list(weights)}")
    if k < 0:
        raise ValueError(f"rrf: k must be >= 0, got {k}")
    labels = [str(i) for i in range(len(rankings))] if names is None else [str(n) for n in names]

    fused: dict[str, float] = {}
    best: dict[str, tuple[float, Passage]] = {}  # id -> (its best single contribution, that copy)
    ranks: dict[str, dict[str, int]] = {}
    for i, ranking in enumerate(rankings):
        weight = 1.0 if weights is None else float(weights[i])
        if weight == 0:
            continue
        for position, passage in enumerate(ranking):
            seen = ranks.setdefault(passage.id, {})
            if labels[i] in seen:
                continue
            rank = position + 1
            seen[labels[i]] = rank
            contribution = weight / (k + rank)
            fused[passage.id] = fused.get(passage.id, 0.0) + contribution
            if passage.id not in best or contribution > best[passage.id][0]:
                best[passage.id] = (contribution, passage)
    # dicts keep insertion order, so a stable sort leaves ties in order of first appearance.
    ordered = sorted(fused, key=lambda pid: fused[pid], reverse=True)
    if limit is not None:
        ordered = ordered[: max(limit, 0)]
    return [
        replace(best[pid][1], score=fused[pid], metadata={**best[pid][1].metadata, "ranks": ranks[pid]})
        for pid in ordered
    ]


# --- reranking ----------------------------------------------------------------------------


class RerankerConfig(BaseModel):
    """`rerank:` of a source: an offline cross-encoder that reorders the top of each result."""

    model_config = ConfigDict(extra="forbid")
    #: A folder with model.onnx (or onnx/model.onnx) and tokenizer.json.
    path: str
    top_k: int = Field(default=20, ge=1, description="How many of the best first-stage passages are rescored.")
    batch_size: int = Field(default=16, ge=1)
    max_length: int = Field(default=512, ge=16, description="Tokens per (query, passage) pair.")
    threads: int | None = Field(default=None, ge=1)


class CrossEncoderReranker:
    """Rescores (query, passage) pairs with a cross-encoder and reorders the first `top_k`.

    Passages past `top_k` keep their order after the reranked ones. The model (an ONNX export of a
    BERT-like cross-encoder with one relevance logit) loads on first use; nothing is downloaded.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        top_k: int = 20,
        batch_size: int = 16,
        max_length: int = 512,
        threads: int | None = None,
    ) -> None:
        if top_k < 1 or batch_size < 1:
            raise ConfigError(f"reranker top_k and batch_size must be >= 1, got {top_k} and {batch_size}")
        self.path = Path(path).expanduser()
        self.top_k = top_k
        self.batch_size = batch_size
        self.max_length = max_length
        self.threads = threads
        self._model: tuple[Any, Any, set[str]] | None = None
        self._lock = threading.Lock()

    @classmethod
    def from_config(cls, config: RerankerConfig) -> CrossEncoderReranker:
        return cls(
            config.path,
            top_k=config.top_k,
            batch_size=config.batch_size,
            max_length=config.max_length,
            threads=config.threads,
        )

    def __repr__(self) -> str:
        return f"CrossEncoderReranker({str(self.path)!r}, top_k={self.top_k})"

    def rerank(self, query: str, passages: Sequence[Passage], k: int | None = None) -> list[Passage]:
        """`passages` with the first `top_k` reordered by the model's score (kept in `score`, the
        first-stage score moved to `metadata["first_stage_score"]`); at most `k` when given."""
        head, tail = list(passages[: self.top_k]), list(passages[self.top_k :])
        if head:
            scores = self.score(query, [f"{p.title}\n{p.text}" if p.title else p.text for p in head])
            order = sorted(range(len(head)), key=lambda i: scores[i], reverse=True)  # stable on ties
            head = [
                replace(
                    head[i], score=float(scores[i]), metadata={**head[i].metadata, "first_stage_score": head[i].score}
                )
                for i in order
            ]
        out = head + tail
        return out if k is None else out[:k]

    def score(self, query: str, texts: Sequence[str]) -> list[float]:
        """The model's relevance logit for each (query, text) pair."""
        import numpy as np

        tokenizer, session, inputs = self._load()
        scores: list[float] = []
        for start in range(0, len(texts), self.batch_size):
            batch = [(query, t) for t in texts[start : start + self.batch_size]]
            encodings = tokenizer.encode_batch(batch)
            feeds = {
                "input_ids": np.array([e.ids for e in encodings], dtype=np.int64),
                "attention_mask": np.array([e.attention_mask for e in encodings], dtype=np.int64),
            }
            if "token_type_ids" in inputs:
                feeds["token_type_ids"] = np.array([e.type_ids for e in encodings], dtype=np.int64)
            (logits,) = session.run(None, feeds)[:1]
            logits = np.asarray(logits, dtype=np.float32).reshape(len(batch), -1)
            # One logit: relevance; two (a classifier's [not relevant, relevant]): the second.
            scores.extend(float(x) for x in logits[:, -1])
        return scores

    def _load(self) -> tuple[Any, Any, set[str]]:
        if self._model is None:
            with self._lock:
                if self._model is None:
                    self._model = self._open()
        return self._model

    def _open(self) -> tuple[Any, Any, set[str]]:
        from agentkit.knowledge.embeddings import _forbid_in_tests

        model_file = next(
            (p for p in (self.path / "model.onnx", self.path / "onnx" / "model.onnx") if p.is_file()), None
        )
        tokenizer_file = self.path / "tokenizer.json"
        if model_file is None or not tokenizer_file.is_file():
            raise ModelNotFound(
                f"{self.path} must be a folder with model.onnx (or onnx/model.onnx) and tokenizer.json of a "
                f"cross-encoder; fix rerank.path in your config, or remove rerank: to turn reranking off"
            )
        _forbid_in_tests(str(model_file))
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise MissingDependency(exc.name or "onnxruntime", purpose="cross-encoder reranking") from None
        try:
            tokenizer = Tokenizer.from_file(str(tokenizer_file))
            options = ort.SessionOptions()
            options.log_severity_level = 3
            if self.threads:
                options.intra_op_num_threads = self.threads
            session = ort.InferenceSession(str(model_file), sess_options=options, providers=["CPUExecutionProvider"])
        except Exception as exc:
            raise ModelLoadError(f"cannot load the cross-encoder {model_file}: {type(exc).__name__}: {exc}") from exc
        tokenizer.enable_truncation(max_length=self.max_length, strategy="only_second")
        tokenizer.enable_padding()
        return tokenizer, session, {i.name for i in session.get_inputs()}


def build_reranker(config: RerankerConfig | None) -> CrossEncoderReranker | None:
    """The reranker a `rerank:` config describes, or None (off) without one."""
    return None if config is None else CrossEncoderReranker.from_config(config)
