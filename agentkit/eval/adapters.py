"""Evidence use on held-out examples, base model versus base + adapter (`agentkit tune eval`).

Each held-out example is put to the model exactly as built: the same numbered passages, the gold
among distractors (or only distractors, for a refusal example). Retrieval is held fixed, so the
scores measure what an adapter teaches: citing the right passage, refusing when none answers,
answering in the agent's format. `agentkit eval qa --lora` measures the whole agent instead.
"""

from __future__ import annotations

import re
import statistics
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from agentkit.eval.qa import exact_match, strip_marks, token_f1
from agentkit.llm.base import LLM, GenerationOptions
from agentkit.reasoning.citations import REFUSAL, parse_reply
from agentkit.types import Message, Passage

_MARK = re.compile(r"\[(\d+)\]")


@dataclass
class EvidenceReport:
    label: str
    n: int
    answerable: int
    #: Answerable examples whose answer cites the gold passage.
    gold_cited: float
    #: Citations (in answerable examples) that point at a gold passage, over all citations made.
    citation_precision: float | None
    exact_match: float
    f1: float
    #: Refusal examples answered with the refusal; answerable ones refused by mistake.
    correct_refusals: float | None
    false_refusals: float
    #: Replies with an "Answer:" line, the format the agent parses.
    formatted: float
    mean_latency_ms: float
    examples: list[dict[str, Any]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        out = {k: (round(v, 4) if isinstance(v, float) else v) for k, v in self.__dict__.items()}
        out["examples"] = self.examples
        return out


def evaluate_evidence_use(
    llm: LLM,
    examples: Sequence[Any],
    *,
    adapters: dict[str, float] | None = None,
    label: str = "base",
    max_tokens: int = 256,
    progress: bool = False,
) -> EvidenceReport:
    """Answer every example (an `agentkit.tune.dataset.Example`) greedily and score the reply."""
    iterator: Any = examples
    if progress:
        from tqdm import tqdm

        iterator = tqdm(examples, desc=f"evidence use ({label})", unit="ex")
    options = GenerationOptions(max_tokens=max_tokens, temperature=0.0, repeat_penalty=1.15, adapters=adapters)
    gold_hits, em, f1, lat, formatted = [], [], [], [], []
    cited = cited_gold = refused_ok = refusal_n = false_refusals = 0
    shown: list[dict[str, Any]] = []
    for ex in iterator:
        messages = [Message(m["role"], m["content"]) for m in ex.messages]
        t0 = time.perf_counter()
        reply = llm.chat(messages, options).text
        lat.append((time.perf_counter() - t0) * 1000)
        # Passages stand in by id: only the numbering matters to the parser here.
        evidence = [Passage(id=pid, text="", title="") for pid in ex.passage_ids]
        parsed = parse_reply(reply, evidence, infer=False)
        formatted.append(1.0 if re.search(r"(?im)^\s*answer:", reply) else 0.0)
        refused = REFUSAL.lower().rstrip(".") in parsed.text.lower()
        if ex.refusal:
            refusal_n += 1
            refused_ok += refused
        else:
            false_refusals += refused
            ids = [c.passage.id for c in parsed.citations]
            gold = set(ex.gold_ids)
            cited += len(ids)
            cited_gold += sum(1 for i in ids if i in gold)
            gold_hits.append(1.0 if gold & set(ids) else 0.0)
            em.append(exact_match(strip_marks(parsed.text), ex.answers))
            f1.append(token_f1(strip_marks(parsed.text), ex.answers))
        if len(shown) < 5:
            shown.append({"question": ex.question, "gold": ex.gold_ids, "reply": reply})
    answerable = len(examples) - refusal_n
    return EvidenceReport(
        label=label,
        n=len(examples),
        answerable=answerable,
        gold_cited=_mean(gold_hits),
        citation_precision=cited_gold / cited if cited else None,
        exact_match=_mean(em),
        f1=_mean(f1),
        correct_refusals=refused_ok / refusal_n if refusal_n else None,
        false_refusals=false_refusals / answerable if answerable else 0.0,
        formatted=_mean(formatted),
        mean_latency_ms=_mean(lat),
        examples=shown,
    )


def _mean(values: Sequence[float]) -> float:
    return statistics.fmean(values) if values else 0.0
