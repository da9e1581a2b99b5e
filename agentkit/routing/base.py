"""What every routing policy shares: the question in context, a policy's vote, the route classes.

A policy looks at one question and says what it thinks (`Vote`), with the signals behind it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from functools import cached_property
from typing import Protocol, runtime_checkable

from agentkit.knowledge.base import KnowledgeSource
from agentkit.types import PARAMETRIC, Message, RouteDecision

#: The three kinds of route, as the labelled routing sets name them.
ROUTE_CLASSES = ("parametric", "retrieve", "dictionary")


@dataclass
class Query:
    """A question with the sources it could go to."""

    question: str
    sources: Mapping[str, KnowledgeSource]
    history: Sequence[Message] = ()

    @cached_property
    def dictionaries(self) -> list[str]:
        return [n for n, s in self.sources.items() if kind_of(s) == "dictionary"]

    @cached_property
    def documents(self) -> list[str]:
        return [n for n in self.sources if n not in self.dictionaries]


@dataclass
class Vote:
    """A policy's opinion. `targets` empty = it abstains (its signals still count)."""

    targets: list[str] = field(default_factory=list)
    confidence: float = 0.0
    reason: str = ""
    signals: dict[str, float] = field(default_factory=dict)
    #: A decisive vote ends the cascade; a tentative one is kept as the fallback.
    decisive: bool = False


@runtime_checkable
class Policy(Protocol):
    """One way of deciding. Cheap policies come first in a cascade; model-calling ones last."""

    name: str
    #: True when `assess` runs the language model (slow: not used by the default cascade).
    calls_model: bool

    def assess(self, query: Query) -> Vote: ...


class Router(Protocol):
    def decide(
        self, question: str, sources: Mapping[str, KnowledgeSource], history: Sequence[Message] = ()
    ) -> RouteDecision: ...


def kind_of(source: KnowledgeSource) -> str:
    return str(getattr(source, "kind", "documents"))


def route_class(targets: Sequence[str], sources: Mapping[str, KnowledgeSource]) -> str:
    """`parametric`, `retrieve` (any document source) or `dictionary` (dictionaries only)."""
    named = [t for t in targets if t != PARAMETRIC and t in sources]
    if not named:
        return "parametric"
    if all(kind_of(sources[t]) == "dictionary" for t in named):
        return "dictionary"
    return "retrieve"


def class_targets(route: str, query: Query, preferred: Sequence[str] = ()) -> list[str]:
    """The targets for a route class: the preferred sources of that kind, else all of them."""
    if route == "dictionary" and query.dictionaries:
        pool = query.dictionaries
    elif route in ("retrieve", "dictionary") and query.documents:
        pool = query.documents
    elif route == "retrieve" and query.dictionaries:
        pool = query.dictionaries
    else:
        return [PARAMETRIC]
    chosen = [n for n in preferred if n in pool]
    return chosen or list(pool)
