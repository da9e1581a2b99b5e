"""The model's own knowledge as a knowledge source: `search` returns a closed-book draft passage.

This lets the agent treat parametric and external knowledge alike: on a route that mixes
`parametric` with sources, the draft joins the evidence and can be cited as the model's memory.
"""

from __future__ import annotations

import hashlib
from typing import Any

from agentkit.knowledge.base import Filters
from agentkit.llm.base import LLM, GenerationOptions
from agentkit.reasoning.citations import split_reasoning
from agentkit.types import PARAMETRIC, Message, Passage

DRAFT_SYSTEM = (
    "Answer the question from your own knowledge in one or two factual sentences. "
    "If you do not know, say so."
)


class ParametricSource:
    """Wraps an LLM so that it answers `search()` like any other source."""

    kind = "parametric"

    def __init__(self, llm: LLM, *, max_tokens: int = 96, name: str = PARAMETRIC) -> None:
        self.llm = llm
        self.name = name
        self.description = f"what the model {llm.name} learned in training: language, common sense, general facts"
        self.max_tokens = max_tokens

    def search(self, query: str, k: int = 1, filters: Filters | None = None) -> list[Passage]:
        if not query.strip() or k <= 0:
            return []
        messages = [Message("system", DRAFT_SYSTEM), Message("user", query.strip())]
        reply = self.llm.chat(messages, GenerationOptions(max_tokens=self.max_tokens, temperature=0.0, repeat_penalty=1.15))
        _, text = split_reasoning(reply.text)
        if not text:
            return []
        digest = hashlib.sha1(f"{self.llm.name}\n{query}".encode()).hexdigest()[:12]
        metadata: dict[str, Any] = {"model": self.llm.name, "completion_tokens": reply.usage.completion_tokens}
        return [
            Passage(
                id=f"{self.name}:{digest}",
                text=text,
                title=f"The model's memory ({self.llm.name})",
                source=self.name,
                score=1.0,
                metadata=metadata,
                uri=f"model://{self.llm.name}",
            )
        ]
