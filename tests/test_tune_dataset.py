"""The tuning dataset: gold shown and cited in the agent's own prompt, distractors, refusals, the
question split, task/BEIR files, the generation filter, and eval qa's gold-id citation precision."""

from __future__ import annotations

import json
import random
from pathlib import Path

import pytest

from agentkit.config import AgentSettings
from agentkit import Agent
from agentkit.errors import InputError
from agentkit.eval.qa import QAItem, contains_answer, evaluate_qa, load_questions
from agentkit.ingest.pipeline import ingest
from agentkit.knowledge.memory import MemorySource
from agentkit.reasoning.citations import REFUSAL, parse_reply
from agentkit.reasoning.cot import load_template
from agentkit.testing import FakeLLM
from agentkit.tune.dataset import (
    ANSWER_IN_QUESTION,
    ANSWER_NOT_IN_PASSAGE,
    DUPLICATE,
    GENERATE_SCHEMA,
    GOLD_NOT_FOUND,
    INVALID_JSON,
    LONG_ANSWER,
    NO_ANSWER_PASSAGE,
    NOT_A_QUESTION,
    OFF_PASSAGE,
    TRIVIAL_ANSWER,
    DatasetReport,
    Example,
    GenerationStats,
    TaskItem,
    build_examples,
    corpus_passages,
    generate_items,
    load_beir_task,
    load_examples,
    load_task_file,
    reject_reason,
    split,
    write_dataset,
)
from agentkit.types import Passage

SCIFACT = Path(__file__).resolve().parents[1].parent / "shared" / "data" / "scifact"

PASSAGES = [
    Passage("tides#0", "Tides are caused mainly by the gravitational pull of the Moon on the Earth's oceans.", "Tides"),
    Passage("everest#0", "Mount Everest, at 8,849 metres, is the highest mountain on Earth above sea level.", "Mount Everest"),
    Passage("moon#0", "The Moon is the Earth's only natural satellite and orbits it at about 384,400 km.", "Moon"),
    Passage("mars#0", "Mars has two small moons, Phobos and Deimos, which orbit the red planet.", "Mars"),
    Passage("apollo#0", "Apollo 17, in December 1972, was the last crewed mission to land on the Moon.", "Apollo 17"),
    Passage("ocean#0", "Oceans cover about 71 percent of the Earth's surface and hold most of its water.", "Ocean"),
    Passage("volcano#0", "A volcano is an opening in the Earth's crust through which lava escapes.", "Volcano"),
    Passage("sun#0", "The Sun's gravity raises tides on the Earth too, about half as strong as lunar ones.", "Sun"),
]

ITEMS = [
    TaskItem("What causes the tides of the Earth's oceans?", ["the gravitational pull of the Moon"], ["tides#0"]),
    TaskItem("How high is Mount Everest above sea level on Earth?", ["8,849 metres"], ["everest#0"]),
    TaskItem("How far away does the Moon orbit the Earth?", ["384,400 km"], ["moon#0"]),
    TaskItem("How many moons orbit the planet Mars?", ["two"], gold_text=PASSAGES[3].text),
    TaskItem("When was the last crewed mission to the Moon?", ["December 1972"]),
    TaskItem("How much of the Earth's surface do oceans cover?", ["71 percent"], ["ocean"]),  # a document id
    TaskItem("What escapes through an opening in the Earth's crust?", ["lava"], ["volcano#0"]),
]


@pytest.fixture
def source() -> MemorySource:
    src = MemorySource("facts", "astronomy and geography")
    src.add(PASSAGES)
    return src


def shown(source: MemorySource, example: Example) -> list[Passage]:
    return source.get(example.passage_ids)


