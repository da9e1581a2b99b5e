"""Contract test suites that every knowledge source must pass, built-in or third-party.

Subclass one in a test module and override the `source` fixture; pytest collects the rest:

    class TestMySource(WritableSourceContract):
        @pytest.fixture()
        def source(self, tmp_path):
            return MySource("notes", path=tmp_path)     # empty, writable

Re-exported by `agentkit.testing`. Imports pytest, so import it from tests only.
"""

from __future__ import annotations

import threading
from typing import Any

import pytest

from agentkit.knowledge.base import KnowledgeSource, WritableSource
from agentkit.types import Passage

CORPUS = [
    Passage("tides#0", "Tides are caused by the gravitational pull of the Moon on the oceans.", "Tides",
            metadata={"topic": "earth", "year": 2020}, uri="doc://tides#chunk=0"),
    Passage("volcano#0", "A volcano is an opening in the crust through which lava and ash escape.", "Volcanoes",
            metadata={"topic": "earth", "year": 2021}, uri="doc://volcano#chunk=0"),
    Passage("rust#0", "Rust is a programming language with a borrow checker for memory safety.", "Rust",
            metadata={"topic": "software", "year": 2021}, uri="doc://rust#chunk=0"),
    Passage("bees#0", "Honey bees tell other bees where flowers are with a waggle dance.", "Bees",
            metadata={"topic": "biology", "year": 2019}, uri="doc://bees#chunk=0"),
    Passage("coffee#0", "Coffee beans are roasted seeds first cultivated in Ethiopia and Yemen.", "Coffee",
            metadata={"topic": "biology", "year": 2018}, uri="doc://coffee#chunk=0"),
    Passage("cafe#0", "A café crème in Zürich (チューリッヒ) is an espresso with warm cream.", "Café crème",
            metadata={"topic": "food", "year": 2022}, uri="doc://cafe#chunk=0"),
]


def ids(passages: list[Passage]) -> list[str]:
    return [p.id for p in passages]


