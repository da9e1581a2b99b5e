"""Instruction-tuning data from the user's knowledge base: questions over numbered evidence, in the
agent's own prompt, answered in its reply format and citing the gold passage (as RA-DIT does).

Items (a question, its answers, where its evidence is) come from a labelled task file, BEIR
queries + qrels, or the model itself (`generate_items`, filtered); `build_examples` retrieves
distractors for each from a knowledge source and renders one JSON-lines example per item.

Over 600 lines (about 710) because one example is built in one pass (its item, gold passage and
distractors, the reply that cites them, the checks on generated questions) over the same TaskItem
and Example fields; split apart, each module would hold a fragment of that one path.
"""

from __future__ import annotations

import hashlib
import json
import os
import random
import re
import sys
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from agentkit.errors import InputError
from agentkit.eval.qa import contains_answer, normalize, strip_marks
from agentkit.reasoning.citations import REFUSAL
from agentkit.reasoning.cot import load_template
from agentkit.text import overlap, terms
from agentkit.types import Message, Passage

if TYPE_CHECKING:
    from agentkit.ingest.chunking import Tokenizer
    from agentkit.knowledge.base import KnowledgeSource
    from agentkit.llm.base import LLM

PathLike = str | os.PathLike[str]

#: `task`: a labelled item with gold evidence (ids, qrels or context text); `rag`: a labelled item
#: with answers only, whose gold is the best retrieved passage containing an answer (distant
#: supervision); `generated`: a question the model wrote about a passage (`generate_items`).
Kind = Literal["rag", "task", "generated"]

#: Passages fetched beyond those shown, so that excluded ones (gold, answer-bearing) can be replaced.
_SPARE = 4
#: A generated answer longer than this many words is a sentence, not a short answer.
MAX_ANSWER_WORDS = 12
#: Share of a generated question's content words that must occur in its passage.
MIN_QUESTION_OVERLAP = 0.3
#: A sentence longer than this is not quoted in the reasoning line.
_MAX_QUOTE_WORDS = 40

# Why an item yields no example (DatasetReport.dropped) ...
GOLD_NOT_FOUND = "gold passage not found in the source"
NO_ANSWER_PASSAGE = "no retrieved passage contains the answer"
OVER_BUDGET = "gold passage does not fit the evidence budget"
# ... and why a generated question is rejected (GenerationStats.rejected), in the order checked.
INVALID_JSON = "reply is not JSON with a question and an answer"
NOT_A_QUESTION = "question does not end with '?'"
TRIVIAL_ANSWER = "answer is empty or only stopwords"
ANSWER_NOT_IN_PASSAGE = "answer not in the passage"
LONG_ANSWER = f"answer longer than {MAX_ANSWER_WORDS} words"
ANSWER_IN_QUESTION = "question contains the answer"
OFF_PASSAGE = "question shares too few words with the passage"
DUPLICATE = "duplicate question"


@dataclass
class TaskItem:
    """One question to build an example from.

    `gold_ids` are passage ids (`doc#3`) or document ids (every chunk of the document counts);
    `gold_text` is the gold passage's text when the ids are not known. Without `answers` the
    answer is the gold passage's sentence that bears most on the question (BEIR claims).
    """

    question: str
    answers: list[str] = field(default_factory=list)
    gold_ids: list[str] = field(default_factory=list)
    gold_text: str = ""
    id: str = ""
    generated: bool = False

    @property
    def kind(self) -> Kind:
        if self.generated:
            return "generated"
        return "task" if self.gold_ids or self.gold_text else "rag"


@dataclass
class Example:
    """One training example; `to_dict()` is its JSON line.

    (`instruction`, `input`, `output`) is the Alpaca layout; `messages` + `output` is the agent's
    exact prompt and the reply to learn. `gold_ids` are the passages that count as correct
    evidence (for a refusal: the ones withheld); `passage_ids` the passages shown, in order.
    """

    id: str
    kind: Kind
    messages: list[dict[str, str]]
    output: str
    question: str
    answers: list[str]
    gold_ids: list[str]
    passage_ids: list[str]
    refusal: bool = False

    @property
    def instruction(self) -> str:
        return self.messages[0]["content"]

    @property
    def input(self) -> str:
        return self.messages[-1]["content"]

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "kind": self.kind,
            "instruction": self.instruction,
            "input": self.input,
            "output": self.output,
            "messages": self.messages,
            "question": self.question,
            "answers": self.answers,
            "gold_ids": self.gold_ids,
            "passage_ids": self.passage_ids,
            "refusal": self.refusal,
        }


