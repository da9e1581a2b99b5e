"""Question-answering evaluation with SQuAD 2.0 semantics: answer accuracy, abstention on
unanswerable questions, citation precision and latency (what `agentkit eval qa` prints).
"""

from __future__ import annotations

import math
import random
import re
import statistics
import string
import unicodedata
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentkit.types import PARAMETRIC, Answer, Citation, Passage

Mode = Literal["never", "always", "routed"]


@dataclass
class QAItem:
    question: str
    #: Gold answers; empty for an unanswerable question (SQuAD 2.0), where abstaining is right.
    answers: list[str]
    #: Passages (or whole documents, by id) that hold the answer; when given, a citation counts
    #: as correct only if it points at one of them.
    gold_ids: list[str] = field(default_factory=list)
    #: False when nothing in the corpus answers the question; forced False when `answers` is empty.
    answerable: bool = True
    #: The question's id in its file (`_id`), "" when it has none.
    id: str = ""

    def __post_init__(self) -> None:
        # With no gold answer nothing but an abstention can be scored right.
        self.answerable = self.answerable and bool(self.answers)


def load_questions(path: str | Path, limit: int | None = None) -> list[QAItem]:
    """JSON lines with `question` and `answers` (NQ-open's `answer` is accepted too), and
    optional `_id`, `gold_ids` (the passage or document ids that hold the answer) and
    `answerable`. As in SQuAD 2.0, an empty `answers` list or `"answerable": false` marks a
    question that the corpus does not answer."""
    from agentkit.errors import InputError
    from agentkit.eval.metrics import read_jsonl

    def parse(row: dict[str, Any]) -> QAItem:
        answerable = row.get("answerable", True)
        if not isinstance(answerable, bool):
            raise InputError(f'"answerable" must be true or false, got {answerable!r}')
        answers = row.get("answers", row.get("answer"))
        if answers is None:
            if answerable:
                raise InputError('no "answers": give a list of gold answers (empty when the question is unanswerable)')
            answers = []
        gold = row.get("gold_ids") or []
        if isinstance(gold, str):
            gold = [gold]
        if not isinstance(gold, list):
            raise InputError(f'"gold_ids" must be a list of passage ids, got {type(gold).__name__}')
        return QAItem(str(row["question"]), [answers] if isinstance(answers, str) else [str(a) for a in answers],
                      [str(g) for g in gold], answerable, str(row.get("_id", row.get("id", ""))))

    return read_jsonl(path, parse, 'a QA line: {"question": ..., "answers": [...]}', limit)


def sample_questions(items: Sequence[QAItem], n: int, seed: int = 0) -> list[QAItem]:
    """A fixed random subset of `n` items (`random.Random(seed).sample`, so the same seed gives
    the same questions on every run), kept in file order; all of them when `n` is not smaller."""
    if n >= len(items):
        return list(items)
    return [items[i] for i in sorted(random.Random(seed).sample(range(len(items)), n))]


# --- SQuAD-style answer normalisation ------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    """SQuAD's normalisation (lower case, no punctuation, no articles), with Unicode punctuation
    (“curly quotes”, dashes) removed like ASCII's: a quoted answer must still match its words."""
    text = text.lower()
    text = "".join(ch for ch in text if ch not in _PUNCT and not unicodedata.category(ch).startswith("P"))
    return " ".join(_ARTICLES.sub(" ", text).split())


_PUNCT = frozenset(string.punctuation)


def exact_match(prediction: str, answers: Sequence[str]) -> float:
    """1.0 when the normalised answer equals a gold answer, or (for short gold answers inside a
    sentence-length reply) contains it as whole words."""
    pred = normalize(prediction)
    for a in answers:
        gold = normalize(a)
        if gold and (pred == gold or re.search(rf"(^| ){re.escape(gold)}( |$)", pred) and len(pred.split()) <= 3 * len(gold.split()) + 6):
            return 1.0
    return 0.0


