"""What the two Qdrant engines share: the interface `QdrantSource` drives, vector names, and the
helpers both use, so that results do not depend on which engine holds the store."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Protocol

from agentkit.errors import KnowledgeSourceError

if TYPE_CHECKING:
    from qdrant_edge import SparseVector

#: The named sparse vector BM25 lives in, and the named dense vector beside it.
SPARSE_VECTOR = "bm25"
DENSE_VECTOR = "dense"
MEMORY = ":memory:"

#: Points per page when listing ids by filter (`ids_where`).
SCROLL_PAGE = 1024

#: Fused results fetched past the limit, so that ties at the cut are settled by `settle_ties`.
TIE_MARGIN = 8

#: (payload path or None when the key cannot be written as one, accepted values) per filter key.
Terms = list[tuple[str | None, list[Any]]]

#: (point id, BM25 vector, dense vector or None, payload): one point as the stores take it.
Point = tuple[str, "SparseVector", "list[float] | None", dict[str, Any]]


class Store(Protocol):
    """One collection in one engine (`engine_edge.EdgeStore`, `engine_client.ClientStore`)."""

    #: How errors name the collection, and the setting to change to pick another one.
    describe: str
    fix: str

    def open(self, create: bool) -> bool:
        """Whether the collection exists (creating it when `create`)."""
        ...

    def close(self) -> None: ...

    def build_filter(self, terms: Terms) -> tuple[Any, bool]:
        """(the engine's filter, whether it expresses every term; if not, the caller checks)."""
        ...

    def upsert(self, points: list[Point]) -> None: ...

    def delete(self, ids: list[str]) -> None: ...

    def count(self) -> int: ...

    def scroll(self, native_filter: Any) -> list[dict[str, Any]]:
        """The `id` and `metadata` payload of every point that matches."""
        ...

    def retrieve(self, ids: list[str]) -> list[dict[str, Any]]: ...

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
        """(score, payload) by one vector, or (both given) by RRF over a prefetch of each."""
        ...


def pushable(value: Any) -> bool:
    """Whether an engine's filter can express equality with `value` (else it is checked in Python)."""
    return value is None or isinstance(value, (str, int, float))


def vectors(sparse: Any, dense: list[float] | None) -> dict[str, Any]:
    return {SPARSE_VECTOR: sparse} if dense is None else {SPARSE_VECTOR: sparse, DENSE_VECTOR: dense}


def check_dense(have: dict[str, int] | None, want: int, describe: str, fix: str) -> None:
    """Refuse to use a collection whose dense vectors are missing or of another size."""
    if have is not None and have.get(DENSE_VECTOR) == want:
        return
    found = (
        f"has {have[DENSE_VECTOR]}-dimensional dense vectors"
        if have and DENSE_VECTOR in have
        else "was created without dense vectors (BM25 only)"
    )
    raise KnowledgeSourceError(
        f"{describe} {found}, but the configured encoder makes {want}-dimensional ones; a collection "
        f"cannot change its vectors: re-ingest into a new collection (set {fix} to a new name and run "
        f"agentkit ingest), or remove dense: to keep searching this one by BM25"
    )


def settle_ties(hits: list[tuple[float, dict[str, Any]]], limit: int) -> list[tuple[float, dict[str, Any]]]:
    """Order fused hits by score, then passage id, and cut to `limit`.

    RRF gives equal scores to, say, the 5th BM25 hit and the 5th dense hit; qdrant-edge returns
    such ties in an order that changes from run to run (about 0.007 nDCG@10 on SciFact), so the
    engine's order is replaced by a reproducible one that is the same on every engine.
    """
    hits.sort(key=lambda hit: (-hit[0], str(hit[1].get("id", ""))))
    return hits[:limit]