@dataclass
class GenerationStats:
    """What the filter of `generate_items` kept and rejected, per reason."""

    passages: int = 0
    kept: int = 0
    rejected: Counter[str] = field(default_factory=Counter)

    def summary(self) -> str:
        asked = self.kept + sum(self.rejected.values())
        text = f"generated questions: kept {self.kept} of {asked} from {_n(self.passages, 'passage')}"
        if self.rejected:
            text += " (rejected: " + ", ".join(f"{why} {n}" for why, n in self.rejected.most_common()) + ")"
        return text


@dataclass
class DatasetReport:
    """What a dataset build did: examples per kind, items dropped per reason, files written."""

    kinds: Counter[str] = field(default_factory=Counter)
    refusals: int = 0
    dropped: Counter[str] = field(default_factory=Counter)
    generation: GenerationStats | None = None
    train: int = 0
    heldout: int = 0
    paths: dict[str, str] = field(default_factory=dict)

    def summary(self) -> str:
        total = sum(self.kinds.values())
        kinds = ", ".join(f"{kind} {n}" for kind, n in sorted(self.kinds.items()))
        parts = [f"{_n(total, 'example')}" + (f" ({kinds}; {self.refusals} refusals)" if total else "")]
        if self.train or self.heldout:
            parts.append(f"train {self.train}, heldout {self.heldout}")
        if self.dropped:
            why = ", ".join(f"{reason} {n}" for reason, n in self.dropped.most_common())
            parts.append(f"dropped {sum(self.dropped.values())} ({why})")
        if self.generation is not None:
            parts.append(self.generation.summary())
        if self.paths:
            parts.append("wrote " + ", ".join(self.paths.values()))
        return "; ".join(parts)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


# --- items from files ------------------------------------------------------------------------

_QUESTION_KEYS = ("question", "query", "input", "text")
_ANSWER_KEYS = ("answers", "answer", "output")
_ID_KEYS = ("gold_ids", "doc_ids", "passage_id", "passage_ids", "doc_id")
_TEXT_KEYS = ("context", "passage")
_TASK_LINE = 'a task line: {"question": ..., "answer": ..., optional "gold_ids" or "context"}'


def load_task_file(path: PathLike, limit: int | None = None) -> list[TaskItem]:
    """Labelled questions from JSON lines: `question` (or `query`/`input`/`text`), `answer`/`answers`/
    `output` (a string or a list), and optional gold evidence: ids in `gold_ids`/`doc_ids`/
    `passage_id`, or the passage's text in `context`/`passage`. A line without answers needs gold
    evidence (its answer is then taken from the gold passage). A bad line is an InputError naming
    the file and the line."""
    from agentkit.eval.metrics import read_jsonl

    return read_jsonl(Path(path), _parse_task_line, _TASK_LINE, limit)


def _parse_task_line(row: dict[str, Any]) -> TaskItem:
    question = _first(row, _QUESTION_KEYS)
    if not isinstance(question, str) or not question.strip():
        raise InputError(f"no question: expected a non-empty string in one of {', '.join(map(repr, _QUESTION_KEYS))}")
    answers = _strings(_first(row, _ANSWER_KEYS), "answer")
    gold_ids: list[str] = []
    for key in _ID_KEYS:
        gold_ids += _strings(row.get(key), key)
    gold_text = _first(row, _TEXT_KEYS) or ""
    if not isinstance(gold_text, str):
        raise InputError(f"{'/'.join(_TEXT_KEYS)} must be the gold passage's text (a string), got {type(gold_text).__name__}")
    if not answers and not gold_ids and not gold_text.strip():
        raise InputError(f"no answer and no gold evidence: give one of {', '.join(map(repr, _ANSWER_KEYS + _ID_KEYS + _TEXT_KEYS))}")
    item_id = row.get("id", row.get("_id", ""))
    return TaskItem(question.strip(), answers, list(dict.fromkeys(gold_ids)), gold_text.strip(), str(item_id))


