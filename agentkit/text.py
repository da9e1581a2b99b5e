"""Light English text analysis shared by the in-memory index, the router and citation checks.

Deliberately dependency-free and fast: a regex tokenizer, a stopword list and an s-stemmer.
"""

from __future__ import annotations

import re
from functools import lru_cache

_WORD = re.compile(r"[^\W_]+(?:['’][^\W_]+)*", re.UNICODE)

STOPWORDS = frozenset(
    """a about above after again against all am an and any are as at be because been before being
    below between both but by can could did do does doing down during each few for from further had
    has have having he her here hers herself him himself his how i if in into is it its itself just
    me more most my myself no nor not now of off on once only or other our ours ourselves out over
    own same she should so some such than that the their theirs them themselves then there these
    they this those through to too under until up very was we were what when where which while who
    whom why will with would you your yours yourself yourselves s t don""".split()
)


def words(text: str) -> list[str]:
    """Lower-cased word tokens, stopwords kept."""
    return [w.lower() for w in _WORD.findall(text)]


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """A conservative suffix stripper: enough to match 'runs'/'running'/'run', never aggressive."""
    w = word
    if len(w) <= 3:
        return w
    if w.endswith("ies") and len(w) > 4:
        return w[:-3] + "y"
    if w.endswith("sses"):
        return w[:-2]
    for suffix in ("ingly", "edly", "ing", "ed"):
        if w.endswith(suffix) and len(w) - len(suffix) >= 3:
            w = w[: -len(suffix)]
            if len(w) > 2 and w[-1] == w[-2] and w[-1] not in "lsz":
                w = w[:-1]  # running -> runn -> run
            return w
    if w.endswith("s") and not w.endswith(("ss", "us", "is")):
        return w[:-1]
    return w


def terms(text: str) -> list[str]:
    """Index terms: words without stopwords, stemmed."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def overlap(a: str, b: str) -> float:
    """Share of `a`'s distinct terms that also occur in `b` (0 when `a` has none)."""
    ta = set(terms(a))
    if not ta:
        return 0.0
    return len(ta & set(terms(b))) / len(ta)