def token_f1(prediction: str, answers: Sequence[str]) -> float:
    pred = normalize(prediction).split()
    best = 0.0
    for a in answers:
        gold = normalize(a).split()
        common = Counter(pred) & Counter(gold)
        same = sum(common.values())
        if not same:
            continue
        precision, recall = same / len(pred), same / len(gold)
        best = max(best, 2 * precision * recall / (precision + recall))
    return best


#: Dashes that stand between words ("Dyrrachium—one of the…"), unlike a hyphen inside one.
_DASHES = re.compile("[\u2012-\u2015\u2e3a\u2e3b]")
#: A possessive "'s" after a word ("Myhill's"), straight, curly or modifier apostrophe.
_POSSESSIVE = re.compile("(?<=\\w)['\u2019\u02bc]s\\b")


def contains_answer(text: str, answers: Sequence[str]) -> bool:
    """Whether a normalised gold answer occurs in `text` as whole words. Normalising deletes
    punctuation, which would glue "Dyrrachium—one" into one word and "Myhill's" into "myhills": a
    dash between words is also read as a space and a possessive "'s" as its word, as a tokenizer
    that splits on punctuation would (DPR's `has_answer`); any reading may hold the answer."""
    spaced = _DASHES.sub(" ", text)
    variants = (text, spaced, _POSSESSIVE.sub("", text), _POSSESSIVE.sub("", spaced))
    readings = {f" {normalize(v)} " for v in variants}
    golds = [g for g in (normalize(a) for a in answers) if g]
    return any(f" {g} " in t for g in golds for t in readings)


def strip_marks(text: str) -> str:
    return re.sub(r"\s?\[\d+\]", "", text)


def cites_gold(passage: Passage, gold_ids: Sequence[str]) -> bool:
    """Whether a cited passage is a gold one: its id, or its document's id, is among `gold_ids`
    (BEIR judges whole documents; agentkit stores them as chunks `doc#i`)."""
    return passage.id in gold_ids or passage.doc_id in gold_ids


def is_abstention(answer: Answer) -> bool:
    """Whether the agent declined to answer: a refusal, or a reply that says the sources lack it."""
    from agentkit.reasoning.citations import REFUSAL

    return answer.kind == "refusal" or REFUSAL.lower().rstrip(".") in answer.text.lower()


def citation_correct(citation: Citation, item: QAItem) -> bool | None:
    """A gold passage (items with `gold_ids`), else a passage holding an answer; None on an
    unanswerable question, where no passage is right."""
    if not item.answerable:
        return None
    if item.gold_ids:
        return cites_gold(citation.passage, item.gold_ids)
    return contains_answer(citation.passage.text, item.answers)


def score_answer(item: QAItem, answer: Answer, latency_ms: float) -> dict[str, Any]:
    """One question's record (a line of `eval qa --out`): what was asked, what came back, and its
    scores. SQuAD 2.0 rules: on an unanswerable question abstaining scores 1 and anything else 0;
    on an answerable one an abstention scores 0."""
    abstained = is_abstention(answer)
    text = strip_marks(answer.text)
    cites = [{
        "marker": c.marker, "passage_id": c.passage.id, "inferred": c.inferred, "quote": c.quote,
        "start": c.start, "end": c.end, "supported": c.supported, "correct": citation_correct(c, item),
    } for c in answer.citations]
    # Only the model's own marks say how well it cites; agentkit's inferred ones are left out.
    judged = [c["correct"] for c in cites if not c["inferred"]] if item.answerable else []
    if item.answerable:
        contains = not abstained and contains_answer(text, item.answers)
        # A quote reader's "model" answer is "“quote” [n] In short: short": the short answer
        # (words copied from the quote) is what EM and F1 judge.
        short = answer.citations[0].sentence if answer.kind == "model" and answer.citations else text
        em = 0.0 if abstained else exact_match(short, item.answers)
        f1 = 0.0 if abstained else token_f1(short, item.answers)
        wrong = not abstained and not contains and any(c.supported is True for c in answer.citations)
    else:
        contains, wrong = None, None
        em = f1 = float(abstained)
    return {
        "id": item.id, "question": item.question, "answerable": item.answerable, "answers": item.answers,
        "gold_ids": item.gold_ids, "reply": answer.text, "kind": answer.kind, "withheld": answer.withheld,
        "route": list(answer.route.targets) if answer.route else [], "citations": cites,
        "warnings": list(answer.warnings),
        "abstained": abstained, "contains_answer": contains, "exact_match": em, "f1": f1,
        "citation_precision": sum(judged) / len(judged) if judged else None,
        "supported_but_wrong": wrong,
        "retrieved": bool(answer.route and any(t != PARAMETRIC for t in answer.route.targets)),
        "ttft_ms": answer.timings.get("ttft_ms"), "latency_ms": latency_ms,
    }