def test_gold_is_shown_and_cited_by_its_number(source: MemorySource) -> None:
    report = DatasetReport()
    examples = list(build_examples(source, ITEMS, refusal_rate=0.0, report=report, progress=False))
    assert len(examples) == len(ITEMS) and report.kinds == {"task": 6, "rag": 1} and not report.dropped
    for e in examples:
        evidence = shown(source, e)
        assert [p.id for p in evidence] == e.passage_ids  # every shown passage is a stored one
        gold_shown = [p for p in evidence if p.id in e.gold_ids]
        assert len(gold_shown) == 1
        assert 2 <= len(evidence) <= 4  # the gold and up to three distractors
        for p in evidence:
            if p.id not in e.gold_ids:  # a distractor is a real passage without the answer
                assert not contains_answer(p.text, e.answers)
        parsed = parse_reply(e.output, evidence, infer=False)
        assert parsed.reasoning and parsed.citations
        assert {c.passage.id for c in parsed.citations} == {gold_shown[0].id}
        k = e.passage_ids.index(gold_shown[0].id) + 1
        assert e.output.rstrip().endswith(f"[{k}].") and not e.refusal
        assert contains_answer(parsed.text, e.answers)
    by_question = {e.question: e for e in examples}
    assert by_question[ITEMS[3].question].gold_ids == ["mars#0"]  # found from the gold text
    assert by_question[ITEMS[4].question].gold_ids == ["apollo#0"]  # found by the answer (rag)
    assert by_question[ITEMS[5].question].gold_ids == ["ocean#0"]  # every chunk of the document


def test_messages_are_the_agents_prompt(source: MemorySource) -> None:
    e = next(build_examples(source, ITEMS[:1], refusal_rate=0.0, progress=False))
    evidence = shown(source, e)
    rendered = [m.to_dict() for m in load_template("answer").render(question=e.question, passages=evidence)]
    assert e.messages == rendered
    assert e.instruction == rendered[0]["content"] and e.messages[0]["role"] == "system"
    assert e.input == rendered[-1]["content"] and e.input.startswith("Sources:\n[1] ")
    assert e.input.endswith(f"Question: {e.question}")
    assert [m["role"] for m in e.messages] == ["system", "user", "assistant", "user"]  # with the few-shot pair

    # The agent itself, given the same two passages ranked in this order, sends the same messages.
    two = next(build_examples(source, ITEMS[1:2], distractors=1, refusal_rate=0.0, progress=False))

    class Ranked:
        name, description = "facts", "the same passages, in the example's order"

        def search(self, query: str, k: int = 5, filters: object = None) -> list[Passage]:
            return [Passage(**{**p.to_dict(), "score": 2.0 - i}) for i, p in enumerate(shown(source, two))]

    llm = FakeLLM()
    # Tune data is written in the chain-of-thought reader's prompt (agent.reader: cot).
    Agent(llm, [Ranked()], settings=AgentSettings(reader="cot")).ask(two.question, route=["facts"])
    assert [m.to_dict() for m in llm.calls[0][0]] == two.messages


def test_refusals_show_no_gold_and_refuse(source: MemorySource) -> None:
    report = DatasetReport()
    examples = list(build_examples(source, ITEMS, refusal_rate=1.0, report=report, progress=False))
    assert report.refusals == len(examples) == len(ITEMS)
    for e in examples:
        evidence = shown(source, e)
        assert e.refusal and e.gold_ids and not set(e.gold_ids) & set(e.passage_ids)
        assert not any(contains_answer(p.text, e.answers) for p in evidence)
        assert e.output.endswith(f"Answer: {REFUSAL}")
        assert parse_reply(e.output, evidence).citations == []


def test_refusal_rate_and_shuffle_are_seeded(source: MemorySource) -> None:
    items = ITEMS * 6
    examples = list(build_examples(source, items, refusal_rate=0.2, seed=3, progress=False))
    again = list(build_examples(source, items, refusal_rate=0.2, seed=3, progress=False))
    assert [e.to_dict() for e in examples] == [e.to_dict() for e in again]
    assert 0 < sum(e.refusal for e in examples) < len(examples)
    positions = {next(i for i, pid in enumerate(e.passage_ids) if pid in e.gold_ids) for e in examples if not e.refusal}
    assert len(positions) >= 3  # the gold is not always [1]
    assert len({e.id for e in examples}) == len(examples)