def _first(row: dict[str, Any], keys: Sequence[str]) -> Any:
    return next((row[k] for k in keys if row.get(k) not in (None, "", [])), None)


def _strings(value: Any, key: str) -> list[str]:
    if value is None:
        return []
    if isinstance(value, (str, int)):
        value = [value]
    if not isinstance(value, list) or not all(isinstance(v, (str, int)) for v in value):
        raise InputError(f"{key!r} must be a string or a list of strings, got {json.dumps(value)[:80]}")
    return [str(v).strip() for v in value if str(v).strip()]


def load_beir_task(queries: PathLike, qrels: PathLike, limit: int | None = None) -> list[TaskItem]:
    """BEIR queries (`queries.jsonl`: `_id`, `text`) with their judged documents (qrels TSV) as gold.

    Claims (SciFact) have no short answer, so these items carry none: `build_examples` answers
    "Source [k] addresses this claim: <the gold passage's sentence that shares most words with the
    claim> [k]." Queries without a positive judgement are left out.
    """
    from agentkit.eval.metrics import read_jsonl
    from agentkit.eval.retrieval import load_qrels

    def parse(row: dict[str, Any]) -> tuple[str, str]:
        text = row["text"]
        if not isinstance(text, str) or not text.strip():
            raise InputError('"text" must be a non-empty string')
        return str(row["_id"]), text.strip()

    texts = read_jsonl(Path(queries), parse, 'a BEIR query line: {"_id": ..., "text": ...}')
    try:
        judged = load_qrels(Path(qrels))
    except ValueError as exc:  # a score that is not a number
        raise InputError(f"{qrels}: not a BEIR qrels TSV ({exc})") from None
    items = [TaskItem(text, gold_ids=list(judged[qid]), id=qid) for qid, text in texts if judged.get(qid)]
    if not items:
        raise InputError(f"no query in {queries} has a positive judgement in {qrels}; check that the ids match")
    return items[:limit] if limit else items


def corpus_passages(
    paths: PathLike | Iterable[PathLike],
    *,
    chunk_tokens: int = 200,
    overlap: int = 40,
    tokenizer: Tokenizer | None = None,
) -> Iterator[Passage]:
    """The chunks `agentkit ingest` writes for `paths`, with the same ids (`doc_id#i`) as long as
    `chunk_tokens`, `overlap` and `tokenizer` match the ingest; unreadable files are logged and skipped."""
    from agentkit.ingest.chunking import chunk_document
    from agentkit.ingest.loaders import load_path

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    seen: set[str] = set()
    for path in paths:
        for doc in load_path(path):
            if doc.id in seen:  # ingest keeps the first of two documents with one id, too
                continue
            seen.add(doc.id)
            yield from chunk_document(doc, chunk_tokens, overlap, tokenizer)


# --- examples ---------------------------------------------------------------------------------


