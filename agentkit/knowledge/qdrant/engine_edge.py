"""The qdrant-edge engine: one `EdgeShard` (Qdrant's segment code, in-process) per collection, in
a folder of its own or in a temporary one; `agentkit.knowledge.qdrant.source` says why it is the default."""

from __future__ import annotations

import json
import shutil
import tempfile
import threading
import weakref
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentkit.knowledge.qdrant.engine import (
    DENSE_VECTOR,
    SCROLL_PAGE,
    SPARSE_VECTOR,
    TIE_MARGIN,
    Point,
    Terms,
    check_dense,
    pushable,
    settle_ties,
    vectors,
)

if TYPE_CHECKING:
    from qdrant_edge import SparseVector


class EdgeStore:
    """One qdrant-edge shard: in `directory`, or in a temporary one removed with the store."""

    def __init__(self, directory: Path | None, dense_size: Callable[[], int] | None = None) -> None:
        self.temporary = directory is None
        self.directory = directory
        self.dense_size = dense_size
        self.describe = "the qdrant-edge store"
        self.fix = "collection"
        self._shard: Any = None
        self._qe: Any = None
        self._lock = threading.Lock()

    def open(self, create: bool) -> bool:
        if self._shard is not None:
            return True
        with self._lock:
            if self._shard is not None:
                return True
            import qdrant_edge as qe

            self._qe = qe
            config_file = None if self.directory is None else self.directory / "edge_config.json"
            if config_file is not None and config_file.is_file():
                if self.dense_size is not None:
                    vectors = json.loads(config_file.read_text(encoding="utf-8")).get("vectors") or {}
                    sizes = {name: int(params.get("size", 0)) for name, params in vectors.items()}
                    check_dense(sizes, self.dense_size(), self.describe, self.fix)
                self._shard = qe.EdgeShard.load(str(self.directory))
            elif create:
                if self.directory is None:
                    self.directory = Path(tempfile.mkdtemp(prefix="agentkit-qdrant-"))
                    weakref.finalize(self, shutil.rmtree, self.directory, True)
                self.directory.mkdir(parents=True, exist_ok=True)
                dense = None
                if self.dense_size is not None:
                    dense = {DENSE_VECTOR: qe.EdgeVectorParams(size=self.dense_size(), distance=qe.Distance.Cosine)}
                config = qe.EdgeConfig(
                    vectors=dense,
                    sparse_vectors={SPARSE_VECTOR: qe.EdgeSparseVectorParams(modifier=qe.Modifier.Idf)},
                    # A store that dies with the process needs no write-ahead log.
                    wal_enabled=False if self.temporary else None,
                )
                self._shard = qe.EdgeShard.create(str(self.directory), config)
            else:
                return False
        return True

    def close(self) -> None:
        shard, self._shard = self._shard, None
        if shard is not None:
            if not self.temporary:
                shard.flush()
            shard.close()
        if self.temporary and self.directory is not None:
            shutil.rmtree(self.directory, ignore_errors=True)
            self.directory = None

    def build_filter(self, terms: Terms) -> tuple[Any, bool]:
        qe = self._qe
        must: list[Any] = []
        exact = True
        for path, values in terms:
            # qdrant-edge 0.9 turns MatchValue(True) into MatchValue(1), which never matches a
            # stored boolean, so booleans are filtered in Python.
            if path is None or not all(pushable(v) and not isinstance(v, bool) for v in values):
                exact = False
                continue
            conds = [self._condition(path, v) for v in values]
            must.append(conds[0] if len(conds) == 1 else qe.Filter(should=conds))
        return (qe.Filter(must=must) if must else None), exact

    def _condition(self, path: str, value: Any) -> Any:
        qe = self._qe
        if value is None:
            return qe.IsEmptyCondition(path)
        if isinstance(value, str):
            return qe.FieldCondition(key=path, match=qe.MatchValue(value))
        # A range matches ints and floats alike, as Python's 3 == 3.0 does.
        return qe.FieldCondition(key=path, range=qe.RangeFloat(gte=float(value), lte=float(value)))

    def upsert(self, points: list[Point]) -> None:
        qe = self._qe
        batch = [qe.Point(pid, vectors(sparse, dense), payload) for pid, sparse, dense, payload in points]
        self._shard.update(qe.UpdateOperation.upsert_points(batch))

    def delete(self, ids: list[str]) -> None:
        self._shard.update(self._qe.UpdateOperation.delete_points(ids))

    def count(self) -> int:
        return int(self._shard.count(self._qe.CountRequest(exact=True)))

    def scroll(self, native_filter: Any) -> list[dict[str, Any]]:
        qe = self._qe
        out: list[dict[str, Any]] = []
        offset = None
        while True:
            request = qe.ScrollRequest(
                offset=offset, limit=SCROLL_PAGE, filter=native_filter, with_payload=["id", "metadata"], with_vector=False
            )
            records, offset = self._shard.scroll(request)
            out.extend(r.payload for r in records)
            if offset is None:
                return out

    def retrieve(self, ids: list[str]) -> list[dict[str, Any]]:
        return [r.payload for r in self._shard.retrieve(ids, with_payload=True, with_vector=False)]

    def query(
        self,
        sparse: SparseVector | None,
        dense: list[float] | None,
        limit: int,
        native_filter: Any,
        *,
        prefetch: int,
        rrf_k: int,
        weights: tuple[float, float],
    ) -> list[tuple[float, dict[str, Any]]]:
        """By one vector, or (both given) by RRF over a prefetch of each."""
        qe = self._qe
        nearest = [
            qe.Query.Nearest(vec, using=name)
            for name, vec in ((SPARSE_VECTOR, sparse), (DENSE_VECTOR, dense))
            if vec is not None
        ]
        if not nearest:
            return []
        options: dict[str, Any] = {"query": nearest[0]}
        if len(nearest) == 2:
            options = {
                # The filter goes into each prefetch too, so that each fills its limit with matches.
                "prefetches": [qe.Prefetch(limit=prefetch, query=q, filter=native_filter) for q in nearest],
                "query": qe.Fusion.Rrf(k=rrf_k, weights=list(weights)),
            }
        fused = len(nearest) == 2
        request = qe.QueryRequest(
            limit=limit + TIE_MARGIN if fused else limit,
            filter=native_filter,
            with_payload=True,
            with_vector=False,
            **options,
        )
        hits = [(p.score, p.payload) for p in self._shard.query(request)]
        return settle_ties(hits, limit) if fused else hits
