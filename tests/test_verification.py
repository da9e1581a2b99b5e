"""The citation check (negation, numbers, names, refusals; the model judge; verifier plugins),
withheld unsupported answers, re-retrieval, and `agentkit eval qa`."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from click.testing import CliRunner

import agentkit.plugins
from agentkit import Agent
from agentkit.cli import cli
from agentkit.config import AgentSettings, parse_config
from agentkit.errors import ConfigError
from agentkit.eval.qa import QAItem, evaluate_qa, exact_match, token_f1
from agentkit.knowledge.memory import MemorySource
from agentkit.plugins import hookimpl, load_registry
from agentkit.reasoning.citations import REFUSAL
from agentkit.reasoning.verify import JudgeVerifier, LexicalVerifier, build_verifier, check_citations
from agentkit.testing import FakeLLM
from agentkit.types import Citation, Passage, StepEvent

EVEREST = Passage("everest#0", "Mount Everest, at 8,849 metres, is the highest mountain above sea level.", "Mount Everest")
TIDES = Passage("tides#0", "Tides are caused mainly by the gravitational pull of the Moon on the oceans.", "Tides")
SEASONS = ("The seasons are not caused by the changing distance between the Earth and the Sun; "
           "they are caused by the tilt of the Earth's axis.")
BATS = "Bats are not blind. Most species see well, and many also hunt by echolocation."
SCHOOL = "The grammar school was founded in 1712 by the city council, early in the eighteenth century."
VIKINGS = "In 859 Hastein led a Viking fleet of 62 ships into the Mediterranean."

#: These tests check the chain-of-thought reader's citation check (the quote reader: test_reader.py).
COT = AgentSettings(reader="cot")


def facts() -> MemorySource:
    src = MemorySource("facts", "geography and science facts")
    src.add([EVEREST, TIDES])
    return src


def test_lexical_support_needs_the_words_and_the_numbers() -> None:
    v = LexicalVerifier()
    assert v.support("Everest is 8,849 metres.", EVEREST.text) == 1.0
    # "high" is not "highest": 3 of the 4 (everest, 8849, metres, high)
    assert v.support("Everest is 8,849 metres high.", EVEREST.text) == 0.75
    assert v.support("Everest is 9,100 metres high.", EVEREST.text) < 0.5  # a wrong figure
    assert v.support("Bees dance to show flowers.", EVEREST.text) == 0.0


def test_check_flags_unsupported_and_partly_supported_citations() -> None:
    cites = [
        Citation(1, EVEREST, "Mount Everest is the highest mountain above sea level"),
        Citation(1, EVEREST, "Mount Everest is the highest mountain above sea level, and it was first climbed by penguins in 1801"),
        Citation(2, TIDES, "Volcanoes erupt lava from the crust"),
    ]
    check = check_citations(cites, LexicalVerifier(), 0.5)
    assert [c.supported for c in cites] == [True, True, False]
    assert check.partial == [cites[1]] and check.unsupported == [cites[2]]
    assert all(c.support is not None for c in cites)


def test_a_supported_answer_keeps_its_citations() -> None:
    llm = FakeLLM("Reasoning: [1] says so.\nAnswer: Mount Everest is 8,849 metres high [1].")
    answer = Agent(llm, [facts()], router=None, settings=COT).ask("How high is Mount Everest?", route=["facts"])
    assert answer.cited_ids == ["everest#0"] and answer.citations[0].supported
    assert answer.withheld == ""


def test_an_unsupported_answer_is_withheld_and_kept() -> None:
    reply = "Reasoning: none.\nAnswer: Mount Everest was named after a racehorse in 1999 [1]."
    answer = Agent(FakeLLM(reply), [facts()], settings=COT).ask("How high is Mount Everest?", route=["facts"])
    assert answer.text == REFUSAL and answer.citations == []
    assert "racehorse" in answer.withheld
    assert any("does not appear to support" in w for w in answer.warnings)
    assert any("withheld" in w for w in answer.warnings)


def test_refusal_can_be_turned_off() -> None:
    reply = "Reasoning: none.\nAnswer: Mount Everest was named after a racehorse in 1999 [1]."
    agent = Agent(FakeLLM(reply), [facts()], settings=AgentSettings(refuse_unsupported=False, reader="cot"))
    answer = agent.ask("How high is Mount Everest?", route=["facts"])
    assert "racehorse" in answer.text and answer.citations[0].supported is False


def test_an_empty_answer_without_refusal_says_so() -> None:
    # The reply ends before its answer: with refusals off nothing stands in, and a warning says why.
    agent = Agent(FakeLLM("Reasoning: Source [1] gives the height.\nAnswer:"), [facts()],
                  settings=AgentSettings(refuse_unsupported=False, reader="cot"))
    answer = agent.ask("How high is Mount Everest?", route=["facts"])
    assert answer.text == "" and answer.kind != "refusal"
    assert any("the model gave no answer" in w for w in answer.warnings)


def test_the_models_own_refusal_is_not_overridden() -> None:
    answer = Agent(FakeLLM(f"Reasoning: nothing.\nAnswer: {REFUSAL}"), [facts()], settings=COT).ask("Who built Everest?", route=["facts"])
    assert answer.text == REFUSAL and answer.withheld == ""


def test_reretrieval_reformulates_once_and_answers_from_the_new_passage() -> None:
    src = MemorySource("facts", "facts")
    src.add([TIDES, EVEREST, Passage("moon#0", "The Moon orbits the Earth every 27 days.", "Moon")])

    def respond(messages, options):  # type: ignore[no-untyped-def]
        if options.json_schema is not None:  # the reformulation step
            return {"query": "Everest height metres"}
        prompt = messages[-1].content
        if "8,849" not in prompt:
            return "Reasoning: no.\nAnswer: The Moon orbits the Earth [1]; it is 3 km high [1]."
        number = next(line.split("]")[0][1:] for line in prompt.splitlines() if line.startswith("[") and "Everest" in line)
        return f"Reasoning: found it.\nAnswer: Mount Everest is 8,849 metres high [{number}]."

    agent = Agent(FakeLLM(respond), [src], settings=AgentSettings(max_steps=2, top_k=1, reader="cot"))
    events = list(agent.stream("How far away is the peak of the tallest mountain from the tides?", route=["facts"]))
    steps = [e.step for e in events if isinstance(e, StepEvent)]
    answer = events[-1].answer
    assert [(s.action, s.query) for s in steps] == [("retry", "Everest height metres")]
    assert answer.cited_ids == ["everest#0"] and answer.citations[0].supported
    assert "reretrieve_ms" in answer.timings


def test_no_reretrieval_without_a_step_to_spare() -> None:
    reply = "Reasoning: none.\nAnswer: Mount Everest was named after a racehorse in 1999 [1]."
    llm = FakeLLM(reply)
    answer = Agent(llm, [facts()], settings=AgentSettings(max_steps=1)).ask("How high is Everest?", route=["facts"])
    assert answer.steps == [] and not any(o.json_schema for _, o in llm.calls)


# --- the lexical verifier: negation, numbers, names, refusals ----------------------------------


def test_a_claim_that_negates_what_the_passage_states_is_unsupported() -> None:
    v = LexicalVerifier()
    assert v.support("Tides are not caused by the Moon.", TIDES.text) == 0.0
    assert v.support("Tides aren't caused by the Moon's gravity.", TIDES.text) == 0.0
    assert v.support("The Moon never causes tides.", TIDES.text) == 0.0
    assert v.assess("Tides are not caused by the Moon.", TIDES.text).veto == "contradiction"
    assert v.support("Tides are caused by the Moon.", TIDES.text) == 1.0


def test_a_claim_that_states_what_the_passage_negates_is_unsupported() -> None:
    v = LexicalVerifier()
    assert v.support("The seasons are caused by the changing distance between the Earth and the Sun.", SEASONS) == 0.0
    assert v.support("Bats are blind.", BATS) == 0.0
    assert v.assess("Bats are blind.", BATS).veto == "contradiction"
    # The same negation on both sides agrees; the passage's correction ("...; they are caused by
    # the tilt") and another sentence of it are still support.
    assert v.support("Bats are not blind.", BATS) == 1.0
    assert v.support("The seasons are caused by the tilt of the Earth's axis.", SEASONS) == 1.0
    assert v.support("Many bats hunt by echolocation.", BATS) == 1.0


def test_negation_is_read_where_it_reaches() -> None:
    v = LexicalVerifier()
    # "not only ... but also" denies nothing.
    assert v.support("Tides are caused by the Sun.", "Tides are caused not only by the Moon but also by the Sun.") == 1.0
    # A negated aside about something the passage does not mention contradicts nothing.
    assert v.support("Tides are caused by the Moon, not by the wind.", TIDES.text) >= 0.5
    assert v.support("Tides are caused by the Moon.", "Tides are caused by the Moon, not by the wind.") == 1.0
    assert v.support("Tides are caused by the wind.", "Tides are caused by the Moon, not by the wind.") == 0.0


def test_a_contradicted_sentence_is_not_rescued_by_its_clauses() -> None:
    # Its first clause alone ("tides are caused by the wind") shares two of three words.
    cite = Citation(1, TIDES, "Tides are caused by the wind, not the Moon")
    check = check_citations([cite], LexicalVerifier(), 0.5)
    assert check.unsupported == [cite] and cite.support == 0.0


def test_numbers_and_dates_the_passage_lacks_cap_the_support() -> None:
    v = LexicalVerifier()
    assert v.support("The grammar school was founded in 1712.", SCHOOL) == 1.0
    assert v.support("The grammar school was founded in 1798.", SCHOOL) <= 0.3
    assert v.assess("The grammar school was founded in 1798.", SCHOOL).veto == "missing: 1798"
    assert v.support("The school was founded in the 18th century.", SCHOOL) >= 0.5  # "eighteenth"
    assert v.support("The school was founded in the 17th century.", SCHOOL) <= 0.3
    assert v.support("Hastein sailed with 62 ships.", VIKINGS) >= 0.5
    assert v.support("Hastein sailed with 162 ships.", VIKINGS) <= 0.3  # "62" is not "162"
    assert v.support("Everest is 8849 metres above sea level.", EVEREST.text) == 1.0  # "8,849"
    assert v.support("Everest is 8.849 km high.", EVEREST.text) <= 0.3
    assert v.support("Hastein led 3.5 fleets.", VIKINGS) <= 0.3


def test_names_the_passage_lacks_cap_the_support() -> None:
    v = LexicalVerifier()
    assert v.support("Rollo led them.", VIKINGS) <= 0.3
    assert v.support("The fleet was led by Rollo.", VIKINGS) <= 0.3
    assert v.support("Hastein led a fleet to Sicily.", VIKINGS) <= 0.3
    assert v.assess("The fleet was led by Rollo.", VIKINGS).veto == "missing: Rollo"
    assert v.support("Hastein led them.", VIKINGS) == 1.0
    assert v.support("The Viking fleet was led by Hastein.", VIKINGS) == 1.0
    assert v.assess("Hastein's fleet sailed into the Mediterranean.", VIKINGS).veto == ""  # possessive


def test_refusals_are_never_support() -> None:
    v = LexicalVerifier()
    for text in [REFUSAL, "The sources do not say when the school was founded.",
                 "There is no information about who founded the school.", "The founder is not mentioned.",
                 "I don't know.", "The founding year cannot be determined from the passage.",
                 "The date is not provided in the sources."]:
        assert v.support(text, SCHOOL) == 0.0, text
        assert v.assess(text, SCHOOL).veto == "refusal", text
    # A negation inside a fact is not a refusal.
    assert v.support("Patients were not given aspirin.", "In the trial, patients were not given aspirin.") == 1.0


def test_content_free_and_paraphrased_claims_are_still_supported() -> None:
    v = LexicalVerifier()
    assert v.support("Yes.", TIDES.text) == 1.0
    assert v.support("No.", TIDES.text) == 1.0
    for claim, passage in [
        ("Tides are mainly caused by the Moon's gravitational pull.", TIDES.text),
        ("The pull of the Moon causes the tides.", TIDES.text),
        ("Gravity from the Moon pulls on the oceans and causes tides.", TIDES.text),
        ("According to the source, tides are caused by the Moon.", TIDES.text),
        ("Scientists say the gravitational pull of the Moon causes tides.", TIDES.text),
        ("At 8,849 metres, Mount Everest is the highest mountain above sea level.", EVEREST.text),
        ("Mount Everest is the highest mountain above sea level, at 8,849 metres.", EVEREST.text),
        ("The school was founded by the city council in 1712.", SCHOOL),
        ("In 859, Hastein led a fleet of 62 Viking ships into the Mediterranean.", VIKINGS),
        ("1. Hastein led a Viking fleet.", VIKINGS),
    ]:
        assert v.support(claim, passage) >= 0.5, claim


# --- the model judge -----------------------------------------------------------------------------


@pytest.mark.parametrize(("verdict", "score"), [("supported", 1.0), ("contradicted", 0.0), ("not_enough_info", 0.0)])
def test_the_judge_maps_its_verdict_to_support(verdict: str, score: float) -> None:
    llm = FakeLLM({"verdict": verdict})
    judge = JudgeVerifier(llm)
    assert judge.support("The Moon's pull causes tides.", TIDES.text) == score
    (messages, options), = llm.calls
    assert options.json_schema is not None and options.temperature == 0.0
    assert set(options.json_schema["properties"]["verdict"]["enum"]) == {"supported", "contradicted", "not_enough_info"}
    assert "The Moon's pull causes tides." in messages[-1].content and TIDES.text in messages[-1].content
    assert judge.contradicts("The Moon's pull causes tides.", TIDES.text) == (verdict == "contradicted")
    assert len(llm.calls) == 1  # the verdict is remembered


def test_the_lexical_checks_veto_the_judge() -> None:
    llm = FakeLLM({"verdict": "supported"})
    judge = JudgeVerifier(llm)
    assert judge.support("Tides are not caused by the Moon.", TIDES.text) == 0.0
    assert judge.support("The grammar school was founded in 1798.", SCHOOL) <= 0.3
    assert judge.support("Rollo led them.", VIKINGS) <= 0.3
    assert judge.support("I could not find this in the sources.", SCHOOL) == 0.0
    assert judge.support("Yes.", SCHOOL) == 1.0
    assert llm.calls == []  # vetoed or empty claims cost no model call
    assert judge.support("The grammar school was founded in 1712.", SCHOOL) == 1.0
    assert len(llm.calls) == 1


def test_a_reply_that_is_no_verdict_leaves_the_lexical_score() -> None:
    judge = JudgeVerifier(FakeLLM("maybe"))
    assert judge.support("Tides are caused by the Moon.", TIDES.text) == 1.0
    assert judge.verdict("Tides are caused by the Moon.", TIDES.text) == "invalid"


def test_check_citations_with_the_judge() -> None:
    def respond(messages: Any, options: Any) -> dict[str, str]:
        claim = messages[-1].content.split("Claim:")[-1]
        return {"verdict": "contradicted" if "penguins" in claim else "supported"}

    cites = [Citation(1, EVEREST, "Mount Everest is the highest mountain above sea level"),
             Citation(1, EVEREST, "Mount Everest was climbed by penguins, and it is the highest mountain above sea level")]
    check = check_citations(cites, JudgeVerifier(FakeLLM(respond)), 0.5)
    assert check.supported == [cites[0]] and check.unsupported == [cites[1]]


# The judge on the bundled SmolLM2-135M: clear cases, half supported, half contradicted.
JUDGE_CASES = [
    ("Tides are caused by the Moon's gravity.", TIDES.text, "supported"),
    ("Tides are caused by the wind.", TIDES.text, "contradicted"),
    ("Penguins are excellent swimmers.", "Penguins cannot fly, but they are excellent swimmers.", "supported"),
    ("Penguins are poor swimmers.", "Penguins cannot fly, but they are excellent swimmers.", "contradicted"),
    ("Mount Everest is the highest mountain above sea level.", EVEREST.text, "supported"),
    ("Mount Everest is the lowest mountain above sea level.", EVEREST.text, "contradicted"),
    ("Water boils at 100 degrees Celsius at sea level.", "Water boils at 100 degrees Celsius at sea level.", "supported"),
    ("Water freezes at 100 degrees Celsius at sea level.", "Water boils at 100 degrees Celsius at sea level.", "contradicted"),
]


@pytest.mark.real_model
def test_the_judge_on_the_bundled_model(record_property: Any) -> None:
    """The grammar holds and the lexical veto stands; the verdicts are measured, not asserted.

    Measured (SmolLM2-135M Q4_1, temperature 0, this prompt): 0 of 8 verdicts right here, 0 of 12
    on a wider set: it answers "not_enough_info" to every claim, verbatim ones included, so every
    citation scores 0 (4 of 8 support decisions right, the contradictions). Other few-shot orders
    got at most 5 of 12, by calling contradictions "supported", which is worse. The 135M model
    cannot tell support from contradiction: `agent.verify: judge` is for larger models.
    """
    from agentkit.llm.llama_cpp import LlamaCppLLM

    judge = JudgeVerifier(LlamaCppLLM(n_ctx=2048, seed=0))
    verdicts = [judge.verdict(claim, passage) for claim, passage, _ in JUDGE_CASES]
    assert set(verdicts) <= {"supported", "contradicted", "not_enough_info"}  # the grammar allows no other reply
    right = sum(got == want for got, (_, _, want) in zip(verdicts, JUDGE_CASES))
    decided = sum((judge.support(claim, passage) >= 0.5) == (want == "supported") for claim, passage, want in JUDGE_CASES)
    record_property("judge_verdicts_right", f"{right}/{len(JUDGE_CASES)}")
    record_property("judge_support_decisions_right", f"{decided}/{len(JUDGE_CASES)}")
    print(f"judge on SmolLM2-135M: verdicts right {right}/{len(JUDGE_CASES)}, support decisions right "
          f"{decided}/{len(JUDGE_CASES)}; verdicts {verdicts}")
    # Whatever the model says, a negation or a number the passage does not share is unsupported.
    assert judge.support("Tides are not caused by the Moon.", TIDES.text) == 0.0
    assert judge.support("The grammar school was founded in 1798.", SCHOOL) <= 0.3


# --- choosing a verifier: agent.verify, build_verifier, plugins ----------------------------------


class ExactVerifier:
    """A third-party verifier: the claim must occur word for word."""

    name = "exact"

    def support(self, claim: str, evidence: str) -> float:
        return 1.0 if claim.strip(" .").lower() in evidence.lower() else 0.0


class ExactPlugin:
    @hookimpl
    def register_verifiers(self, register: Any) -> None:
        register(ExactVerifier)


@pytest.fixture()
def with_exact(monkeypatch: pytest.MonkeyPatch) -> agentkit.plugins.Registry:
    reg = load_registry({"agentkit-exact": ExactPlugin()}, entry_points=False)
    monkeypatch.setattr(agentkit.plugins, "registry", lambda: reg)
    return reg


def test_build_verifier_builds_the_built_ins() -> None:
    assert isinstance(build_verifier("lexical"), LexicalVerifier)
    llm = FakeLLM()
    judge = build_verifier("judge", llm)
    assert isinstance(judge, JudgeVerifier) and judge.llm is llm
    with pytest.raises(ConfigError, match="'judge' needs the model"):
        build_verifier("judge")
    with pytest.raises(ConfigError, match=r"agent\.verify: unknown value 'nope'; one of: (.*, )?judge, lexical"):
        build_verifier("nope")
    with pytest.raises(ConfigError, match="'off'"):
        build_verifier("off")


def test_a_plugin_registers_a_verifier_through_the_hook(with_exact: agentkit.plugins.Registry) -> None:
    assert with_exact.plugins["builtins"].registered["register_verifiers"] == ["lexical", "judge"]
    assert with_exact.plugins["agentkit-exact"].registered["register_verifiers"] == ["exact"]
    assert AgentSettings(verify="exact").verify == "exact"
    verifier = build_verifier("exact")
    assert isinstance(verifier, ExactVerifier)
    cite = Citation(1, TIDES, "Tides are caused by the Moon")
    assert not check_citations([cite], verifier, 0.5).ok  # not word for word


def test_an_unknown_verifier_is_a_config_error_naming_the_key_and_the_options(with_exact: Any) -> None:
    for name in ("lexical", "judge", "off", "exact"):
        assert parse_config(f"llm: {{backend: fake}}\nagent: {{verify: {name}}}\n").agent.verify == name
    with pytest.raises(ConfigError) as err:
        parse_config("llm: {backend: fake}\nagent: {verify: entailment}\n", origin="my.yaml")
    message = str(err.value)
    assert "my.yaml: agent.verify" in message and "'entailment'" in message
    assert "one of: exact, judge, lexical, off" in message


# --- QA evaluation -------------------------------------------------------------------------------


def test_answer_metrics() -> None:
    assert exact_match("The Moon", ["moon"]) == 1.0
    assert exact_match("It is caused by the Moon.", ["the Moon"]) == 1.0
    assert exact_match("Mars", ["moon"]) == 0.0
    assert token_f1("the pull of the Moon", ["Moon pull"]) == 0.8  # "of" is extra: P 2/3, R 1
    assert 0 < token_f1("Moon and Sun", ["the Moon"]) < 1


def test_evaluate_qa_compares_modes() -> None:
    items = [QAItem("How high is Mount Everest?", ["8,849 metres"]), QAItem("What causes tides?", ["the Moon"])]

    def respond(messages, options):  # type: ignore[no-untyped-def]
        prompt = messages[-1].content
        if "Everest" in prompt and "8,849" in prompt:
            return "Reasoning: [1].\nAnswer: 8,849 metres [1]."
        if "Tides are" in prompt:
            return "Reasoning: [1].\nAnswer: the Moon [1]."
        return "Reasoning: I think.\nAnswer: about 9000 metres"

    agent = Agent(FakeLLM(respond), [facts()], settings=COT)
    always = evaluate_qa(agent, items, "always", "facts")
    never = evaluate_qa(agent, items, "never", "facts")
    assert always.exact_match == 1.0 and always.citation_precision == 1.0 and always.retrieval_rate == 1.0
    assert never.exact_match == 0.0 and never.citation_precision is None and never.retrieval_rate == 0.0
    assert always.to_dict()["citations"] == 2


def test_eval_qa_cli_json(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "tides.md").write_text("# Tides\n\nTides are caused mainly by the pull of the Moon.\n")
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "What causes tides?", "answer": ["the Moon"]}) + "\n")
    (tmp_path / "agentkit.yaml").write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\n"
                                            "router: {semantic: {embedder: lexical}}\n")
    for mode in ("always", "never", "routed"):
        result = CliRunner().invoke(cli, ["--config", str(tmp_path / "agentkit.yaml"), "eval", "qa", "--corpus",
                                          str(tmp_path / "corpus"), "--questions", str(tmp_path / "qa.jsonl"),
                                          "--mode", mode, "--json"])
        assert result.exit_code == 0, result.output
        report = json.loads(result.output)
        assert {"exact_match", "f1", "citation_precision", "mean_latency_ms"} <= set(report)
        if mode == "always":
            # FakeLLM cites the first sentence of evidence [1], which holds the answer.
            assert report["citation_precision"] == 1.0 and report["citations"] == 1
        if mode == "never":
            assert report["retrieval_rate"] == 0.0


def test_eval_qa_with_lora_answers_with_and_without_the_adapter(tmp_path: Path) -> None:
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "tides.md").write_text("# Tides\n\nTides are caused mainly by the pull of the Moon.\n")
    (tmp_path / "qa.jsonl").write_text(json.dumps({"question": "What causes tides?", "answer": ["the Moon"]}) + "\n")
    (tmp_path / "agentkit.yaml").write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\n")
    adapter = tmp_path / "style.gguf"
    adapter.write_bytes(b"GGUF")
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "agentkit.yaml"), "eval", "qa", "--corpus",
                                      str(tmp_path / "corpus"), "--questions", str(tmp_path / "qa.jsonl"),
                                      "--mode", "always", "--lora", str(adapter), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    assert list(report) == ["base", "base + style.gguf"]
    assert report["base"]["n"] == report["base + style.gguf"]["n"] == 1
    # The text report prints both rows too.
    result = CliRunner().invoke(cli, ["--config", str(tmp_path / "agentkit.yaml"), "eval", "qa", "--corpus",
                                      str(tmp_path / "corpus"), "--questions", str(tmp_path / "qa.jsonl"),
                                      "--mode", "always", "--lora", str(adapter), "--no-progress"])
    assert result.exit_code == 0, result.output
    assert "base, mode always" in result.output and "base + style.gguf, mode always" in result.output