def _share(flags: Sequence[bool]) -> float | None:
    return sum(flags) / len(flags) if flags else None


def wilson(k: int, n: int, z: float = 1.96) -> tuple[float, float] | None:
    """The Wilson score interval (95% by default) of a proportion `k`/`n`; None when n is 0.
    On 98 questions one answer moves a rate by 0.01, and its interval is about ±0.06 wide:
    whether a change is more than the sample's luck."""
    if n <= 0:
        return None
    p = k / n
    centre = (p + z * z / (2 * n)) / (1 + z * z / n)
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / (1 + z * z / n)
    return max(0.0, centre - half), min(1.0, centre + half)


def _round(value: float | None, digits: int = 4) -> float | None:
    return None if value is None else round(value, digits)


@dataclass
class QAReport:
    """The figures of one run. Rates over answerable (or unanswerable) questions are None when
    the set holds none of them."""

    mode: str
    n: int
    #: SQuAD 2.0 style, over all questions (an abstention on an unanswerable one scores 1).
    exact_match: float
    f1: float
    #: Share of the model's own citations on answerable questions that point at a right passage.
    citation_precision: float | None
    mean_latency_ms: float
    retrieval_rate: float
    #: Share of all questions answered with an abstention (`abstention_rate` in the JSON too).
    refusal_rate: float
    #: The model's citations that `citation_precision` judges.
    citations: int
    n_answerable: int = 0
    n_unanswerable: int = 0
    #: Answerable questions whose reply contains a gold answer.
    answerable_accuracy: float | None = None
    #: Unanswerable questions that were abstained on.
    unanswerable_abstention: float | None = None
    #: Citations on answerable questions that agentkit attributed by word overlap (not judged).
    inferred_citations: int = 0
    #: Answerable questions answered with a supported citation yet without a gold answer.
    supported_but_wrong: float | None = None
    median_ttft_ms: float | None = None
    #: How many answers of each `Answer.kind`.
    kinds: dict[str, int] = field(default_factory=dict)
    examples: list[dict[str, Any]] = field(default_factory=list)
    #: Each rate's (hits, questions or citations): the fractions behind the rates.
    counts: dict[str, tuple[int, int]] = field(default_factory=dict)

    def interval(self, name: str) -> tuple[float, float] | None:
        """The 95% Wilson interval of the rate `name` (a key of `counts`), or None."""
        hits = self.counts.get(name)
        return wilson(*hits) if hits else None

    @classmethod
    def from_records(cls, mode: str, records: Sequence[dict[str, Any]]) -> QAReport:
        """Aggregate per-question records made by `score_answer`."""
        if not records:
            raise ValueError("no questions to evaluate")
        answerable = [r for r in records if r["answerable"]]
        unanswerable = [r for r in records if not r["answerable"]]
        judged = [c["correct"] for r in answerable for c in r["citations"] if not c["inferred"]]
        ttft = [r["ttft_ms"] for r in records if r["ttft_ms"] is not None]
        # The shares behind the rates, each once: the rate and its (hits, of how many) come from it.
        flags = {
            "answerable_accuracy": [bool(r["contains_answer"]) for r in answerable],
            "unanswerable_abstention": [bool(r["abstained"]) for r in unanswerable],
            "citation_precision": [bool(c) for c in judged],
            "supported_but_wrong": [bool(r["supported_but_wrong"]) for r in answerable],
        }
        return cls(
            mode=mode, n=len(records),
            exact_match=statistics.fmean(r["exact_match"] for r in records),
            f1=statistics.fmean(r["f1"] for r in records),
            citation_precision=_share(flags["citation_precision"]),
            mean_latency_ms=statistics.fmean(r["latency_ms"] for r in records),
            retrieval_rate=statistics.fmean(r["retrieved"] for r in records),
            refusal_rate=statistics.fmean(r["abstained"] for r in records),
            citations=len(judged),
            n_answerable=len(answerable), n_unanswerable=len(unanswerable),
            answerable_accuracy=_share(flags["answerable_accuracy"]),
            unanswerable_abstention=_share(flags["unanswerable_abstention"]),
            inferred_citations=sum(c["inferred"] for r in answerable for c in r["citations"]),
            supported_but_wrong=_share(flags["supported_but_wrong"]),
            median_ttft_ms=statistics.median(ttft) if ttft else None,
            kinds=dict(Counter(r["kind"] for r in records)),
            examples=[_example(r) for r in records[:5]],
            counts={name: (sum(f), len(f)) for name, f in flags.items()},
        )

    @property
    def abstention_rate(self) -> float:
        return self.refusal_rate

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "n": self.n,
            "n_answerable": self.n_answerable,
            "n_unanswerable": self.n_unanswerable,
            "answerable_accuracy": _round(self.answerable_accuracy),
            "unanswerable_abstention": _round(self.unanswerable_abstention),
            "exact_match": round(self.exact_match, 4),
            "f1": round(self.f1, 4),
            "citation_precision": _round(self.citation_precision),
            "citations": self.citations,
            "inferred_citations": self.inferred_citations,
            "supported_but_wrong": _round(self.supported_but_wrong),
            "abstention_rate": round(self.refusal_rate, 4),
            "refusal_rate": round(self.refusal_rate, 4),
            "retrieval_rate": round(self.retrieval_rate, 4),
            "median_ttft_ms": _round(self.median_ttft_ms, 1),
            "mean_latency_ms": round(self.mean_latency_ms, 1),
            "kinds": self.kinds,
            "counts": {k: list(v) for k, v in self.counts.items()},
            "intervals_95": {k: [round(x, 4) for x in ci] for k in self.counts if (ci := self.interval(k))},
            "examples": self.examples,
        }


