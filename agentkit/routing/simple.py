"""The first router: rules for questions the model answers alone or a dictionary answers,
then similarity of the question to each source's description.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence

from agentkit.knowledge.base import KnowledgeSource
from agentkit.text import terms
from agentkit.types import PARAMETRIC, Message, RouteDecision

# Chit-chat, arithmetic and creative or language tasks need no external knowledge.
PARAMETRIC_PATTERNS = {
    "a greeting or thanks": r"^\s*(hi|hello|hey|good (morning|afternoon|evening)|thanks|thank you|bye)\b[\s!.?]*$",
    "arithmetic": r"^(?=\D*\d)\s*((what is|what's|calculate|compute)\s+)?[\d\s+\-*/().^%x×÷=]+\??\s*$",
    "a writing or language task": r"^\s*(please\s+)?(write|compose|draft|rewrite|rephrase|paraphrase|translate|"
    r"summari[sz]e|correct|proofread|tell me a joke|make up)\b",
    "a creative request": r"\b(poem|haiku|limerick|joke|story|slogan)\b",
    "a question about the assistant": r"^\s*(how are you|who are you|what can you do)\b",
}

# Definitional questions go to dictionary sources when there are any.
DICTIONARY_PATTERNS = {
    "define X": r"^\s*define\s+\S+",
    "what does X mean": r"\bwhat does\s+['\"“]?[\w-]+['\"”]?\s+mean\b",
    "meaning of X": r"\b(meaning|definition)s?\s+of\s+(the\s+word\s+)?['\"“]?[\w-]+",
}


class SimpleRouter:
    """Rules first; otherwise search the sources whose description overlaps the question."""

    name = "simple"

    def __init__(
        self,
        parametric_patterns: Sequence[str] = (),
        dictionary_patterns: Sequence[str] = (),
        description_threshold: float = 0.15,
    ) -> None:
        self._parametric = _compile({**PARAMETRIC_PATTERNS, **{p: p for p in parametric_patterns}})
        self._dictionary = _compile({**DICTIONARY_PATTERNS, **{p: p for p in dictionary_patterns}})
        self.threshold = description_threshold

    def decide(
        self,
        question: str,
        sources: Mapping[str, KnowledgeSource],
        history: Sequence[Message] = (),
    ) -> RouteDecision:
        dictionaries = [n for n, s in sources.items() if getattr(s, "kind", "documents") == "dictionary"]
        documents = [n for n in sources if n not in dictionaries]

        rule = _first_match(self._parametric, question)
        if rule:
            return RouteDecision(
                [PARAMETRIC], 0.9, f"{rule}: the model can answer this alone",
                {"rule:parametric": 1.0}, self.name,
            )
        rule = _first_match(self._dictionary, question)
        if rule and dictionaries:
            return RouteDecision(
                dictionaries, 0.85, f"a definitional question ({rule}): looking it up",
                {"rule:dictionary": 1.0}, self.name,
            )
        if not documents and not dictionaries:
            return RouteDecision([PARAMETRIC], 1.0, "no knowledge source is configured", {}, self.name)
        if not documents:
            return RouteDecision(dictionaries, 0.5, "only dictionary sources are configured", {}, self.name)

        q = set(terms(question))
        signals = {}
        for name in documents:
            desc = set(terms(f"{name} {sources[name].description}"))
            signals[f"overlap:{name}"] = round(len(q & desc) / len(q), 3) if q else 0.0
        chosen = [n for n in documents if signals[f"overlap:{n}"] >= self.threshold]
        if chosen:
            best = max(signals[f"overlap:{n}"] for n in chosen)
            why = ", ".join(f"{n} ({signals[f'overlap:{n}']:.2f})" for n in chosen)
            return RouteDecision(chosen, min(1.0, 0.6 + best), f"the question matches the description of {why}",
                                 signals, self.name)
        return RouteDecision(
            documents, 0.5, "no source description stands out; searching every document source",
            signals, self.name,
        )


def _compile(patterns: dict[str, str]) -> list[tuple[str, re.Pattern[str]]]:
    return [(label, re.compile(p, re.IGNORECASE)) for label, p in patterns.items()]


def _first_match(patterns: Sequence[tuple[str, re.Pattern[str]]], text: str) -> str | None:
    for label, p in patterns:
        if p.search(text):
            return label
    return None
