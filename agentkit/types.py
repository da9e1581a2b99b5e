"""The data that flows through agentkit: messages, passages, citations, routes, answers, events.

Plain dataclasses (no pydantic) so that `import agentkit` stays fast; `Answer.to_dict()` gives JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field
from typing import Any, Literal, Union

Role = Literal["system", "user", "assistant", "tool"]

#: The name under which the model's own (parametric) knowledge appears as a route target.
PARAMETRIC = "parametric"


@dataclass
class Message:
    """One chat turn."""

    role: Role
    content: str

    def to_dict(self) -> dict[str, str]:
        return {"role": self.role, "content": self.content}


@dataclass
class Document:
    """A whole document before chunking: what a loader yields."""

    id: str
    text: str
    title: str = ""
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass
class Passage:
    """A citable unit of knowledge: a chunk of a document, a dictionary sense, a model draft.

    `id` is stable (re-ingesting the same file gives the same ids), `uri` is where a reader can
    find it (`file:///…#chunk=3`, `dict://host/wn/word`, `model://smollm2`).
    """

    id: str
    text: str
    title: str = ""
    source: str = ""
    score: float = 0.0
    metadata: dict[str, Any] = field(default_factory=dict)
    uri: str = ""

    @property
    def doc_id(self) -> str:
        return str(self.metadata.get("doc_id", self.id.split("#", 1)[0]))

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Citation:
    """A `[n]` mark in an answer, resolved to the passage it points at."""

    marker: int
    passage: Passage
    sentence: str = ""
    #: True when the model wrote no mark and agentkit attributed the sentence by word overlap.
    inferred: bool = False
    #: How well the passage supports the sentence (0-1, from the citation check); None = not checked.
    support: float | None = None
    #: Whether the check found the sentence backed by the passage; None = not checked.
    supported: bool | None = None
    #: The exact text of the passage the citation rests on ("" = none located), and its
    #: character offsets in `passage.text`: `passage.text[start:end] == quote`.
    quote: str = ""
    start: int | None = None
    end: int | None = None

    def to_dict(self) -> dict[str, Any]:
        return {
            "marker": self.marker,
            "passage_id": self.passage.id,
            "source": self.passage.source,
            "uri": self.passage.uri,
            "title": self.passage.title,
            "sentence": self.sentence,
            "inferred": self.inferred,
            "support": self.support,
            "supported": self.supported,
            "quote": self.quote,
            "start": self.start,
            "end": self.end,
        }


@dataclass
class RouteDecision:
    """Which knowledge a question needs: `parametric` and/or source names, and why."""

    targets: list[str]
    confidence: float = 1.0
    reason: str = ""
    signals: dict[str, float] = field(default_factory=dict)
    policy: str = ""

    @property
    def sources(self) -> list[str]:
        """The external sources among the targets."""
        return [t for t in self.targets if t != PARAMETRIC]

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass
class Usage:
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def total_tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    def __iadd__(self, other: Usage) -> Usage:
        self.prompt_tokens += other.prompt_tokens
        self.completion_tokens += other.completion_tokens
        return self

    def to_dict(self) -> dict[str, int]:
        return {
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "total_tokens": self.total_tokens,
        }


@dataclass
class Step:
    """One action of the multi-step loop: a search the model asked for, a tool call, or the final answer."""

    action: str
    source: str = ""
    query: str = ""
    n_passages: int = 0
    #: For `action == "call"`: the tool, its arguments, what it returned, and whether that was an error.
    tool: str = ""
    arguments: dict[str, Any] = field(default_factory=dict)
    observation: str = ""
    error: bool = False


@dataclass
class Answer:
    """Everything the agent knows about one answered question."""

    question: str
    text: str
    citations: list[Citation] = field(default_factory=list)
    route: RouteDecision | None = None
    reasoning: str = ""
    #: The evidence shown to the model, in the numbered order the `[n]` marks refer to.
    passages: list[Passage] = field(default_factory=list)
    usage: Usage = field(default_factory=Usage)
    #: Milliseconds per phase: route, retrieve, generate, total.
    timings: dict[str, float] = field(default_factory=dict)
    warnings: list[str] = field(default_factory=list)
    steps: list[Step] = field(default_factory=list)
    #: True when no external passage backed the answer (the model answered from memory).
    from_memory: bool = False
    #: The model's reply when no source supported it and agentkit answered "I could not find this".
    withheld: str = ""
    #: The LoRA adapters the route selected for this answer (name -> scale); empty = none bound.
    adapters: dict[str, float] = field(default_factory=dict)
    #: How `text` was made: "model" (the model's words, checked against its quotes), "extractive"
    #: (the model's answer did not hold up, so a source sentence is shown as a quote), "definition"
    #: (dictionary senses quoted directly), "refusal" (nothing in the sources answers) or
    #: "memory" (no source was consulted or found: the model's own knowledge).
    kind: str = "model"
    #: Why the model's last reply ended: "stop" (it finished) or "length" (cut at max_tokens;
    #: a warning says how to raise the limit).
    finish_reason: str = "stop"

    @property
    def cited_ids(self) -> list[str]:
        seen: dict[str, None] = {}
        for c in self.citations:
            seen.setdefault(c.passage.id, None)
        return list(seen)

    def to_dict(self) -> dict[str, Any]:
        return {
            "question": self.question,
            "text": self.text,
            "citations": [c.to_dict() for c in self.citations],
            "route": self.route.to_dict() if self.route else None,
            "reasoning": self.reasoning,
            "passages": [p.to_dict() for p in self.passages],
            "usage": self.usage.to_dict(),
            "timings": self.timings,
            "warnings": self.warnings,
            "steps": [dataclasses.asdict(s) for s in self.steps],
            "from_memory": self.from_memory,
            "withheld": self.withheld,
            "adapters": self.adapters,
            "kind": self.kind,
            "finish_reason": self.finish_reason,
        }

    def to_json(self, indent: int | None = 2) -> str:
        return json.dumps(self.to_dict(), indent=indent, ensure_ascii=False)


# --- streaming events: what `Agent.stream()` yields, in this order -------------------------


@dataclass
class RouteEvent:
    decision: RouteDecision
    type: Literal["route"] = "route"


@dataclass
class RetrievalEvent:
    source: str
    query: str
    passages: list[Passage]
    type: Literal["retrieval"] = "retrieval"


@dataclass
class StepEvent:
    step: Step
    type: Literal["step"] = "step"


@dataclass
class TokenEvent:
    """A piece of the model's reply, as it is generated (labels such as `Quote:` included)."""

    text: str
    type: Literal["token"] = "token"


@dataclass
class ContentEvent:
    """A piece of an answer text that agentkit composes rather than the model writes: the quote
    reader's answer (streamed while the model copies its quote), a definition, a refusal. Joined
    in order, the pieces are `Answer.text`. A free-text reply (the chain-of-thought reader, an
    answer from memory) streams only as TokenEvents: its answer is the part after `Answer:`."""

    text: str
    type: Literal["content"] = "content"


@dataclass
class WarningEvent:
    message: str
    type: Literal["warning"] = "warning"


@dataclass
class AnswerEvent:
    answer: Answer
    type: Literal["answer"] = "answer"


Event = Union[RouteEvent, RetrievalEvent, StepEvent, TokenEvent, ContentEvent, WarningEvent, AnswerEvent]
