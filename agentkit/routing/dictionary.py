"""The dictionary policy: a definitional question whose word a dictionary source knows.

A definition asked for in so many words ("define X", "what does X mean", "X: meaning", in any
phrasing `agentkit.reasoning.definitions` reads) goes to the dictionaries; "what is a X?" does
when X is a single word the dictionary has (not a respelling), so "what is a noun?" is looked up
and "what is the capital of Italy?" is not.
"""

from __future__ import annotations

from agentkit.reasoning.definitions import definition_request
from agentkit.routing.base import Query, Vote


class DictionaryPolicy:
    """Decisive for explicit definition requests; for "what is a X?" only when X is found."""

    name = "dictionary"
    calls_model = False

    def assess(self, query: Query) -> Vote:
        if not query.dictionaries:
            return Vote()
        request = definition_request(query.question)
        if request is None or not request.asks_definition:
            return Vote(signals={"dictionary:shape": 0.0, "dictionary:hit": 0.0})
        explicit = request.explicit
        found = [name for name in query.dictionaries if _knows(query, name)]
        signals = {"dictionary:shape": 1.0 if explicit else 0.5, "dictionary:hit": 1.0 if found else 0.0}
        for name in query.dictionaries:
            signals[f"dictionary:{name}"] = 1.0 if name in found else 0.0
        if explicit:
            targets = found or query.dictionaries
            why = "found in " + ", ".join(found) if found else "not found, but asked for a definition"
            return Vote(targets, 0.95 if found else 0.7, f"a request for a definition ({why})", signals, decisive=True)
        if found:
            return Vote(found, 0.85, f"'what is {request.written}?' and {', '.join(found)} has the word", signals,
                        decisive=True)
        return Vote(signals=signals)


def _knows(query: Query, name: str) -> bool:
    """The source finds the word as written (a respelt match does not count)."""
    try:
        hits = query.sources[name].search(query.question, k=1)
    except Exception:  # noqa: BLE001 - an unreachable dictionary just does not vote
        return False
    return bool(hits) and "corrected_from" not in hits[0].metadata
