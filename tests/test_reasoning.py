"""Evidence assembly and the parsing of cited answers."""

from __future__ import annotations

from agentkit.reasoning.citations import parse_reply, split_reasoning
from agentkit.reasoning.cot import load_template
from agentkit.reasoning.evidence import assemble, deduplicate, edges_first, fit_budget, merge_ranked
from agentkit.types import Passage


def P(pid: str, text: str = "", score: float = 1.0, source: str = "s") -> Passage:
    return Passage(pid, text or f"text of {pid}", score=score, source=source)


def words(text: str) -> int:
    return len(text.split())


def test_edges_first_puts_best_two_at_the_ends() -> None:
    ranked = [P(str(i)) for i in range(1, 7)]
    assert [p.id for p in edges_first(ranked)] == ["1", "3", "5", "6", "4", "2"]


def test_merge_interleaves_sources_by_rank() -> None:
    a = [P("a1", score=30), P("a2", score=20)]
    b = [P("b1", score=0.9), P("b2", score=0.1)]
    assert [p.id for p in merge_ranked([a, b])][:2] == ["a1", "b1"]
    assert [p.id for p in merge_ranked([a, b])][2:] == ["a2", "b2"]


def test_deduplicate_by_id_and_text() -> None:
    out = deduplicate([P("x", "Same  text."), P("x", "other"), P("y", "same text."), P("z", "new")])
    assert [p.id for p in out] == ["x", "z"]


def test_budget_cuts_the_overflowing_passage_and_drops_the_rest() -> None:
    ps = [P("a", "w " * 40), P("b", "w " * 200), P("c", "w " * 10)]
    out = fit_budget(ps, 120, words)
    assert [p.id for p in out] == ["a", "b"]
    assert out[1].metadata["truncated"] and sum(words(f"[1] \n{p.text}") for p in out) <= 120


def test_assemble_orders_and_budgets() -> None:
    ranked = [P(f"p{i}", f"passage {i} " * 5, score=10 - i) for i in range(6)]
    out = assemble([ranked], 1000, words)
    assert out[0].id == "p0" and out[-1].id == "p1"


def test_split_reasoning() -> None:
    assert split_reasoning("Reasoning: because.\nAnswer: 42 [1]") == ("because.", "42 [1]")
    assert split_reasoning("just an answer") == ("", "just an answer")
    assert split_reasoning("**Reasoning:** x\n**Answer:** y") == ("x", "y")


def test_citations_map_to_passages_and_bad_ones_are_dropped() -> None:
    ev = [P("tides", "Tides follow the Moon."), P("lava", "Lava is hot.")]
    r = parse_reply("Reasoning: r\nAnswer: Tides follow the Moon [1]. Lava is hot [2, 9]. Also [5].", ev)
    assert [(c.marker, c.passage.id) for c in r.citations] == [(1, "tides"), (2, "lava")]
    assert "[9]" not in r.text and "[5]" not in r.text
    assert r.warnings and "[5], [9]" in r.warnings[0]


def test_unmarked_answer_is_attributed_by_overlap() -> None:
    ev = [P("tides", "Tides are caused by the gravitational pull of the Moon."), P("lava", "Lava is hot.")]
    r = parse_reply("Answer: The Moon's gravitational pull causes tides.", ev)
    assert [(c.passage.id, c.inferred) for c in r.citations] == [("tides", True)]
    # agentkit's attribution is never written into the text as if the model had cited.
    assert r.text == "The Moon's gravitational pull causes tides."


def test_refusal_gets_no_citation() -> None:
    r = parse_reply("Answer: I could not find this in the sources.", [P("a", "I could not find this in the sources.")])
    assert r.citations == []


def test_prompt_template_numbers_evidence() -> None:
    msgs = load_template("answer").render(question="Q?", passages=[P("a", "alpha"), P("b", "beta")])
    assert msgs[0].role == "system" and msgs[-1].role == "user"
    c = msgs[-1].content
    assert c.index("[1]") < c.index("alpha") < c.index("[2]") < c.index("beta") < c.index("Q?")
    assert msgs[-1].content.index("alpha") < msgs[-1].content.index("beta") < msgs[-1].content.index("Q?")


def test_supported_clause_is_attributed_despite_an_unsupported_aside() -> None:
    ev = [P("bees", "Honey bees communicate the location of flowers to other bees with a waggle dance.")]
    r = parse_reply("Honey bees use a waggle dance to communicate with each other, which is a form of "
                    "social behavior where bees share information.", ev)
    assert [c.passage.id for c in r.citations] == ["bees"]
    unsupported = parse_reply("Ethiopia is a country located in East Africa.", ev)
    assert unsupported.citations == []


def test_echoed_question_line_is_not_part_of_the_answer() -> None:
    assert split_reasoning("Question: What causes tides?\nThe Moon [1].") == ("", "The Moon [1].")


def test_version_numbers_do_not_split_sentences() -> None:
    ev = [P("v", "agentkit 0.1.0 ships the SmolLM2 model.")]
    r = parse_reply("Answer: agentkit 0.1.0 ships the SmolLM2 model [1].", ev)
    assert [c.sentence for c in r.citations] == ["agentkit 0.1.0 ships the SmolLM2 model."]
