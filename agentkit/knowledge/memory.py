"""An in-memory BM25 knowledge source: no server, no files, for tests, notebooks and small corpora.

It is also the reference implementation of the WritableSource contract.
"""

from __future__ import annotations

import math
import threading
from collections import Counter
from collections.abc import Sequence
from dataclasses import replace
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from agentkit.errors import InputError
from agentkit.knowledge.base import Filters, matches
from agentkit.text import terms
from agentkit.types import Document, Passage


class MemorySourceConfig(BaseModel):
    """An in-memory BM25 index; its content lives as long as the process."""

    model_config = ConfigDict(extra="forbid")
    type: Literal["memory"] = "memory"
    description: str = "Passages held in memory."
    k1: float = 1.2
    b: float = 0.75


class MemorySource:
    """BM25 (k1=1.2, b=0.75) over passages held in a dict; title terms count towards the text."""

    config_model: ClassVar[type[BaseModel]] = MemorySourceConfig

    def __init__(self, name: str = "memory", description: str = "", *, k1: float = 1.2, b: float = 0.75):
        self.name = name
        self.description = description
        self.k1 = k1
        self.b = b
        self._passages: dict[str, Passage] = {}
        self._tf: dict[str, Counter[str]] = {}
        self._len: dict[str, int] = {}
        self._postings: dict[str, set[str]] = {}
        self._total_len = 0
        #: Metadata key -> passages holding it: the filterable fields, kept without a scan.
        self._keys: Counter[str] = Counter()
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, name: str, config: MemorySourceConfig, data_dir: Any = None) -> MemorySource:
        return cls(name, config.description, k1=config.k1, b=config.b)

    # --- writing ---------------------------------------------------------------------------

    def add(self, passages: Sequence[Passage | Document]) -> None:
        """Store passages (replacing by id). Whole `Document`s are cut into passages first
        (`agentkit.ingest.chunking.chunk_document`: 200-token chunks with ids `doc_id#i`)."""
        passages = _as_passages(passages)
        with self._lock:
            for p in passages:
                if p.id in self._passages:
                    self._remove(p.id)
                tf = Counter(terms(f"{p.title}\n{p.text}" if p.title else p.text))
                self._passages[p.id] = replace(p, source=self.name, score=0.0)
                self._keys.update(p.metadata.keys())
                self._tf[p.id] = tf
                n = sum(tf.values())
                self._len[p.id] = n
                self._total_len += n
                for term in tf:
                    self._postings.setdefault(term, set()).add(p.id)

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock:
            for pid in ids:
                if pid in self._passages:
                    self._remove(pid)

    def _remove(self, pid: str) -> None:
        self._keys.subtract(self._passages.pop(pid).metadata.keys())
        self._keys += Counter()  # drops keys no passage holds any more
        for term in self._tf.pop(pid):
            posting = self._postings[term]
            posting.discard(pid)
            if not posting:
                del self._postings[term]
        self._total_len -= self._len.pop(pid)

    # --- reading ---------------------------------------------------------------------------

    def get(self, ids: Sequence[str]) -> list[Passage]:
        with self._lock:
            return [replace(self._passages[i]) for i in ids if i in self._passages]

    def count(self) -> int:
        return len(self._passages)

    def ids_where(self, filters: Filters) -> list[str]:
        with self._lock:
            return [pid for pid, p in self._passages.items() if matches(p.metadata, filters)]

    def filterable_fields(self) -> list[str]:
        """The metadata keys of the stored passages: what `filters` can name."""
        with self._lock:
            return sorted(self._keys)

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Passage]:
        if filters:
            check_filter_keys(self, filters)
        qterms = set(terms(query))
        if not qterms or k <= 0:
            return []
        with self._lock:
            n_docs = len(self._passages)
            if not n_docs:
                return []
            avgdl = self._total_len / n_docs or 1.0
            scores: dict[str, float] = {}
            for term in qterms:
                posting = self._postings.get(term)
                if not posting:
                    continue
                idf = math.log(1 + (n_docs - len(posting) + 0.5) / (len(posting) + 0.5))
                for pid in posting:
                    tf = self._tf[pid][term]
                    norm = self.k1 * (1 - self.b + self.b * self._len[pid] / avgdl)
                    scores[pid] = scores.get(pid, 0.0) + idf * tf * (self.k1 + 1) / (tf + norm)
            ranked = sorted(scores.items(), key=lambda kv: (-kv[1], kv[0]))
            out: list[Passage] = []
            for pid, score in ranked:
                p = self._passages[pid]
                if filters and not matches(p.metadata, filters):
                    continue
                out.append(replace(p, score=score))
                if len(out) == k:
                    break
            return out


def _as_passages(items: Sequence[Passage | Document]) -> list[Passage]:
    if isinstance(items, (Passage, Document)):
        items = [items]  # one given alone
    out: list[Passage] = []
    for n, item in enumerate(items):
        if isinstance(item, Passage):
            out.append(item)
        elif isinstance(item, Document):
            from agentkit.ingest.chunking import chunk_document

            out.extend(chunk_document(item))
        else:
            raise TypeError(
                f"MemorySource.add() takes agentkit Passages or Documents; item {n} is a "
                f"{type(item).__module__}.{type(item).__name__}: build agentkit.Document(id=..., text=...) "
                f"(chunked here) or agentkit.Passage(id=..., text=...) (stored as it is)"
            )
    return out


def check_filter_keys(source: Any, filters: Filters) -> None:
    """InputError when `filters` name a metadata key that `source.filterable_fields()` does not
    list (where the source has that method and knows): a typo would otherwise match nothing, and
    the empty result would read as "no such passage"."""
    lister = getattr(source, "filterable_fields", None)
    fields = lister() if callable(lister) else None
    if not fields:  # unknown, or an empty source: nothing to check against
        return
    unknown = [key for key in filters if key not in fields]
    if unknown:
        raise InputError(
            f"source {getattr(source, 'name', '?')!r} has no metadata field {', '.join(map(repr, unknown))} to "
            f"filter on; filterable fields: {', '.join(fields)}"
        )
