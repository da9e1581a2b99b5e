"""Question-answering evaluation: exact match, token F1, citation precision and latency, with
retrieval never, always, or as routed (what `agentkit eval qa` prints).
"""

from __future__ import annotations

import re
import statistics
import string
import time
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from agentkit.types import PARAMETRIC, Answer, Passage

Mode = Literal["never", "always", "routed"]


@dataclass
class QAItem:
    question: str
    answers: list[str]
    #: Passages (or whole documents, by id) that hold the answer; when given, a citation counts
    #: as correct only if it points at one of them.
    gold_ids: list[str] = field(default_factory=list)


def load_questions(path: str | Path, limit: int | None = None) -> list[QAItem]:
    """JSON lines with `question` and `answers` (NQ-open's `answer` is accepted too), and
    optional `gold_ids`: the passage or document ids that hold the answer."""
    from agentkit.errors import InputError
    from agentkit.eval_metrics import read_jsonl

    def parse(row: dict[str, Any]) -> QAItem:
        answers = row.get("answers", row.get("answer"))
        gold = row.get("gold_ids") or []
        if isinstance(gold, str):
            gold = [gold]
        if not isinstance(gold, list):
            raise InputError(f'"gold_ids" must be a list of passage ids, got {type(gold).__name__}')
        return QAItem(str(row["question"]), [answers] if isinstance(answers, str) else [str(a) for a in answers],
                      [str(g) for g in gold])

    return read_jsonl(path, parse, 'a QA line: {"question": ..., "answers": [...]}', limit)


# --- SQuAD-style answer normalisation ------------------------------------------------------------

_ARTICLES = re.compile(r"\b(a|an|the)\b")


def normalize(text: str) -> str:
    text = text.lower()
    text = "".join(ch for ch in text if ch not in set(string.punctuation))
    return " ".join(_ARTICLES.sub(" ", text).split())


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


def contains_answer(text: str, answers: Sequence[str]) -> bool:
    t = f" {normalize(text)} "
    return any(f" {normalize(a)} " in t for a in answers if normalize(a))


def strip_marks(text: str) -> str:
    return re.sub(r"\s?\[\d+\]", "", text)


def cites_gold(passage: Passage, gold_ids: Sequence[str]) -> bool:
    """Whether a cited passage is a gold one: its id, or its document's id, is among `gold_ids`
    (BEIR judges whole documents; agentkit stores them as chunks `doc#i`)."""
    return passage.id in gold_ids or passage.doc_id in gold_ids


@dataclass
class QAReport:
    mode: str
    n: int
    exact_match: float
    f1: float
    citation_precision: float | None
    mean_latency_ms: float
    retrieval_rate: float
    refusal_rate: float
    citations: int
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "mode": self.mode,
            "n": self.n,
            "exact_match": round(self.exact_match, 4),
            "f1": round(self.f1, 4),
            "citation_precision": None if self.citation_precision is None else round(self.citation_precision, 4),
            "mean_latency_ms": round(self.mean_latency_ms, 1),
            "retrieval_rate": round(self.retrieval_rate, 4),
            "refusal_rate": round(self.refusal_rate, 4),
            "citations": self.citations,
            "examples": self.examples,
        }


def evaluate_qa(agent: Any, items: Sequence[QAItem], mode: Mode, source: str, progress: bool = False) -> QAReport:
    """Ask every question; `never` forces the model alone, `always` forces `source`, `routed` asks
    the agent's router. A citation is correct when it points at a gold passage (items with
    `gold_ids`), else when the cited passage contains an answer."""
    from agentkit.reasoning.citations import REFUSAL

    route = {"never": [PARAMETRIC], "always": [source], "routed": None}[mode]
    em, f1, lat = [], [], []
    cited = good = retrieved = refused = 0
    examples = []
    iterator: Any = items
    if progress:
        from tqdm import tqdm

        iterator = tqdm(items, desc=f"qa ({mode})", unit="q")
    for item in iterator:
        t0 = time.perf_counter()
        answer: Answer = agent.ask(item.question, route=route)
        lat.append((time.perf_counter() - t0) * 1000)
        text = strip_marks(answer.text)
        em.append(exact_match(text, item.answers))
        f1.append(token_f1(text, item.answers))
        if answer.route and any(t != PARAMETRIC for t in answer.route.targets):
            retrieved += 1
        if REFUSAL.lower().rstrip(".") in answer.text.lower():
            refused += 1
        correct = [cites_gold(c.passage, item.gold_ids) if item.gold_ids else contains_answer(c.passage.text, item.answers)
                   for c in answer.citations]
        cited += len(correct)
        good += sum(correct)
        if len(examples) < 5:
            examples.append({"question": item.question, "answers": item.answers, "reply": answer.text,
                             "cited": [c.passage.id for c in answer.citations], "cited_correct": correct,
                             "citation_check": "gold ids" if item.gold_ids else "answer in passage",
                             **({"gold_ids": item.gold_ids} if item.gold_ids else {})})
    return QAReport(
        mode=mode, n=len(items), exact_match=statistics.fmean(em), f1=statistics.fmean(f1),
        citation_precision=good / cited if cited else None, mean_latency_ms=statistics.fmean(lat),
        retrieval_rate=retrieved / len(items), refusal_rate=refused / len(items), citations=cited,
        examples=examples,
    )


def corpus_store(cfg: Any, corpus: Path, chunk_tokens: int = 200, progress: bool = True) -> tuple[Any, Any]:
    """The evaluation store for `corpus` (an embedded Qdrant under data_dir/eval, ingested once and
    reused; what `eval qa` retrieves from and what `agentkit tune data` draws evidence from, so
    that passage ids agree): (source, ingest report)."""
    from agentkit.eval_retrieval import corpus_key
    from agentkit.ingest.pipeline import ingest
    from agentkit.knowledge.qdrant import QdrantSource

    store = QdrantSource("corpus", f"The evaluation corpus {corpus.name}: passages that may answer the questions.",
                         path=cfg.data_dir / "eval", collection=corpus_key(corpus) + f"-qa{chunk_tokens}")
    overlap = min(cfg.ingest.chunk_overlap, chunk_tokens // 4)
    report = ingest([corpus], store, chunk_tokens=chunk_tokens, overlap=overlap, progress=progress)
    return store, report
