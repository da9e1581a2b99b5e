"""The qdrant-client engine: a collection on a Qdrant server, or in qdrant-client's local mode
(pure Python, kept for stores it already holds and when asked for with `engine: client`)."""

from __future__ import annotations

import math
import threading
from collections.abc import Callable
from contextlib import nullcontext
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentkit.errors import KnowledgeSourceError
from agentkit.knowledge.qdrant.engine import (
    DENSE_VECTOR,
    MEMORY,
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


class ClientStore:
    """A collection reached through qdrant-client: on a server, or in its local (Python) mode."""

    def __init__(
        self,
        collection: str,
        *,
        url: str | None,
        api_key: str | None,
        path: Path | None,
        timeout: float,
        dense_size: Callable[[], int] | None = None,
    ) -> None:
        self.collection = collection
        self.dense_size = dense_size
        self.describe = f"collection '{collection}'"
        self.fix = "collection"
        self.url = url
        self.api_key = api_key
        self.path = path
        self.timeout = timeout
        self._client: Any = None
        self._models: Any = None
        self._exists = False
        self._open_lock = threading.Lock()
        # Local mode is plain Python over shared arrays, with no locking of its own.
        self._op_lock: Any = nullcontext() if url else threading.RLock()

    def open(self, create: bool) -> bool:
        if self._exists:
            return True
        with self._open_lock:
            if self._client is None:
                from qdrant_client import QdrantClient, models

                self._models = models
                if self.url:
                    self._client = QdrantClient(
                        url=self.url,
                        api_key=self.api_key,
                        timeout=math.ceil(self.timeout),  # qdrant-client takes whole seconds
                        check_compatibility=False,  # one request fewer; reachability is checked next
                    )
                elif self.path is not None:
                    self.path.mkdir(parents=True, exist_ok=True)
                    self._client = QdrantClient(path=str(self.path))
                else:
                    self._client = QdrantClient(location=MEMORY)
            if not self._exists:
                self._exists = self._client.collection_exists(self.collection)
                if self._exists and self.dense_size is not None:
                    self.check_dense()
            if not self._exists and create:
                self._create()
                self._exists = True
        return self._exists

    def check_dense(self) -> None:
        vectors = self._client.get_collection(self.collection).config.params.vectors
        sizes = {name: int(params.size) for name, params in vectors.items()} if isinstance(vectors, dict) else {}
        assert self.dense_size is not None
        try:
            check_dense(sizes, self.dense_size(), self.describe, self.fix)
        except KnowledgeSourceError:
            self._exists = False
            raise

    def _create(self) -> None:
        models = self._models
        dense = {}
        if self.dense_size is not None:
            dense = {DENSE_VECTOR: models.VectorParams(size=self.dense_size(), distance=models.Distance.COSINE)}
        try:
            self._client.create_collection(
                self.collection,
                vectors_config=dense,
                sparse_vectors_config={SPARSE_VECTOR: models.SparseVectorParams(modifier=models.Modifier.IDF)},
            )
        except Exception:
            # Another process may have created it between our check and our create.
            if not self._client.collection_exists(self.collection):
                raise

    def close(self) -> None:
        client, self._client = self._client, None
        self._exists = False
        if client is not None:
            client.close()

    def build_filter(self, terms: Terms) -> tuple[Any, bool]:
        models = self._models
        must: list[Any] = []
        exact = True
        for path, values in terms:
            if path is None or not all(pushable(v) for v in values):
                exact = False
                continue
            if len(values) > 1 and all(isinstance(v, str) for v in values):
                must.append(models.FieldCondition(key=path, match=models.MatchAny(any=values)))
                continue
            conds = [self._condition(path, v) for v in values]
            must.append(conds[0] if len(conds) == 1 else models.Filter(should=conds))
        return (models.Filter(must=must) if must else None), exact

    def _condition(self, path: str, value: Any) -> Any:
        models = self._models
        if value is None:
            return models.IsEmptyCondition(is_empty=models.PayloadField(key=path))
        if isinstance(value, (str, bool)):
            return models.FieldCondition(key=path, match=models.MatchValue(value=value))
        return models.FieldCondition(key=path, range=models.Range(gte=value, lte=value))

    def upsert(self, points: list[Point]) -> None:
        models = self._models
        structs = [
            models.PointStruct(
                id=pid,
                vector=vectors(models.SparseVector(indices=sparse.indices, values=sparse.values), dense),
                payload=payload,
            )
            for pid, sparse, dense, payload in points
        ]
        with self._op_lock:
            self._client.upsert(self.collection, points=structs, wait=True)

    def delete(self, ids: list[str]) -> None:
        with self._op_lock:
            self._client.delete(self.collection, points_selector=self._models.PointIdsList(points=ids), wait=True)

    def count(self) -> int:
        with self._op_lock:
            return int(self._client.count(self.collection, exact=True).count)

    def scroll(self, native_filter: Any) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        offset = None
        while True:
            with self._op_lock:
                records, offset = self._client.scroll(
                    self.collection, scroll_filter=native_filter, limit=SCROLL_PAGE, offset=offset,
                    with_payload=["id", "metadata"], with_vectors=False,
                )
            out.extend(r.payload for r in records)
            if offset is None:
                return out

    def retrieve(self, ids: list[str]) -> list[dict[str, Any]]:
        with self._op_lock:
            records = self._client.retrieve(self.collection, ids=ids, with_payload=True, with_vectors=False)
        return [r.payload for r in records]

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
        """By one vector, or (both given) by RRF over a prefetch of each (Qdrant >= 1.16 on a server)."""
        models = self._models
        nearest: list[tuple[Any, str]] = []
        if sparse is not None:
            nearest.append((models.SparseVector(indices=sparse.indices, values=sparse.values), SPARSE_VECTOR))
        if dense is not None:
            nearest.append((dense, DENSE_VECTOR))
        if not nearest:
            return []
        options: dict[str, Any] = {"query": nearest[0][0], "using": nearest[0][1]}
        if len(nearest) == 2:
            options = {
                "prefetch": [
                    models.Prefetch(query=vec, using=name, limit=prefetch, filter=native_filter)
                    for vec, name in nearest
                ],
                "query": models.RrfQuery(rrf=models.Rrf(k=rrf_k, weights=list(weights))),
            }
        fused = len(nearest) == 2
        with self._op_lock:
            response = self._client.query_points(
                self.collection,
                limit=limit + TIE_MARGIN if fused else limit,
                query_filter=native_filter,
                with_payload=True,
                with_vectors=False,
                **options,
            )
        hits = [(p.score, p.payload) for p in response.points]
        return settle_ties(hits, limit) if fused else hits
