"""The built-in writable sources pass the same contract suite third-party sources subclass."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkit.knowledge.memory import MemorySource
from agentkit.knowledge.qdrant import QdrantSource
from agentkit.testing import WritableSourceContract


class TestMemorySource(WritableSourceContract):
    @pytest.fixture()
    def source(self) -> MemorySource:
        return MemorySource("memory", "facts")


class TestQdrantEdge(WritableSourceContract):
    @pytest.fixture()
    def source(self, tmp_path: Path):
        src = QdrantSource("qdrant", "facts", path=tmp_path / "q", engine="edge")
        yield src
        src.close()


class TestQdrantClientLocal(WritableSourceContract):
    @pytest.fixture()
    def source(self):
        src = QdrantSource("qdrant", "facts", location=":memory:", engine="client")
        yield src
        src.close()