def test_gold_missed_by_retrieval_is_fetched_and_missing_gold_is_dropped(source: MemorySource) -> None:
    missed = TaskItem("Which satellite is natural and lunar?", ["Moon"], ["moon#0", "tides#0"])
    absent = TaskItem("What causes the tides?", ["the Moon"], ["nowhere#0"])
    unanswerable = TaskItem("What colour is a volcano's lava?", ["bright orange"])
    report = DatasetReport()
    examples = list(build_examples(source, [missed, absent, unanswerable], refusal_rate=0.0, report=report, progress=False))
    assert len(examples) == 1 and set(examples[0].gold_ids) == {"moon#0", "tides#0"}
    assert set(examples[0].passage_ids) & {"moon#0", "tides#0"}
    assert report.dropped == {GOLD_NOT_FOUND: 1, NO_ANSWER_PASSAGE: 1}
    assert "dropped 2" in report.summary()


def test_evidence_budget_drops_distractors_first(source: MemorySource) -> None:
    e = next(build_examples(source, ITEMS[:1], refusal_rate=0.0, count_tokens=lambda t: len(t.split()),
                            evidence_tokens=40, progress=False))
    assert "tides#0" in e.passage_ids and len(e.passage_ids) == 2


def test_split_keeps_each_question_on_one_side(source: MemorySource) -> None:
    examples = list(build_examples(source, ITEMS * 2, refusal_rate=0.3, progress=False))
    train, heldout = split(examples, heldout=0.3, seed=1)
    assert train and heldout and len(train) + len(heldout) == len(examples)
    assert not {e.question for e in train} & {e.question for e in heldout}
    assert split(examples, heldout=0.3, seed=1) == (train, heldout)


def test_written_heldout_file_is_eval_qa_input(source: MemorySource, tmp_path: Path) -> None:
    report = DatasetReport()
    examples = list(build_examples(source, ITEMS, refusal_rate=0.0, report=report, progress=False))
    write_dataset(examples, tmp_path / "data", heldout=0.3, report=report)
    assert report.train + report.heldout == len(ITEMS) and report.heldout >= 1
    line = json.loads((tmp_path / "data" / "train.jsonl").read_text().splitlines()[0])
    assert set(line) >= {"id", "kind", "instruction", "input", "output", "messages", "question", "answers",
                         "gold_ids", "passage_ids"}
    assert [e.to_dict() for e in load_examples(report.paths["train"])] == [e.to_dict() for e in split(examples, 0.3)[0]]
    items = load_questions(report.paths["heldout"])
    assert len(items) == report.heldout and all(item.gold_ids and item.answers for item in items)
    assert "heldout.jsonl" in report.summary() and "7 examples" in report.summary()


# --- task files --------------------------------------------------------------------------------


def test_task_file_accepts_the_common_layouts(tmp_path: Path) -> None:
    lines = [
        {"question": "What causes tides?", "answers": ["the Moon", "lunar gravity"], "gold_ids": ["tides#0"]},
        {"query": "How high is Everest?", "answer": "8,849 metres", "passage_id": "everest#0", "id": "q2"},
        {"input": "How many moons has Mars?", "output": "two", "context": "Mars has two small moons."},
        {"text": "The Moon orbits the Earth.", "doc_ids": ["moon"]},
        {"question": "when was the last moon landing", "answer": ["December 1972"]},
    ]
    path = tmp_path / "task.jsonl"
    path.write_text("\n".join(json.dumps(line) for line in lines) + "\n\n")
    items = load_task_file(path)
    assert [i.question for i in items][:2] == ["What causes tides?", "How high is Everest?"]
    assert items[0].answers == ["the Moon", "lunar gravity"] and items[0].gold_ids == ["tides#0"]
    assert items[1].answers == ["8,849 metres"] and items[1].gold_ids == ["everest#0"] and items[1].id == "q2"
    assert items[2].gold_text == "Mars has two small moons." and items[2].kind == "task"
    assert items[3].answers == [] and items[3].gold_ids == ["moon"]
    assert items[4].kind == "rag"
    assert len(load_task_file(path, limit=2)) == 2


