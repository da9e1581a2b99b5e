"""The LLM-judge policy: the model names the route, forced by a grammar to valid JSON.

The schema's enum is the set of targets, so even a 135M model cannot answer with anything else.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from agentkit.llm.base import GenerationOptions
from agentkit.routing.base import Query, Vote, kind_of
from agentkit.types import PARAMETRIC

TEMPLATE = Path(__file__).with_name("judge.yaml")


def judge_schema(targets: list[str]) -> dict[str, Any]:
    return {
        "type": "object",
        "properties": {"route": {"type": "string", "enum": targets}},
        "required": ["route"],
        "additionalProperties": False,
    }


class JudgePolicy:
    name = "judge"
    calls_model = True

    def __init__(self, llm: Any, *, decisive: bool = True, max_tokens: int = 24) -> None:
        self.llm = llm
        self.decisive = decisive
        self.max_tokens = max_tokens

    def ask(self, query: Query) -> str:
        """The model's raw JSON reply (exposed for tests of the grammar)."""
        from agentkit.reasoning.cot import load_template

        targets = [PARAMETRIC, *query.sources]
        messages = load_template(str(TEMPLATE)).render(question=query.question, sources=list(query.sources.values()))
        options = GenerationOptions(max_tokens=self.max_tokens, temperature=0.0, json_schema=judge_schema(targets))
        return self.llm.chat(messages, options).text

    def assess(self, query: Query) -> Vote:
        text = self.ask(query)
        try:
            route = json.loads(text)["route"]
        except (ValueError, KeyError, TypeError):
            return Vote(signals={"judge:invalid": 1.0})
        if route != PARAMETRIC and route not in query.sources:
            return Vote(signals={"judge:invalid": 1.0})
        kind = "parametric" if route == PARAMETRIC else (
            "dictionary" if kind_of(query.sources[route]) == "dictionary" else "retrieve")
        signals = {"judge:invalid": 0.0, f"judge:{kind}": 1.0}
        return Vote([route], 0.6, f"the model judged that {route!r} answers this", signals, decisive=self.decisive)