def build_examples(
    source: KnowledgeSource,
    items: Iterable[TaskItem],
    *,
    k: int = 4,
    distractors: int = 3,
    seed: int = 0,
    refusal_rate: float = 0.1,
    count_tokens: Callable[[str], int] | None = None,
    evidence_tokens: int = 1200,
    report: DatasetReport | None = None,
    progress: bool = True,
) -> Iterator[Example]:
    """One retrieval-augmented example per item, rendered exactly as the agent prompts.

    The question is searched in `source` (`k` passages, and a few more to replace excluded ones);
    the gold passage is shown even when retrieval missed it (fetched with `get`); up to
    `distractors` retrieved passages that are neither gold nor contain an answer are shown beside
    it, best-ranked first, and the order is shuffled so the gold's number varies. A share
    `refusal_rate` of examples shows only non-gold passages and teaches the refusal. With
    `count_tokens` (the model's tokenizer), distractors are dropped until the evidence fits
    `evidence_tokens`, the agent's budget. Items without a usable gold are counted in
    `report.dropped` and skipped.
    """
    if distractors < 0:
        raise ValueError(f"distractors must be at least 0, got {distractors}")
    if not 0 <= refusal_rate <= 1:
        raise ValueError(f"refusal_rate must be between 0 and 1, got {refusal_rate}")
    from tqdm import tqdm

    report = report if report is not None else DatasetReport()
    rng = random.Random(seed)
    template = load_template("answer")
    depth = max(k, distractors + 1) + _SPARE
    used_ids: Counter[str] = Counter()
    total = len(items) if isinstance(items, Sequence) else None
    bar = tqdm(items, total=total, desc="examples", unit="q", file=sys.stderr, disable=None if progress else True)
    for item in bar:
        # One generator per item, drawn even for items that are dropped, so that a drop does not
        # change the refusals and orders of the items after it.
        item_rng = random.Random(rng.getrandbits(64))
        refuse = item_rng.random() < refusal_rate
        retrieved = source.search(item.question, k=depth)
        gold = _find_gold(source, item, retrieved)
        if not gold:
            report.dropped[GOLD_NOT_FOUND if item.gold_ids or item.gold_text else NO_ANSWER_PASSAGE] += 1
            continue
        shown_gold = next((p for p in gold if item.answers and contains_answer(p.text, item.answers)), gold[0])
        gold_ids = {p.id for p in gold}
        negatives = _deduplicate(
            [p for p in retrieved if p.id not in gold_ids and not (item.answers and contains_answer(p.text, item.answers))],
            avoid=gold,
        )
        refuse = refuse and bool(negatives)
        shown = negatives[: distractors + 1] if refuse else [shown_gold, *negatives[:distractors]]
        if count_tokens is not None:
            shown = _fit(shown, evidence_tokens, count_tokens)
            if not shown:
                report.dropped[OVER_BUDGET] += 1
                continue
        item_rng.shuffle(shown)
        answers, output = _reply(item, shown_gold, shown, refuse)
        messages = template.render(question=item.question, passages=shown)
        example_id = f"{item.kind}-{item.id or hashlib.sha1(item.question.encode()).hexdigest()[:10]}"
        used_ids[example_id] += 1
        if used_ids[example_id] > 1:
            example_id += f"-{used_ids[example_id]}"
        report.kinds[item.kind] += 1
        report.refusals += refuse
        yield Example(
            id=example_id,
            kind=item.kind,
            messages=[m.to_dict() for m in messages],
            output=output,
            question=item.question,
            answers=answers,
            gold_ids=[p.id for p in gold],
            passage_ids=[p.id for p in shown],
            refusal=refuse,
        )


def _find_gold(source: KnowledgeSource, item: TaskItem, retrieved: list[Passage]) -> list[Passage]:
    """The passages that count as the item's evidence, retrieved ones first."""
    if item.gold_ids:
        gold: list[Passage] = []
        for gid in item.gold_ids:
            exact = [p for p in retrieved if p.id == gid] or _get(source, [gid])
            # Not a passage id: a document id, and every chunk of the document is gold.
            gold += exact or [p for p in retrieved if p.doc_id == gid] + _document(source, gid)
        return _unique(gold)
    if item.gold_text:
        found = [p for p in retrieved if _covers(item.gold_text, p.text)]
        if not found:
            found = [p for p in source.search(item.gold_text[:2000], k=_SPARE) if _covers(item.gold_text, p.text)]
        return found
    return [p for p in retrieved if contains_answer(p.text, item.answers)]


def _get(source: KnowledgeSource, ids: list[str]) -> list[Passage]:
    get = getattr(source, "get", None)
    return list(get(ids)) if get is not None else []


def _document(source: KnowledgeSource, doc_id: str) -> list[Passage]:
    """Every stored chunk of a document: chunk 0 records how many there are (see ingest)."""
    head = _get(source, [f"{doc_id}#0"])
    if not head:
        return []
    try:
        n = int(head[0].metadata.get("n_chunks", 1))
    except (TypeError, ValueError):
        n = 1
    return head + (_get(source, [f"{doc_id}#{i}" for i in range(1, n)]) if n > 1 else [])


def _covers(gold_text: str, passage_text: str) -> bool:
    """Whether a stored passage is (a chunk of) the given gold text, or contains it."""
    gold, text = normalize(gold_text), normalize(passage_text)
    if not gold or not text:
        return False
    return text in gold or gold in text or overlap(passage_text, gold_text) >= 0.9


def _unique(passages: Iterable[Passage]) -> list[Passage]:
    first: dict[str, Passage] = {}
    for p in passages:
        first.setdefault(p.id, p)
    return list(first.values())


