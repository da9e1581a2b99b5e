"""The dictionary policy: a definitional question whose word a dictionary source knows.

"Define X", "what does X mean" and "meaning of X" go to the dictionaries; "what is a X?" does
when X is a single word the dictionary has (not a respelling), so "what is a noun?" is looked up
and "what is the capital of Italy?" is not.
"""

from __future__ import annotations

import re

from agentkit.routing.base import Query, Vote

_W = r"['\"“‘]?(?P<w>[\w][\w' -]{0,60}?)['\"”’]?"
_THE_WORD = r"(?:the\s+)?(?:(?:english\s+)?(?:word|term|phrase|expression|abbreviation|acronym)\s+)?"
EXPLICIT = [
    re.compile(p, re.IGNORECASE)
    for p in (
        rf"^\s*(?:please\s+)?(?:can you\s+|could you\s+)?(?:define|look up)\s*:?\s+{_THE_WORD}{_W}\s*[.?!]*$",
        rf"^\s*what\s+(?:does|do|did)\s+{_THE_WORD}{_W}\s+(?:mean|stand for|signify)\s*[.?!]*$",
        rf"^\s*(?:what is\s+|what's\s+|give me\s+|tell me\s+)?(?:the\s+|a\s+)?(?:meaning|definition|defn)s?\s+of\s+{_THE_WORD}{_W}\s*[.?!]*$",
        rf"^\s*what\s+is\s+meant\s+by\s+{_THE_WORD}{_W}\s*[.?!]*$",
        rf"^\s*{_W}\s*[-:]?\s*(?:meaning|definition)\s*[.?!]*$",
    )
]
#: "What is a lambaste?", "What's an anemometer?": a single word only.
WHAT_IS = re.compile(r"^\s*(?:what|who)(?:\s+is|\s+are|'s)\s+(?:a|an)\s+['\"“]?(?P<w>[a-z][a-z-]{1,40})['\"”]?\s*[?.!]*$", re.IGNORECASE)


class DictionaryPolicy:
    """Decisive for explicit definition requests; for "what is a X?" only when X is found."""

    name = "dictionary"
    calls_model = False

    def assess(self, query: Query) -> Vote:
        if not query.dictionaries:
            return Vote()
        q = query.question
        explicit = any(p.match(q) for p in EXPLICIT)
        weak = None if explicit else WHAT_IS.match(q)
        if not explicit and not weak:
            return Vote(signals={"dictionary:shape": 0.0, "dictionary:hit": 0.0})
        found = [name for name in query.dictionaries if _knows(query, name)]
        signals = {"dictionary:shape": 1.0 if explicit else 0.5, "dictionary:hit": 1.0 if found else 0.0}
        for name in query.dictionaries:
            signals[f"dictionary:{name}"] = 1.0 if name in found else 0.0
        if explicit:
            targets = found or query.dictionaries
            why = "found in " + ", ".join(found) if found else "not found, but asked for a definition"
            return Vote(targets, 0.95 if found else 0.7, f"a request for a definition ({why})", signals, decisive=True)
        if found:
            return Vote(found, 0.85, f"'what is a {weak.group('w')}?' and {', '.join(found)} has the word", signals,
                        decisive=True)
        return Vote(signals=signals)


def _knows(query: Query, name: str) -> bool:
    """The source finds the word as written (a respelt match does not count)."""
    try:
        hits = query.sources[name].search(query.question, k=1)
    except Exception:  # noqa: BLE001 - an unreachable dictionary just does not vote
        return False
    return bool(hits) and "corrected_from" not in hits[0].metadata