class KnowledgeSourceContract:
    """For every source: override `source` to return one that holds `CORPUS` (or its own data)
    and `query`/`expected_id` to a question it answers and the passage that answers it (a source
    with its own data also sets `unicode_query`/`unicode_expected_id`)."""

    query = "What causes the tides of the oceans?"
    expected_id = "tides#0"
    #: Accented Latin, Japanese, Greek and an emoji; the passage that shares its words comes back.
    unicode_query = "Ωmega café crème Zürich チューリッヒ 🌊"
    unicode_expected_id = "cafe#0"
    #: False for a source that looks one term up (a dictionary): a 10,000-word text names none,
    #: so it must come back empty, quickly and without error, rather than with the answer.
    long_text_finds_the_answer = True

    @pytest.fixture()
    def source(self) -> Any:
        raise NotImplementedError("override the `source` fixture")

    @pytest.fixture()
    def loaded(self, source: Any) -> Any:
        return source

    def test_is_a_knowledge_source(self, loaded: Any) -> None:
        assert isinstance(loaded, KnowledgeSource)
        assert isinstance(loaded.name, str) and loaded.name
        assert isinstance(loaded.description, str)

    def test_finds_the_answering_passage_first(self, loaded: Any) -> None:
        found = loaded.search(self.query, k=3)
        assert found and found[0].id == self.expected_id
        assert all(p.source == loaded.name for p in found)
        scores = [p.score for p in found]
        assert scores == sorted(scores, reverse=True)

    def test_k_bounds_the_results(self, loaded: Any) -> None:
        [found] = loaded.search(self.query, k=1)  # exactly one: an empty result would pass a bare bound
        assert found.id == self.expected_id
        assert 1 <= len(loaded.search(self.query, k=2)) <= 2

    def test_empty_query_returns_nothing(self, loaded: Any) -> None:
        assert loaded.search("", k=5) == []
        assert loaded.search("   ", k=5) == []

    def test_huge_query_is_bounded_and_still_finds_the_answer(self, loaded: Any) -> None:
        # The question first, then its words again up to about 10,000 words: a source may cut a
        # query (Elasticsearch keeps its first distinct words) but must not fail or lose it.
        words = self.query.split()
        query = " ".join(words * (10_000 // len(words) + 1))
        found = loaded.search(query, k=3)
        if not self.long_text_finds_the_answer:
            assert found == []
            return
        assert 1 <= len(found) <= 3
        assert found[0].id == self.expected_id

    def test_unicode_query_finds_the_unicode_passage(self, loaded: Any) -> None:
        found = loaded.search(self.unicode_query, k=3)
        assert found and found[0].id == self.unicode_expected_id, ids(found)

    def test_concurrent_reads_agree(self, loaded: Any) -> None:
        expected = ids(loaded.search(self.query, k=3))
        results: list[list[str]] = []
        errors: list[BaseException] = []

        def worker() -> None:
            try:
                for _ in range(10):
                    results.append(ids(loaded.search(self.query, k=3)))
            except BaseException as exc:  # noqa: BLE001 - reported below
                errors.append(exc)

        threads = [threading.Thread(target=worker) for _ in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=60)
        assert not errors, errors[0]
        assert len(results) == 60 and all(r == expected for r in results)


class WritableSourceContract(KnowledgeSourceContract):
    """For writable sources: override `source` to return an EMPTY writable source."""

    @pytest.fixture()
    def loaded(self, source: Any) -> Any:
        source.add(CORPUS)
        return source

    def test_is_writable(self, source: Any) -> None:
        assert isinstance(source, WritableSource)

    def test_empty_source(self, source: Any) -> None:
        assert source.count() == 0
        assert source.search(self.query, k=5) == []
        assert source.get(["tides#0"]) == []

    def test_add_count_and_round_trip(self, loaded: Any) -> None:
        assert loaded.count() == len(CORPUS)
        [p] = loaded.get(["rust#0"])
        original = CORPUS[2]
        assert (p.id, p.text, p.title, p.uri) == (original.id, original.text, original.title, original.uri)
        assert p.metadata["topic"] == "software" and p.metadata["year"] == 2021

    def test_get_keeps_order_and_skips_missing(self, loaded: Any) -> None:
        assert ids(loaded.get(["bees#0", "missing#0", "tides#0"])) == ["bees#0", "tides#0"]

    def test_update_by_stable_id_replaces(self, loaded: Any) -> None:
        loaded.add([Passage("rust#0", "Rust compiles to fast native code with zero-cost abstractions.", "Rust",
                            metadata={"topic": "software", "year": 2022})])
        assert loaded.count() == len(CORPUS)
        assert loaded.get(["rust#0"])[0].metadata["year"] == 2022
        assert "rust#0" in ids(loaded.search("zero-cost abstractions native code", k=3))
        assert "rust#0" not in ids(loaded.search("borrow checker memory safety", k=3))

    def test_delete(self, loaded: Any) -> None:
        loaded.delete(["tides#0", "never-stored#0"])
        assert loaded.count() == len(CORPUS) - 1
        assert loaded.get(["tides#0"]) == []
        assert "tides#0" not in ids(loaded.search(self.query, k=5))

    def test_filters_equality_and_any_of(self, loaded: Any) -> None:
        found = loaded.search("bees coffee seeds flowers", k=5, filters={"topic": "biology"})
        assert set(ids(found)) == {"bees#0", "coffee#0"}
        found = loaded.search("moon lava volcano tides", k=5, filters={"topic": ["earth", "software"], "year": 2021})
        assert ids(found) == ["volcano#0"]
        assert loaded.search("tides moon", k=5, filters={"topic": "nothing"}) == []

    def test_unicode_round_trip(self, source: Any) -> None:
        text = "Ο ωκεανός — 海洋の潮汐 — naïve café 🌊"
        source.add([Passage("unicode#0", text, "Ωκεανός")])
        assert source.get(["unicode#0"])[0].text == text
        assert "unicode#0" in ids(source.search("café naïve", k=3))