def _deduplicate(passages: Sequence[Passage], avoid: Sequence[Passage]) -> list[Passage]:
    """Passages in order, without repeats of an id or of a text (the gold's included)."""
    seen_ids = {p.id for p in avoid}
    seen_text = {" ".join(p.text.split()).lower() for p in avoid}
    out = []
    for p in passages:
        norm = " ".join(p.text.split()).lower()
        if p.id not in seen_ids and norm not in seen_text:
            seen_ids.add(p.id)
            seen_text.add(norm)
            out.append(p)
    return out


def _fit(shown: list[Passage], budget: int, count_tokens: Callable[[str], int]) -> list[Passage]:
    """Drop the last-ranked passages until the numbered evidence fits `budget` tokens; none fit
    when the first (the gold, or a refusal's best distractor) alone does not."""
    costs = [count_tokens(f"[{i + 1}] {p.title}\n{p.text}\n") for i, p in enumerate(shown)]
    if costs[0] > budget:
        return []
    while len(shown) > 1 and sum(costs) > budget:
        shown, costs = shown[:-1], costs[:-1]
    return shown


# A sentence ends at . ! or ? before a capitalised word; with a space, or without one when a word
# follows directly ("EMT.Importantly": SciFact's abstracts join sentences that way), but not in
# abbreviations such as "U.S." or decimals.
_SENTENCE_SPLIT = re.compile(r"(?<=[.!?])\s+(?=[\"'(\[]?[A-Z0-9])|(?<=[A-Za-z0-9)\]][.!?])(?=[A-Z][a-z])")


def sentences(text: str) -> list[str]:
    """A passage cut into sentences, whitespace collapsed."""
    return [s for s in (" ".join(part.split()) for part in _SENTENCE_SPLIT.split(text)) if s]


def _reply(item: TaskItem, gold: Passage, shown: list[Passage], refuse: bool) -> tuple[list[str], str]:
    """(the example's answers, the reply to learn) in the format `parse_reply` reads."""
    # SciFact's claims are statements; NQ's questions often lack the "?" but have answers.
    claim = not item.answers and not item.question.rstrip().endswith("?")
    if item.answers:
        answer = next((a for a in item.answers if contains_answer(gold.text, [a])), item.answers[0])
        quote = next((s for s in sentences(gold.text) if contains_answer(s, [answer])), "")
        answers = item.answers
    else:
        candidates = [s for s in sentences(strip_marks(gold.text)) if len(s.split()) >= 4] or sentences(gold.text)
        # The earliest sentence sharing most content words with the question (max keeps the first).
        answer = quote = max(candidates, key=lambda s: overlap(item.question, s)) if candidates else gold.text
        answers = [answer]
    what = "addresses the claim" if claim else "answers the question"
    if refuse:
        marks = _cap(_marks(range(1, len(shown) + 1)))
        return answers, f"Reasoning: {marks} {'does' if len(shown) == 1 else 'do'} not {_negate(what)}.\nAnswer: {REFUSAL}"

    k = next(n for n, p in enumerate(shown, 1) if p is gold)
    others = [n for n in range(1, len(shown) + 1) if n != k]
    if quote and len(quote.split()) <= _MAX_QUOTE_WORDS and item.answers:
        reasoning = f'Source [{k}] says: "{strip_marks(quote)}"'
        if others:
            reasoning += f" {_cap(_marks(others))} {'does' if len(others) == 1 else 'do'} not {_negate(what)}."
    else:
        reasoning = f"Source [{k}] {what}"
        reasoning += f"; {_marks(others)} {'does' if len(others) == 1 else 'do'} not." if others else "."
    sentence = _with_mark(strip_marks(answer), k)
    if not item.answers and claim:
        sentence = f"Source [{k}] addresses this claim: {sentence}"
    return answers, f"Reasoning: {reasoning}\nAnswer: {sentence}"


def _marks(numbers: Iterable[int]) -> str:
    """"source [2]", "sources [1] and [3]", "sources [1], [3] and [4]"."""
    refs = [f"[{n}]" for n in numbers]
    if len(refs) == 1:
        return f"source {refs[0]}"
    return f"sources {', '.join(refs[:-1])} and {refs[-1]}"


