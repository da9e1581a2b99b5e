"""`agentkit eval qa` with SQuAD 2.0 semantics: abstention on unanswerable questions, citation
precision over the model's own marks, supported-but-wrong answers, sampling and --out."""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

import pytest
from click.testing import CliRunner

from agentkit.config import AgentSettings
from agentkit import Agent
from agentkit.cli import cli
from agentkit.errors import InputError
from agentkit.eval.qa import QAItem, evaluate_qa, load_questions, sample_questions
from agentkit.knowledge.memory import MemorySource
from agentkit.reasoning.citations import REFUSAL
from agentkit.testing import FakeLLM
from agentkit.types import Answer, Citation, Passage, RouteDecision

SQUAD2 = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2-mini"

P0 = Passage("Normans#0", "The Norse leader Rollo swore fealty to King Charles III of West Francia.", "Normans")
P1 = Passage("Normans#1", "The Normans adopted the Frankish language in the 10th century.", "Normans")
P3 = Passage("Normans#3", "Norman mercenaries served in Italy and the Byzantine Empire.", "Normans")


class ScriptedAgent:
    """Answers each question with a hand-built Answer and records the route it was asked for."""

    def __init__(self, answers: dict[str, Answer]) -> None:
        self.answers = answers
        self.routes: list[Sequence[str] | None] = []

    def ask(self, question: str, *, route: Sequence[str] | None = None) -> Answer:
        self.routes.append(route)
        return self.answers[question]


def answer(question: str, text: str, *cites: Citation, kind: str = "model", targets: Sequence[str] = ("docs",),
           ttft: float | None = None, withheld: str = "") -> Answer:
    return Answer(question, text, list(cites), route=RouteDecision(list(targets)), kind=kind, withheld=withheld,
                  timings={} if ttft is None else {"ttft_ms": ttft})


def six_cases() -> tuple[list[QAItem], ScriptedAgent]:
    """Three answerable questions (right, supported but wrong, withheld) and three unanswerable
    ones (refused, answered from memory, refused in words only)."""
    items = [
        QAItem("Who led the Norse?", ["Rollo"], ["Normans#0"], id="a"),
        QAItem("When did the Normans adopt Frankish?", ["10th century"], ["Normans#1"], id="b"),
        QAItem("Whom did Rollo swear fealty to?", ["Charles III"], ["Normans#0"], id="c"),
        QAItem("Who gave Normandy its name in 1100?", [], id="d"),
        QAItem("What is France a region of?", [], id="e"),
        QAItem("Who swore fealty to King Rollo?", ["Charles"], answerable=False, id="f"),
    ]
    script = {
        # Right, with a model citation of the gold passage and an inferred one of another passage.
        "a": answer(items[0].question, "Rollo led them [1].",
                    Citation(1, P0, "Rollo led them", supported=True, quote="Rollo", start=17, end=22),
                    Citation(2, P3, "Rollo led them", inferred=True, supported=True), ttft=100.0),
        # Wrong, although the check found the (wrong) passage supports it.
        "b": answer(items[1].question, "In the 12th century [1].", Citation(1, P3, "In the 12th century", supported=True),
                    ttft=300.0),
        "c": answer(items[2].question, REFUSAL, kind="refusal", withheld="Charles the Bald"),
        "d": answer(items[3].question, REFUSAL, kind="refusal"),
        "e": answer(items[4].question, "Europe.", kind="memory", targets=("parametric",), ttft=200.0),
        # The refusal sentence inside a reply counts as an abstention whatever the kind says.
        "f": answer(items[5].question, "Sorry, I could not find this in the sources", kind="model"),
    }
    return items, ScriptedAgent({item.question: script[item.id] for item in items})


