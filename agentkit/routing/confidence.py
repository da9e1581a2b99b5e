"""The parametric-confidence policy: a short closed-book draft, judged by its token log-probabilities.

A model that knows the answer writes it with high, steady confidence (FLARE, Self-RAG use the same
signal); low or falling probabilities mean look it up. Calls the model: slower than the others.
"""

from __future__ import annotations

import math
from typing import Any

from agentkit.llm.base import GenerationOptions
from agentkit.routing.base import Query, Vote
from agentkit.types import PARAMETRIC, Message

PROMPT = "Answer in a few words, from your own knowledge."


class ConfidencePolicy:
    name = "confidence"
    calls_model = True

    def __init__(self, llm: Any, *, max_tokens: int = 16, min_mean_logprob: float = -1.0, top: int = 5) -> None:
        self.llm = llm
        self.max_tokens = max_tokens
        #: Drafts whose mean token log-probability is at least this count as "the model knows".
        self.min_mean_logprob = min_mean_logprob
        self.top = top

    def assess(self, query: Query) -> Vote:
        messages = [Message("system", PROMPT), Message("user", query.question)]
        options = GenerationOptions(max_tokens=self.max_tokens, temperature=0.0, logprobs=self.top)
        reply = self.llm.chat(messages, options)
        lps = [t for t in reply.logprobs or [] if not math.isnan(t.logprob)]
        if not lps:
            return Vote(signals={"confidence:available": 0.0})
        values = [t.logprob for t in lps]
        entropies = [_entropy(t.top) for t in lps if t.top]
        mean = sum(values) / len(values)
        signals = {
            "confidence:available": 1.0,
            "confidence:mean": round(mean, 4),
            "confidence:min": round(min(values), 4),
            "confidence:entropy": round(sum(entropies) / len(entropies), 4) if entropies else 0.0,
        }
        if mean >= self.min_mean_logprob:
            return Vote([PARAMETRIC], min(0.9, math.exp(mean)), f"the model drafts an answer confidently "
                        f"(mean token log-probability {mean:.2f})", signals)
        targets = query.documents or query.dictionaries
        return Vote(targets, min(0.9, 1 - math.exp(mean)), f"the model is unsure of a closed-book answer "
                    f"(mean token log-probability {mean:.2f}); looking it up", signals)


def _entropy(top: dict[str, float]) -> float:
    """Entropy (nats) of the top alternatives, renormalised."""
    ps = [math.exp(v) for v in top.values()]
    total = sum(ps)
    return -sum(p / total * math.log(p / total) for p in ps if p > 0) if total > 0 else 0.0