def _cap(text: str) -> str:
    return text[:1].upper() + text[1:]


def _negate(what: str) -> str:
    """"answers the question" -> "answer the question", after "do not"."""
    verb, rest = what.split(" ", 1)
    return f"{verb[:-2] if verb.endswith('sses') else verb[:-1]} {rest}"


# Closing punctuation, except the full stop of an abbreviation ("D.C.").
_END = re.compile(r"(?<!\.\w)[\s.!?;:,]+$")


def _with_mark(text: str, k: int) -> str:
    """"Tides follow the Moon." -> "Tides follow the Moon [k].": the mark before the full stop."""
    text = _END.sub("", " ".join(text.split()))
    return f"{text} [{k}]."


# --- generated items --------------------------------------------------------------------------

GENERATE_SYSTEM = """You write one quiz question about a passage, and its answer.
The answer is a short phrase of a few words, copied exactly from the passage.
The question makes sense on its own, does not contain the answer, and ends with a question mark.
Reply with JSON: {"question": "...", "answer": "..."}"""
# One worked example: a 135M model copies the shape of a shown reply far better than a description.
_GENERATE_EXAMPLE = (
    "Passage: Tides\nTides are caused mainly by the gravitational pull of the Moon on the Earth's oceans.",
    '{"question": "What mainly causes the tides of the Earth\'s oceans?", "answer": "the gravitational pull of the Moon"}',
)
GENERATE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
    "required": ["question", "answer"],
}


def reject_reason(question: str, answer: str, passage: str) -> str | None:
    """Why a generated (question, answer) about `passage` is unusable, or None to keep it."""
    question, answer = " ".join(question.split()), " ".join(answer.split())
    if not question.endswith("?"):
        return NOT_A_QUESTION
    if not terms(answer):
        return TRIVIAL_ANSWER
    if not contains_answer(passage, [answer]):
        return ANSWER_NOT_IN_PASSAGE
    if len(answer.split()) > MAX_ANSWER_WORDS:
        return LONG_ANSWER
    if contains_answer(question, [answer]):
        return ANSWER_IN_QUESTION
    # A cheap round trip: a question about this passage is asked in its words.
    shared = set(terms(question)) & set(terms(passage))
    if not shared or overlap(question, passage) < MIN_QUESTION_OVERLAP:
        return OFF_PASSAGE
    return None


def generate_items(
    llm: LLM,
    passages: Iterable[Passage],
    *,
    per_passage: int = 1,
    max_passages: int | None = None,
    seed: int = 0,
    temperature: float = 0.3,
    stats: GenerationStats | None = None,
    progress: bool = True,
) -> Iterator[TaskItem]:
    """Questions the model writes about `passages`, one JSON-constrained call each, kept only when
    `reject_reason` finds nothing wrong; every rejection is counted in `stats.rejected`.

    `max_passages` takes a seeded random sample (in the passages' order). For passages of a
    corpus use `corpus_passages` with the ingest's chunking, so the gold ids are the stored ones.
    """
    from tqdm import tqdm

    from agentkit.llm.base import GenerationOptions

    stats = stats if stats is not None else GenerationStats()
    if max_passages is not None:
        passages = _sample(passages, max_passages, random.Random(seed))
    total = len(passages) if isinstance(passages, Sequence) else None
    seen: set[str] = set()
    calls = 0
    bar = tqdm(passages, total=total, desc="questions", unit="passage", file=sys.stderr, disable=None if progress else True)
    for passage in bar:
        stats.passages += 1
        asked: list[str] = []
        for j in range(per_passage):
            options = GenerationOptions(max_tokens=128, temperature=temperature, seed=seed + calls, json_schema=GENERATE_SCHEMA)
            calls += 1
            reply = llm.chat(_generation_prompt(passage, asked), options).text
            question, answer = _parse_generated(reply)
            why = INVALID_JSON if question is None or answer is None else reject_reason(question, answer, passage.text)
            if why is None and normalize(question or "") in seen:
                why = DUPLICATE
            if why is not None:
                stats.rejected[why] += 1
                continue
            assert question is not None and answer is not None
            question, answer = " ".join(question.split()), " ".join(answer.split())
            seen.add(normalize(question))
            asked.append(question)
            stats.kept += 1
            bar.set_postfix(kept=stats.kept, refresh=False)
            yield TaskItem(question, [answer], gold_ids=[passage.id], id=f"{passage.id}:{j}", generated=True)


