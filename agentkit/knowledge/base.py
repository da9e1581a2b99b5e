"""The protocol every knowledge source implements: search, and add/get/delete where writable.

A filter is a mapping from a metadata key to a value (equality) or a list of values (any of).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Protocol, runtime_checkable

from agentkit.types import Passage

Filters = Mapping[str, Any]


@runtime_checkable
class KnowledgeSource(Protocol):
    """Anything that answers `search(query)` with scored passages."""

    name: str
    description: str

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Passage]:
        """The `k` best passages for `query`, best first, each with `source` set to `self.name`."""
        ...


@runtime_checkable
class WritableSource(KnowledgeSource, Protocol):
    """A source that ingestion can write to. Passage ids are stable: `add` replaces by id."""

    def add(self, passages: Sequence[Passage]) -> None: ...

    def get(self, ids: Sequence[str]) -> list[Passage]:
        """The stored passages among `ids` (missing ids are left out)."""
        ...

    def delete(self, ids: Sequence[str]) -> None: ...

    def count(self) -> int: ...


@runtime_checkable
class ScannableSource(Protocol):
    """A source that can list stored passages by metadata. Ingestion uses it to find every chunk
    of a document by its `doc_id`, including orphans that no recorded chunk count points to."""

    def ids_where(self, filters: Filters) -> list[str]:
        """Ids of every stored passage whose metadata matches `filters`, in no particular order."""
        ...


def is_writable(source: KnowledgeSource) -> bool:
    return isinstance(source, WritableSource)


def matches(metadata: Mapping[str, Any], filters: Filters | None) -> bool:
    """Reference semantics of `filters`, for sources that filter in Python."""
    if not filters:
        return True
    for key, want in filters.items():
        have = metadata.get(key)
        if isinstance(want, (list, tuple, set, frozenset)):
            if have not in want:
                return False
        elif have != want:
            return False
    return True