def test_squad2_scores_of_hand_built_answers() -> None:
    items, agent = six_cases()
    report = evaluate_qa(agent, items, "always", "docs")
    assert agent.routes == [["docs"]] * 6
    assert (report.n, report.n_answerable, report.n_unanswerable) == (6, 3, 3)
    assert report.answerable_accuracy == pytest.approx(1 / 3)  # only "a"; the withheld "c" does not count
    assert report.unanswerable_abstention == pytest.approx(2 / 3)  # "d" and "f"; "e" answered
    # SQuAD 2.0: a (1) b (0) c abstained (0) | d abstained (1) e answered (0) f abstained (1).
    assert report.exact_match == pytest.approx(3 / 6)
    # Token F1 of "Rollo led them" is 0.5 and of "in 12th century" against "10th century" 0.4.
    assert report.f1 == pytest.approx((0.5 + 0.4 + 0 + 1 + 0 + 1) / 6)
    # Model citations on answerable questions: a -> gold, b -> not gold; a's inferred one is left out.
    assert report.citation_precision == pytest.approx(0.5)
    assert (report.citations, report.inferred_citations) == (2, 1)
    assert report.supported_but_wrong == pytest.approx(1 / 3)  # "b"
    assert report.abstention_rate == pytest.approx(0.5)  # c, d, f
    assert report.retrieval_rate == pytest.approx(5 / 6)  # all but "e"
    assert report.median_ttft_ms == 200.0
    assert report.kinds == {"model": 3, "refusal": 2, "memory": 1}

    d = report.to_dict()
    assert d["answerable_accuracy"] == 0.3333 and d["unanswerable_abstention"] == 0.6667
    assert d["citation_precision"] == 0.5 and d["inferred_citations"] == 1 and d["supported_but_wrong"] == 0.3333
    assert d["abstention_rate"] == d["refusal_rate"] == 0.5
    assert d["median_ttft_ms"] == 200.0 and d["kinds"]["refusal"] == 2
    assert d["n_answerable"] == 3 and d["n_unanswerable"] == 3
    assert d["examples"][0]["cited_correct"] == [True, False] and len(d["examples"]) == 5
    assert d["examples"][3]["citation_check"] == "none (unanswerable)"
    # Each rate's fraction, and its 95% Wilson interval, which holds the rate.
    assert d["counts"] == {"answerable_accuracy": [1, 3], "unanswerable_abstention": [2, 3],
                           "citation_precision": [1, 2], "supported_but_wrong": [1, 3]}
    for name, (lo, hi) in d["intervals_95"].items():
        assert lo <= d[name] <= hi
    assert d["intervals_95"]["answerable_accuracy"] == [0.0615, 0.7923]


def test_wilson_interval() -> None:
    from agentkit.eval.qa import wilson

    lo, hi = wilson(10, 98)  # squad2-mini's seed-0 sample: 98 answerable questions
    assert (round(lo, 3), round(hi, 3)) == (0.056, 0.178)
    assert wilson(0, 10)[0] == 0.0 and wilson(10, 10)[1] == 1.0
    assert wilson(0, 0) is None


def test_per_question_records() -> None:
    items, agent = six_cases()
    records: list[dict] = []
    evaluate_qa(agent, items, "routed", "docs", on_record=records.append)
    assert agent.routes == [None] * 6
    by_id = {r["id"]: r for r in records}
    assert list(by_id) == ["a", "b", "c", "d", "e", "f"]
    a = by_id["a"]
    assert (a["contains_answer"], a["exact_match"], a["f1"], a["citation_precision"]) == (True, 1.0, 0.5, 1.0)
    assert a["citations"][0] == {"marker": 1, "passage_id": "Normans#0", "inferred": False, "quote": "Rollo",
                                 "start": 17, "end": 22, "supported": True, "correct": True}
    assert a["citations"][1]["inferred"] is True and a["citations"][1]["correct"] is False
    assert by_id["b"]["supported_but_wrong"] is True and by_id["b"]["citation_precision"] == 0.0
    c = by_id["c"]
    assert c["abstained"] and c["exact_match"] == 0.0 and c["withheld"] == "Charles the Bald" and c["ttft_ms"] is None
    assert by_id["d"]["exact_match"] == 1.0 and by_id["d"]["contains_answer"] is None
    assert by_id["e"]["exact_match"] == 0.0 and by_id["e"]["route"] == ["parametric"] and not by_id["e"]["retrieved"]
    # "f" lists an answer but is marked unanswerable: abstaining is what scores.
    assert by_id["f"]["answerable"] is False and by_id["f"]["f1"] == 1.0
    assert all(r["latency_ms"] >= 0 for r in records)