def _generation_prompt(passage: Passage, asked: Sequence[str]) -> list[Message]:
    user = f"Passage: {passage.title}\n{passage.text}".strip()
    if asked:
        user += "\n\nWrite a different question from these: " + " ".join(asked)
    return [
        Message("system", GENERATE_SYSTEM),
        Message("user", _GENERATE_EXAMPLE[0]),
        Message("assistant", _GENERATE_EXAMPLE[1]),
        Message("user", user),
    ]


def _parse_generated(reply: str) -> tuple[str | None, str | None]:
    try:
        data = json.loads(reply)
    except ValueError:
        return None, None
    if not isinstance(data, dict):
        return None, None
    question, answer = data.get("question"), data.get("answer")
    if not isinstance(question, str) or not isinstance(answer, str):
        return None, None
    return question, answer


def _sample(passages: Iterable[Passage], n: int, rng: random.Random) -> list[Passage]:
    """A uniform sample of `n` (reservoir sampling: one pass, any length), in the original order."""
    chosen: list[tuple[int, Passage]] = []
    for i, p in enumerate(passages):
        if len(chosen) < n:
            chosen.append((i, p))
        else:
            j = rng.randint(0, i)
            if j < n:
                chosen[j] = (i, p)
    return [p for _, p in sorted(chosen, key=lambda pair: pair[0])]


# --- splitting and writing ---------------------------------------------------------------------


def split(examples: Iterable[Example], heldout: float = 0.1, seed: int = 0) -> tuple[list[Example], list[Example]]:
    """(train, heldout), split by question: every example of a question lands on the same side.

    A seeded shuffle of the distinct questions puts round(`heldout` x their number) of them (at
    least one, when `heldout` > 0 and there are two or more) in the held-out part.
    """
    if not 0 <= heldout < 1:
        raise ValueError(f"heldout must be at least 0 and below 1, got {heldout}")
    examples = list(examples)
    questions = sorted({normalize(e.question) for e in examples})
    random.Random(seed).shuffle(questions)
    n = round(heldout * len(questions))
    if heldout > 0 and n == 0 and len(questions) > 1:
        n = 1
    held = set(questions[:n])
    train = [e for e in examples if normalize(e.question) not in held]
    return train, [e for e in examples if normalize(e.question) in held]


def write_jsonl(examples: Iterable[Example], path: PathLike) -> int:
    """One example per line (UTF-8, unescaped); returns how many were written."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    n = 0
    with p.open("w", encoding="utf-8") as fh:
        for e in examples:
            fh.write(json.dumps(e.to_dict(), ensure_ascii=False) + "\n")
            n += 1
    return n


def load_examples(path: PathLike) -> list[Example]:
    """Examples back from a file `write_jsonl` wrote (`instruction` and `input` are read from `messages`)."""
    from agentkit.eval.metrics import read_jsonl

    names = ("id", "kind", "messages", "output", "question", "answers", "gold_ids", "passage_ids")

    def parse(row: dict[str, Any]) -> Example:
        return Example(**{name: row[name] for name in names}, refusal=bool(row.get("refusal", False)))

    return read_jsonl(Path(path), parse, "an example line written by agentkit.tune.dataset.write_jsonl")


def write_dataset(
    examples: Iterable[Example],
    out_dir: PathLike,
    *,
    heldout: float = 0.1,
    seed: int = 0,
    report: DatasetReport | None = None,
) -> DatasetReport:
    """Split by question and write `train.jsonl` and `heldout.jsonl` under `out_dir`.

    Each line carries `question`, `answers` and `gold_ids`, so `heldout.jsonl` is also input for
    `agentkit eval qa --questions` (gold ids match when eval ingests the corpus with the same chunking).
    """
    report = report if report is not None else DatasetReport()
    train, held = split(examples, heldout, seed)
    out = Path(out_dir)
    report.train = write_jsonl(train, out / "train.jsonl")
    report.heldout = write_jsonl(held, out / "heldout.jsonl")
    report.paths = {"train": str(out / "train.jsonl"), "heldout": str(out / "heldout.jsonl")}
    return report