@pytest.mark.parametrize(
    ("line", "message"),
    [
        ('{"answers": ["x"]}', "no question"),
        ('{"question": "Why?"}', "no answer and no gold evidence"),
        ('{"question": "Why?", "answers": {"a": 1}}', "'answer' must be a string or a list"),
        ("not json", "not a task line"),
    ],
)
def test_task_file_errors_name_the_line(tmp_path: Path, line: str, message: str) -> None:
    path = tmp_path / "task.jsonl"
    path.write_text('{"question": "What causes tides?", "answer": "the Moon"}\n' + line + "\n")
    with pytest.raises(InputError, match=rf"task\.jsonl:2: .*{message}"):
        load_task_file(path)


def test_beir_task_on_scifact(tmp_path: Path) -> None:
    if not (SCIFACT / "queries.jsonl").is_file():
        pytest.skip(f"SciFact is not at {SCIFACT} (see ../shared/data/README.md)")
    items = load_beir_task(SCIFACT / "queries.jsonl", SCIFACT / "qrels.tsv", limit=3)
    assert len(items) == 3 and all(i.gold_ids and not i.answers and i.kind == "task" for i in items)
    # A small corpus: the judged abstracts and 40 others, ingested as `agentkit ingest` does.
    wanted = {g for i in items for g in i.gold_ids}
    lines = (SCIFACT / "corpus.jsonl").read_text(encoding="utf-8").splitlines()
    keep = [line for line in lines if json.loads(line)["_id"] in wanted] + lines[:40]
    (tmp_path / "corpus.jsonl").write_text("\n".join(keep) + "\n", encoding="utf-8")
    store = MemorySource("scifact")
    ingest(tmp_path / "corpus.jsonl", store, progress=False)

    examples = list(build_examples(store, items, refusal_rate=0.0, progress=False))
    assert len(examples) == 3
    for item, e in zip(items, examples):
        evidence = store.get(e.passage_ids)
        gold = [p for p in evidence if p.id in e.gold_ids]
        assert len(gold) == 1 and gold[0].doc_id in item.gold_ids
        assert all(p.doc_id not in item.gold_ids for p in evidence if p is not gold[0])
        assert all(pid.split("#")[0] in item.gold_ids for pid in e.gold_ids)  # every chunk of the judged abstract
        k = evidence.index(gold[0]) + 1
        assert f"\nAnswer: Source [{k}] addresses this claim: " in e.output
        assert e.answers[0] in " ".join(gold[0].text.split())
        assert {c.passage.id for c in parse_reply(e.output, evidence).citations} == {gold[0].id}


def test_corpus_passages_have_the_ids_ingest_stores(tmp_path: Path) -> None:
    (tmp_path / "docs" / "sub").mkdir(parents=True)
    (tmp_path / "docs" / "tides.md").write_text("# Tides\n\n" + "Tides follow the Moon. " * 60)
    (tmp_path / "docs" / "sub" / "mars.txt").write_text("Mars has two moons.")
    store = MemorySource("docs")
    ingest(tmp_path / "docs", store, chunk_tokens=50, overlap=10, progress=False)
    passages = list(corpus_passages(tmp_path / "docs", chunk_tokens=50, overlap=10))
    assert len(passages) == store.count() > 2
    assert [p.text for p in store.get([p.id for p in passages])] == [p.text for p in passages]


# --- generated items ---------------------------------------------------------------------------

APOLLO = PASSAGES[4]


@pytest.mark.parametrize(
    ("question", "answer", "reason"),
    [
        ("When did Apollo 17 land on the Moon?", "December 1972", None),
        ("When did Apollo 17 land on the Moon", "December 1972", NOT_A_QUESTION),
        ("When did Apollo 17 land on the Moon?", "the", TRIVIAL_ANSWER),
        ("When did Apollo 17 land on the Moon?", "July 1969", ANSWER_NOT_IN_PASSAGE),
        ("When did Apollo 17 land on the Moon?", "Dec 1972", ANSWER_NOT_IN_PASSAGE),  # not copied
        ("What was Apollo 17?", APOLLO.text, LONG_ANSWER),
        ("Was Apollo 17 the last crewed mission to the Moon?", "Apollo 17", ANSWER_IN_QUESTION),
        ("Who painted the Mona Lisa?", "December 1972", OFF_PASSAGE),
    ],
)
def test_reject_reason(question: str, answer: str, reason: str | None) -> None:
    assert reject_reason(question, answer, APOLLO.text) == reason