def _example(record: dict[str, Any]) -> dict[str, Any]:
    check = "gold ids" if record["gold_ids"] else "answer in passage" if record["answerable"] else "none (unanswerable)"
    return {"question": record["question"], "answerable": record["answerable"], "answers": record["answers"],
            "reply": record["reply"], "kind": record["kind"], "abstained": record["abstained"],
            "cited": [c["passage_id"] for c in record["citations"]],
            "cited_correct": [c["correct"] for c in record["citations"]], "citation_check": check,
            **({"gold_ids": record["gold_ids"]} if record["gold_ids"] else {})}


def evaluate_qa(agent: Any, items: Sequence[QAItem], mode: Mode, source: str, progress: bool = False,
                on_record: Callable[[dict[str, Any]], None] | None = None) -> QAReport:
    """Ask every question with `agent.ask(question, route=...)`; `never` forces the model alone,
    `always` forces `source`, `routed` asks the agent's router. `on_record` gets each question's
    record (see `score_answer`) as soon as it is scored."""
    route = {"never": [PARAMETRIC], "always": [source], "routed": None}[mode]
    records = []
    iterator: Any = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc=f"qa ({mode})", unit="q")
    for item in iterator:
        t0 = time.perf_counter()
        answer: Answer = agent.ask(item.question, route=route)
        record = score_answer(item, answer, (time.perf_counter() - t0) * 1000)
        records.append(record)
        if on_record is not None:
            on_record(record)
    return QAReport.from_records(mode, records)
