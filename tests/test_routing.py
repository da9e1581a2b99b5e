"""The simple router: which targets each kind of question gets, and why."""

from __future__ import annotations

import pytest

from agentkit.knowledge.memory import MemorySource
from agentkit.routing.simple import SimpleRouter
from agentkit.types import PARAMETRIC, Passage


class Dictionary(MemorySource):
    kind = "dictionary"


@pytest.fixture()
def sources() -> dict[str, MemorySource]:
    return {
        "papers": MemorySource("papers", "biomedical research abstracts about cells, genes and disease"),
        "manual": MemorySource("manual", "the agentkit user manual: installation, configuration, CLI"),
        "wordnet": Dictionary("wordnet", "English dictionary"),
    }


@pytest.mark.parametrize(
    "question",
    ["hello!", "thanks", "What is 12 * 7?", "17+25", "Write a haiku about autumn", "translate 'cat' into French"],
)
def test_model_alone(question: str, sources: dict[str, MemorySource]) -> None:
    d = SimpleRouter().decide(question, sources)
    assert d.targets == [PARAMETRIC] and d.signals


@pytest.mark.parametrize("question", ["define serendipity", "What does 'lugubrious' mean?", "meaning of the word ennui"])
def test_definitions_go_to_dictionaries(question: str, sources: dict[str, MemorySource]) -> None:
    assert SimpleRouter().decide(question, sources).targets == ["wordnet"]


def test_description_similarity_picks_the_source(sources: dict[str, MemorySource]) -> None:
    d = SimpleRouter().decide("Which genes are linked to this disease?", sources)
    assert d.targets == ["papers"]
    assert d.signals["overlap:papers"] > d.signals["overlap:manual"]
    d = SimpleRouter().decide("How do I change the configuration of the CLI?", sources)
    assert d.targets == ["manual"]


def test_no_match_searches_all_document_sources(sources: dict[str, MemorySource]) -> None:
    d = SimpleRouter().decide("Who won the 1998 world cup?", sources)
    assert set(d.targets) == {"papers", "manual"} and d.confidence < 0.6


@pytest.mark.parametrize("question", ["x", "x?", "(...)"])
def test_symbols_without_digits_are_not_arithmetic(question: str, sources: dict[str, MemorySource]) -> None:
    assert SimpleRouter().decide(question, sources).targets != [PARAMETRIC]


def test_no_sources_means_parametric() -> None:
    assert SimpleRouter().decide("Who won the 1998 world cup?", {}).targets == [PARAMETRIC]


def test_user_patterns_extend_rules(sources: dict[str, MemorySource]) -> None:
    router = SimpleRouter(parametric_patterns=[r"^brainstorm\b"])
    assert router.decide("brainstorm names for a cat", sources).targets == [PARAMETRIC]


# --- a failing source while routing (issue 12, item 2) -------------------------------------------


class _Failing(MemorySource):
    def search(self, query, k=5, filters=None):  # type: ignore[no-untyped-def]
        raise ConnectionError("connection refused")


def test_probe_keeps_a_failing_source_instead_of_suggesting_the_model(sources: dict[str, MemorySource]) -> None:
    from agentkit.routing.base import Query
    from agentkit.routing.probe import ProbePolicy

    down = {"manual": _Failing("manual", "the agentkit user manual")}
    vote = ProbePolicy().assess(Query("how do I install agentkit", down))
    # Before: the error counted as "no hits" and the vote was [parametric].
    assert vote.targets == ["manual"]
    assert "could not search manual" in vote.reason
    assert vote.signals["probe:manual:failed"] == 1.0 and vote.signals["probe:failed"] == 1.0


def test_probe_picks_the_sources_that_match_and_names_the_failing_one() -> None:
    from agentkit.routing.base import Query
    from agentkit.routing.probe import ProbePolicy

    manual = MemorySource("manual", "the agentkit user manual")
    manual.add([Passage("install#0", "Install agentkit with pip.", "Installation")])
    vote = ProbePolicy().assess(Query("how do I install agentkit", {"manual": manual, "down": _Failing("down")}))
    assert vote.targets == ["manual"] and "could not search down" in vote.reason