def test_rates_without_questions_of_a_kind_are_none() -> None:
    items, agent = six_cases()
    only_answerable = evaluate_qa(agent, items[:3], "always", "docs")
    assert only_answerable.unanswerable_abstention is None and only_answerable.answerable_accuracy is not None
    only_unanswerable = evaluate_qa(agent, items[3:], "always", "docs").to_dict()
    assert only_unanswerable["answerable_accuracy"] is None and only_unanswerable["unanswerable_abstention"] == 0.6667
    assert only_unanswerable["citation_precision"] is None and only_unanswerable["supported_but_wrong"] is None
    assert only_unanswerable["median_ttft_ms"] == 200.0


def test_real_agent_with_fake_llm_and_memory_source() -> None:
    """FakeLLM answers one question from its source and declines the other, which the source
    does not answer: both score, by SQuAD 2.0 rules."""
    src = MemorySource("facts", "science facts")
    src.add([Passage("tides#0", "Tides are caused mainly by the gravitational pull of the Moon on the oceans.", "Tides")])

    def respond(messages, options):  # type: ignore[no-untyped-def]
        if "What causes tides?" in messages[-1].content:
            return "Reasoning: [1] says so.\nAnswer: Tides are caused by the pull of the Moon [1]."
        return f"Reasoning: [1] is about something else.\nAnswer: {REFUSAL}"

    items = [QAItem("What causes tides?", ["the Moon"], ["tides"]), QAItem("Who discovered penicillin?", [])]
    records: list[dict] = []
    report = evaluate_qa(Agent(FakeLLM(respond), [src], settings=AgentSettings(reader="cot")), items, "always", "facts", on_record=records.append)
    assert report.answerable_accuracy == 1.0 and report.citation_precision == 1.0 and report.citations == 1
    assert report.unanswerable_abstention == 1.0 and report.exact_match == 1.0 and report.abstention_rate == 0.5
    assert records[0]["citations"][0]["passage_id"] == "tides#0" and records[0]["citations"][0]["correct"] is True
    assert records[1]["abstained"] and records[1]["citation_precision"] is None
    assert records[0]["ttft_ms"] is not None and report.median_ttft_ms is not None


# --- questions file and sampling -------------------------------------------------------------


def test_load_questions_squad2_and_nq_open(tmp_path: Path) -> None:
    path = tmp_path / "qa.jsonl"
    rows = [
        {"_id": "q1", "question": "Who?", "answers": ["Rollo"], "answerable": True, "gold_ids": ["Normans#0"],
         "context_id": "Normans#0"},
        {"_id": "q2", "question": "What?", "answers": [], "answerable": False, "gold_ids": [], "context_id": "Normans#0"},
        {"question": "Where?", "answers": ["Italy"], "answerable": False},
        {"question": "Which?", "answerable": False},
        {"question": "When?", "answer": "1066"},
    ]
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    items = load_questions(path)
    assert [i.answerable for i in items] == [True, False, False, False, True]
    assert [i.id for i in items] == ["q1", "q2", "", "", ""]
    assert items[0].gold_ids == ["Normans#0"] and items[4].answers == ["1066"]
    path.write_text(json.dumps({"question": "Who?", "answers": ["x"], "answerable": "no"}) + "\n")
    with pytest.raises(InputError, match=r"qa\.jsonl:1: .*answerable"):
        load_questions(path)
    path.write_text(json.dumps({"question": "Who?"}) + "\n")
    with pytest.raises(InputError, match=r"qa\.jsonl:1: .*answers"):
        load_questions(path)


@pytest.mark.skipif(not SQUAD2.is_dir(), reason=f"evaluation data not found at {SQUAD2}")
def test_squad2_mini_counts() -> None:
    items = load_questions(SQUAD2 / "questions.jsonl")
    assert (len(items), sum(i.answerable for i in items)) == (626, 293)
    assert all(i.id and (i.gold_ids if i.answerable else not i.answers) for i in items)


