"""The semantic policy: how close the question is to each target's description and examples.

Targets are the model itself (packaged example requests it answers alone), dictionaries and
document sources (their description plus the example questions a config gives them). It abstains
when nothing is close enough, and only sends a question to the model alone on a clear margin,
because a needless search costs milliseconds while a missed one costs a made-up answer.
"""

from __future__ import annotations

import hashlib
import threading
from collections.abc import Mapping, Sequence
from functools import lru_cache
from pathlib import Path
from typing import Any

import numpy as np

from agentkit.routing.base import Query, Vote
from agentkit.text import terms
from agentkit.types import PARAMETRIC

EXAMPLES_FILE = Path(__file__).with_name("examples.yaml")


@lru_cache(maxsize=2)
def packaged_examples(path: Path = EXAMPLES_FILE) -> dict[str, list[str]]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {k: [str(x) for x in v or []] for k, v in data.items()}


class LexicalEmbedder:
    """Hashed bag of stemmed words: no model, for tests and for machines without onnxruntime."""

    name = "lexical"
    dimension = 2048

    def _vec(self, text: str) -> np.ndarray:
        v = np.zeros(self.dimension, dtype=np.float32)
        for t in terms(text):
            v[int.from_bytes(hashlib.blake2b(t.encode(), digest_size=4).digest(), "little") % self.dimension] += 1.0
        n = float(np.linalg.norm(v))
        return v / n if n else v

    def embed_documents(self, texts: Sequence[str]) -> np.ndarray:
        return np.stack([self._vec(t) for t in texts]) if texts else np.zeros((0, self.dimension), np.float32)

    def embed_query(self, text: str) -> np.ndarray:
        return self._vec(text)


def make_embedder(kind: str) -> Any:
    if kind == "lexical":
        return LexicalEmbedder()
    from agentkit.knowledge.embeddings import OnnxEmbedder

    return OnnxEmbedder(kind if kind != "minilm" else "all-MiniLM-L6-v2")


class SemanticPolicy:
    name = "semantic"
    calls_model = False

    def __init__(
        self,
        embedder: Any = "minilm",
        *,
        examples: Mapping[str, Sequence[str]] | None = None,
        threshold: float = 0.3,
        parametric_margin: float = 0.12,
        use_packaged: bool = True,
        content_threshold: float | None = 0.6,
    ) -> None:
        self.embedder = make_embedder(embedder) if isinstance(embedder, str) else embedder
        self.examples = {k: list(v) for k, v in (examples or {}).items()}
        self.threshold = threshold
        self.parametric_margin = parametric_margin
        self.use_packaged = use_packaged
        #: Before sending a question to the model alone, compare it with each document source's
        #: best passage for it: at this similarity or more the source holds the answer (a user's
        #: notes on Everest beat the model's memory of it). None turns the check off.
        self.content_threshold = content_threshold
        self._passages: dict[str, np.ndarray] = {}
        self._index: dict[tuple[str, ...], tuple[list[str], np.ndarray, np.ndarray]] = {}
        self._lock = threading.Lock()

    def exemplars(self, query: Query) -> dict[str, list[str]]:
        """Target -> the texts that stand for it."""
        packaged = packaged_examples() if self.use_packaged else {}
        out: dict[str, list[str]] = {PARAMETRIC: [*packaged.get("parametric", []), *self.examples.get(PARAMETRIC, [])]}
        for name, source in query.sources.items():
            texts = [t for t in [getattr(source, "description", "")] if t and t.strip()]
            if name in query.dictionaries:
                texts += packaged.get("dictionary", [])
            out[name] = texts + self.examples.get(name, [])
        return {k: v for k, v in out.items() if v}

    def _matrix(self, query: Query) -> tuple[list[str], np.ndarray, np.ndarray]:
        key = tuple(sorted(query.sources))
        with self._lock:
            if key not in self._index:
                owners, texts = [], []
                for target, items in self.exemplars(query).items():
                    owners += [target] * len(items)
                    texts += items
                vectors = np.asarray(self.embedder.embed_documents(texts), dtype=np.float32)
                self._index[key] = (sorted(set(owners)), np.asarray(owners), vectors)
            return self._index[key]

    def assess(self, query: Query) -> Vote:
        targets, owners, vectors = self._matrix(query)
        q = np.asarray(self.embedder.embed_query(query.question), dtype=np.float32)
        sims = vectors @ q
        scores = {t: float(sims[owners == t].max()) for t in targets}
        signals = {f"semantic:{t}": round(s, 4) for t, s in scores.items()}
        docs = [scores[n] for n in query.documents if n in scores]
        dicts = [scores[n] for n in query.dictionaries if n in scores]
        para = scores.get(PARAMETRIC, 0.0)
        others = [s for t, s in scores.items() if t != PARAMETRIC]
        signals["semantic:documents"] = round(max(docs, default=0.0), 4)
        signals["semantic:dictionary"] = round(max(dicts, default=0.0), 4)
        signals["semantic:margin"] = round(para - max(others, default=0.0), 4)
        if not scores:
            return Vote(signals=signals)
        best = max(scores, key=scores.get)
        if scores[best] < self.threshold:
            return Vote(signals=signals)
        if best == PARAMETRIC:
            if self.content_threshold is not None and signals["semantic:margin"] >= self.parametric_margin:
                content = {n: self._content_similarity(query, n, q) for n in query.documents}
                for n, sim in content.items():
                    signals[f"semantic:{n}:content"] = round(sim, 4) if sim is not None else 0.0
                holders = [n for n, sim in content.items() if sim is not None and sim >= self.content_threshold]
                if holders:
                    why = ", ".join(f"{n} ({content[n]:.2f})" for n in holders)
                    return Vote(holders, 0.7, f"a passage in {why} is close to the question", signals, decisive=True)
            if signals["semantic:margin"] >= self.parametric_margin or not others:
                return Vote([PARAMETRIC], min(0.95, 0.6 + signals["semantic:margin"]),
                            f"close to requests the model answers alone ({para:.2f}, next {para - signals['semantic:margin']:.2f})",
                            signals, decisive=True)
            return Vote(signals=signals)
        floor = max(self.threshold, scores[best] - 0.05)
        chosen = [t for t in scores if t != PARAMETRIC and scores[t] >= floor]
        why = ", ".join(f"{t} ({scores[t]:.2f})" for t in chosen)
        return Vote(chosen, min(0.95, 0.5 + scores[best] - para), f"close to the description and examples of {why}",
                    signals, decisive=True)

    def _content_similarity(self, query: Query, name: str, q: np.ndarray) -> float | None:
        try:
            hits = query.sources[name].search(query.question, k=1)
        except Exception:  # noqa: BLE001 - the probe policy and the agent report failing sources
            return None
        if not hits:
            return None
        top = hits[0]
        key = f"{name}\x00{top.id}"
        vec = self._passages.get(key)
        if vec is None:
            text = f"{top.title}. {top.text}"[:400]
            vec = np.asarray(self.embedder.embed_documents([text])[0], dtype=np.float32)
            if len(self._passages) > 4096:
                self._passages.clear()
            self._passages[key] = vec
        return float(vec @ q)