def test_generation_keeps_only_filtered_items() -> None:
    good = {"question": "When did Apollo 17 land on the Moon?", "answer": "December 1972"}
    llm = FakeLLM([
        good,
        {"question": "When did Apollo 17 land on the Moon?", "answer": "July 1969"},
        "this is not JSON",
        {"question": "What did Apollo 17 do in December 1972", "answer": "land"},
        good,  # the same question again
        {"question": "What was Apollo 17?", "answer": APOLLO.text},
        {"question": "How many moons does Mars have?", "answer": "two"},  # repeats: then a duplicate
    ])
    stats = GenerationStats()
    items = list(generate_items(llm, [APOLLO, APOLLO, APOLLO, PASSAGES[3]], per_passage=2, stats=stats, progress=False))
    assert [(i.question, i.answers, i.gold_ids, i.kind) for i in items] == [
        (good["question"], ["December 1972"], ["apollo#0"], "generated"),
        ("How many moons does Mars have?", ["two"], ["mars#0"], "generated"),
    ]
    assert stats.kept == 2 and stats.passages == 4
    assert stats.rejected == {ANSWER_NOT_IN_PASSAGE: 1, INVALID_JSON: 1, NOT_A_QUESTION: 1, LONG_ANSWER: 1, DUPLICATE: 2}
    assert "kept 2 of 8" in stats.summary() and ANSWER_NOT_IN_PASSAGE in stats.summary()
    options = [o for _, o in llm.calls]
    assert all(o.json_schema == GENERATE_SCHEMA and o.temperature <= 0.5 for o in options)
    assert len({o.seed for o in options}) == len(options)
    assert APOLLO.text in llm.calls[0][0][-1].content
    assert "different question" in llm.calls[1][0][-1].content  # the second ask names the first question


def test_generated_items_become_examples(source: MemorySource) -> None:
    llm = FakeLLM(lambda messages, options: (
        {"question": "How many moons does Mars have?", "answer": "two"} if "Mars" in messages[-1].content
        else {"question": "Who?", "answer": "nobody"}))
    report = DatasetReport(generation=GenerationStats())
    items = generate_items(llm, PASSAGES, max_passages=4, seed=0, stats=report.generation, progress=False)
    examples = list(build_examples(source, items, refusal_rate=0.0, report=report, progress=False))
    assert report.generation is not None and report.generation.passages == 4
    assert all(e.kind == "generated" and e.gold_ids[0] in e.passage_ids for e in examples)
    assert "generated questions: kept" in report.summary()


def test_max_passages_is_a_seeded_sample_in_order() -> None:
    llm = FakeLLM({"question": "Which?", "answer": "x"})
    seen: list[list[str]] = []
    for seed in (0, 0, 1):
        llm.calls.clear()
        list(generate_items(llm, PASSAGES, max_passages=3, seed=seed, progress=False))
        seen.append([m[-1].content.split("\n")[0] for m, _ in llm.calls])
    assert seen[0] == seen[1] and len(seen[0]) == 3
    order = [f"Passage: {p.title}" for p in PASSAGES]
    assert all(sorted(s, key=order.index) == s for s in seen)


@pytest.mark.real_model
def test_generation_with_the_bundled_model() -> None:
    from agentkit.llm.llama_cpp import LlamaCppLLM

    stats = GenerationStats()
    llm = LlamaCppLLM(seed=0)
    try:
        items = list(generate_items(llm, PASSAGES[:4], stats=stats, progress=False))
    finally:
        llm.close()
    print(f"\n{stats.summary()}")
    by_id = {p.id: p for p in PASSAGES}
    assert stats.kept + sum(stats.rejected.values()) == 4
    for item in items:
        assert contains_answer(by_id[item.gold_ids[0]].text, item.answers)
        assert reject_reason(item.question, item.answers[0], by_id[item.gold_ids[0]].text) is None