def test_sample_is_fixed_by_the_seed() -> None:
    items = [QAItem(f"question {i}?", ["x"], id=str(i)) for i in range(50)]
    first = sample_questions(items, 5, seed=0)
    assert [i.id for i in first] == [i.id for i in sample_questions(items, 5, seed=0)]
    assert [i.id for i in first] != [i.id for i in sample_questions(items, 5, seed=1)]
    assert len({i.id for i in first}) == 5 and [int(i.id) for i in first] == sorted(int(i.id) for i in first)
    assert sample_questions(items, 80, seed=0) == items


# --- the command -----------------------------------------------------------------------------

CORPUS = [
    {"_id": "Normans#0", "title": "Normans", "text": "Rollo was the leader of the Norse who settled in Normandy."},
    {"_id": "Normans#1", "title": "Normans", "text": "The Normans adopted the Frankish language in the 10th century."},
    {"_id": "Complexity#0", "title": "Computational complexity theory",
     "text": "A decision problem has only two possible outputs, yes or no."},
]
QUESTIONS = [
    {"_id": "q1", "question": "Who was the leader of the Norse?", "answers": ["Rollo"], "answerable": True,
     "gold_ids": ["Normans#0"], "context_id": "Normans#0"},
    {"_id": "q2", "question": "When did the Normans adopt the Frankish language?", "answers": ["10th century"],
     "answerable": True, "gold_ids": ["Normans#1"], "context_id": "Normans#1"},
    {"_id": "q3", "question": "How many outputs has a decision problem?", "answers": ["two"], "answerable": True,
     "gold_ids": ["Complexity#0"], "context_id": "Complexity#0"},
    {"_id": "q4", "question": "Who was the leader of the Franks?", "answers": [], "answerable": False,
     "gold_ids": [], "context_id": "Normans#0"},
    {"_id": "q5", "question": "When did the Normans adopt Latin?", "answers": [], "answerable": False,
     "gold_ids": [], "context_id": "Normans#1"},
    {"_id": "q6", "question": "How many outputs has a function problem?", "answers": [], "answerable": False,
     "gold_ids": [], "context_id": "Complexity#0"},
]


@pytest.fixture()
def qa_files(tmp_path: Path) -> Path:
    (tmp_path / "corpus.jsonl").write_text("".join(json.dumps(r) + "\n" for r in CORPUS))
    (tmp_path / "questions.jsonl").write_text("".join(json.dumps(r) + "\n" for r in QUESTIONS))
    (tmp_path / "agentkit.yaml").write_text(
        f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\nrouter: {{semantic: {{embedder: lexical}}}}\n"
        "sources:\n  notes: {type: memory, description: notes about the Normans and complexity theory}\n"
    )
    return tmp_path


def run_qa(tmp: Path, *args: str) -> tuple[int, str]:
    result = CliRunner().invoke(cli, ["--config", str(tmp / "agentkit.yaml"), "eval", "qa",
                                      "--questions", str(tmp / "questions.jsonl"), "--no-progress", *args])
    return result.exit_code, result.output


