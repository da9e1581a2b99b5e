"""The citation check, withheld unsupported answers, re-retrieval, and `agentkit eval qa`."""

from __future__ import annotations

import json
from pathlib import Path

from click.testing import CliRunner

from agentkit import Agent
from agentkit.cli import cli
from agentkit.config import AgentSettings
from agentkit.eval_qa import QAItem, evaluate_qa, exact_match, token_f1
from agentkit.knowledge.memory import MemorySource
from agentkit.reasoning.citations import REFUSAL
from agentkit.reasoning.verify import LexicalVerifier, check_citations
from agentkit.testing import FakeLLM
from agentkit.types import Citation, Passage, StepEvent

EVEREST = Passage("everest#0", "Mount Everest, at 8,849 metres, is the highest mountain above sea level.", "Mount Everest")
TIDES = Passage("tides#0", "Tides are caused mainly by the gravitational pull of the Moon on the oceans.", "Tides")


def facts() -> MemorySource:
    src = MemorySource("facts", "geography and science facts")
    src.add([EVEREST, TIDES])
    return src


def test_lexical_support_needs_the_words_and_the_numbers() -> None:
    v = LexicalVerifier()
    assert v.support("Everest is 8,849 metres.", EVEREST.text) == 1.0
    assert v.support("Everest is 8,849 metres high.", EVEREST.text) == 0.8  # "high" is not "highest"
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
    answer = Agent(llm, [facts()], router=None).ask("How high is Mount Everest?", route=["facts"])
    assert answer.cited_ids == ["everest#0"] and answer.citations[0].supported
    assert answer.withheld == ""


def test_an_unsupported_answer_is_withheld_and_kept() -> None:
    reply = "Reasoning: none.\nAnswer: Mount Everest was named after a racehorse in 1999 [1]."
    answer = Agent(FakeLLM(reply), [facts()]).ask("How high is Mount Everest?", route=["facts"])
    assert answer.text == REFUSAL and answer.citations == []
    assert "racehorse" in answer.withheld
    assert any("does not appear to support" in w for w in answer.warnings)
    assert any("withheld" in w for w in answer.warnings)


def test_refusal_can_be_turned_off() -> None:
    reply = "Reasoning: none.\nAnswer: Mount Everest was named after a racehorse in 1999 [1]."
    agent = Agent(FakeLLM(reply), [facts()], settings=AgentSettings(refuse_unsupported=False))
    answer = agent.ask("How high is Mount Everest?", route=["facts"])
    assert "racehorse" in answer.text and answer.citations[0].supported is False


def test_the_models_own_refusal_is_not_overridden() -> None:
    answer = Agent(FakeLLM(f"Reasoning: nothing.\nAnswer: {REFUSAL}"), [facts()]).ask("Who built Everest?", route=["facts"])
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

    agent = Agent(FakeLLM(respond), [src], settings=AgentSettings(max_steps=2, top_k=1))
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

    agent = Agent(FakeLLM(respond), [facts()])
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