# --- eval qa with gold ids ---------------------------------------------------------------------


def test_eval_qa_citation_precision_uses_gold_ids(tmp_path: Path) -> None:
    near = Passage("notes#0", "People say the Moon is made of cheese; the Moon is not.", "Notes")
    gold = Passage("tides#0", PASSAGES[0].text, "Tides")
    src = MemorySource("facts")
    src.add([near, gold])

    def cite_notes(messages, options):  # type: ignore[no-untyped-def]
        number = next(line.split("]")[0][1:] for line in messages[-1].content.splitlines() if line.endswith("] Notes"))
        return f"Reasoning: source [{number}].\nAnswer: the Moon [{number}]."

    agent = Agent(FakeLLM(cite_notes), [src], settings=AgentSettings(reader="cot"))
    question = "What causes the tides? Is it the Moon?"
    # The cited passage contains the answer, so without gold ids the citation counts as correct ...
    assert evaluate_qa(agent, [QAItem(question, ["the Moon"])], "always", "facts").citation_precision == 1.0
    # ... but it is not the gold passage; a document id counts for every chunk of the document.
    for gold_ids, expected in ((["tides#0"], 0.0), (["notes#0"], 1.0), (["notes"], 1.0)):
        report = evaluate_qa(agent, [QAItem(question, ["the Moon"], gold_ids)], "always", "facts")
        assert report.citation_precision == expected
        assert report.examples[0]["citation_check"] == "gold ids"
        assert report.examples[0]["cited_correct"] == [bool(expected)]

    path = tmp_path / "qa.jsonl"
    path.write_text(json.dumps({"question": question, "answers": ["the Moon"], "gold_ids": ["tides#0"]}) + "\n"
                    + json.dumps({"question": question, "answer": "the Moon"}) + "\n")
    assert [i.gold_ids for i in load_questions(path)] == [["tides#0"], []]
    path.write_text(json.dumps({"question": question, "answers": ["x"], "gold_ids": {"a": 1}}) + "\n")
    with pytest.raises(InputError, match=r"qa\.jsonl:1: .*gold_ids"):
        load_questions(path)


def test_random_is_not_global() -> None:
    state = random.getstate()
    src = MemorySource("facts")
    src.add(PASSAGES)
    list(build_examples(src, ITEMS, refusal_rate=0.5, progress=False))
    assert random.getstate() == state


def test_evidence_use_scores_gold_citations_refusals_and_format() -> None:
    from agentkit.tune.dataset import Example
    from agentkit.eval.adapters import evaluate_evidence_use

    def example(i: int, gold: str | None) -> Example:
        shown = ["a#0", "b#0", "c#0"]
        return Example(
            id=f"e{i}", kind="task", messages=[{"role": "user", "content": f"Sources: ...\nQuestion: q{i}?"}],
            output="", question=f"q{i}?", answers=["blue"], gold_ids=[gold] if gold else ["z#0"],
            passage_ids=shown, refusal=gold is None,
        )

    examples = [example(0, "b#0"), example(1, "c#0"), example(2, None), example(3, "a#0")]
    replies = {
        "q0?": "Reasoning: [2] says so.\nAnswer: blue [2].",                 # gold cited, exact
        "q1?": "Reasoning: [1].\nAnswer: It is blue [1][3].",                # gold among two marks
        "q2?": f"Reasoning: none do.\nAnswer: {REFUSAL}",                     # a correct refusal
        "q3?": f"Answer: {REFUSAL}",                                          # a false refusal
    }
    llm = FakeLLM(lambda messages, options: replies[messages[-1].content.rsplit("Question: ", 1)[1]])
    report = evaluate_evidence_use(llm, examples, label="fake")
    assert report.n == 4 and report.answerable == 3
    assert report.gold_cited == pytest.approx(2 / 3)
    assert report.citation_precision == pytest.approx(2 / 3)  # [2] and [3] of the three marks made
    assert report.correct_refusals == 1.0 and report.false_refusals == pytest.approx(1 / 3)
    assert report.formatted == 1.0
    assert report.exact_match == pytest.approx(2 / 3)