def test_cli_sample_json_and_out(qa_files: Path) -> None:
    out = qa_files / "answers.jsonl"
    code, output = run_qa(qa_files, "--corpus", str(qa_files / "corpus.jsonl"), "--mode", "always",
                          "--sample", "4", "--seed", "0", "--json", "--out", str(out))
    assert code == 0, output
    report = json.loads(output)
    assert {"answerable_accuracy", "unanswerable_abstention", "exact_match", "f1", "citation_precision",
            "inferred_citations", "supported_but_wrong", "median_ttft_ms", "mean_latency_ms", "retrieval_rate",
            "n_answerable", "n_unanswerable", "abstention_rate", "kinds", "examples"} <= set(report)
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    expected = sample_questions(load_questions(qa_files / "questions.jsonl"), 4, 0)
    assert [r["id"] for r in lines] == [i.id for i in expected]
    assert report["n"] == 4 and report["n_answerable"] == sum(i.answerable for i in expected)
    assert report["retrieval_rate"] == 1.0 and all(r["route"] == ["corpus"] for r in lines)
    for r in lines:
        assert {"question", "answerable", "answers", "gold_ids", "reply", "kind", "withheld", "warnings",
                "contains_answer", "exact_match", "f1", "abstained", "citation_precision", "ttft_ms",
                "latency_ms", "supported_but_wrong"} <= set(r)
        for c in r["citations"]:
            assert {"marker", "passage_id", "inferred", "quote", "start", "end", "supported", "correct"} <= set(c)
    # The report is the aggregate of the lines.
    unanswerable = [r for r in lines if not r["answerable"]]
    assert report["unanswerable_abstention"] == round(sum(r["abstained"] for r in unanswerable) / len(unanswerable), 4)
    assert report["exact_match"] == round(sum(r["exact_match"] for r in lines) / 4, 4)
    assert sum(report["kinds"].values()) == 4
    # FakeLLM quotes the top passage: for "Who was the leader of the Norse?" the gold paragraph,
    # stored as chunk Normans#0#0 of document Normans#0, which counts as gold.
    q1 = next(r for r in lines if r["id"] == "q1")
    assert q1["contains_answer"] is True and q1["exact_match"] == 1.0 and not q1["abstained"]
    assert [(c["passage_id"], c["inferred"], c["correct"]) for c in q1["citations"]] == [("Normans#0#0", False, True)]


def test_cli_source_is_the_configured_agent(qa_files: Path) -> None:
    out = qa_files / "answers.jsonl"
    # --corpus fills the configured (in-memory) source, then the configured agent answers.
    code, output = run_qa(qa_files, "--source", "notes", "--corpus", str(qa_files / "corpus.jsonl"),
                          "--mode", "always", "--limit", "3", "--out", str(out))
    assert code == 0, output
    lines = [json.loads(line) for line in out.read_text().splitlines()]
    assert [r["route"] for r in lines] == [["notes"]] * 3 and all(r["run"] == "base" for r in lines)
    assert lines[0]["citations"][0]["passage_id"] == "Normans#0#0" and lines[0]["citations"][0]["correct"] is True
    assert "answerable accuracy" in output and "unanswerable abstention" in output and "n/a" in output
    assert "3 questions (3 answerable, 0 unanswerable)" in output


def test_cli_needs_corpus_or_source(qa_files: Path) -> None:
    code, output = run_qa(qa_files, "--json")
    assert code == 2 and "--corpus" in output and "--source" in output
    code, output = run_qa(qa_files, "--source", "nope")
    assert code == 2 and "no source named 'nope'" in output


def test_a_quoted_answer_counts_despite_curly_quotes() -> None:
    from agentkit.eval.qa import contains_answer, normalize

    assert normalize("“Robert Guiscard,” — he said") == "robert guiscard he said"
    assert contains_answer("The sources say: “Robert Guiscard, an other Norman” [1]", ["Robert Guiscard"])
    assert not contains_answer("The sources say: “Roberta Guiscardi” [1]", ["Robert Guiscard"])
    # A dash between words separates them; a hyphen inside a compound still matches either way.
    assert contains_answer("Dyrrachium—one of the naval bases", ["Dyrrachium"])
    assert contains_answer("in 1066–1087 he ruled", ["1066–1087"])
    assert contains_answer("exponential-time algorithms", ["exponential-time"])
    assert not contains_answer("Dyrrachiumone", ["Dyrrachium"])
    # A possessive is its word ("John Myhill's definition" names John Myhill), curly or straight.
    assert contains_answer("include John Myhill's definition (1960)", ["John Myhill"])
    assert contains_answer("Hisao Yamada’s paper", ["Hisao Yamada"])
    assert contains_answer("the Myhill's definition", ["Myhill's definition"])
    assert not contains_answer("Myhills were there", ["Myhill"])
    assert not contains_answer("Irish culture", ["Ireland"])
