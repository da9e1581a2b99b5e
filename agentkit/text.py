"""Light English text analysis shared by the in-memory index, the router and citation checks.

A regex tokenizer, a stopword list and Snowball's English stemmer (PyStemmer), the one the
embedded store indexes with.
"""

from __future__ import annotations

import re
from functools import lru_cache
from typing import Any

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


@lru_cache(maxsize=1)
def _snowball() -> Any:
    import Stemmer  # PyStemmer: the Snowball stemmers in C

    return Stemmer.Stemmer("english")


@lru_cache(maxsize=65536)
def stem(word: str) -> str:
    """The Snowball English (Porter2) stem of a lower-cased word: the stemmer the embedded
    store's BM25 (qdrant_edge.Bm25, Qdrant's server-side BM25) uses, so a word matches the same
    way in routing, citation checks, the memory index and search."""
    return str(_snowball().stemWord(word))


def terms(text: str) -> list[str]:
    """Index terms: words without stopwords, stemmed."""
    return [stem(w) for w in words(text) if w not in STOPWORDS]


def overlap(a: str, b: str) -> float:
    """Share of `a`'s distinct terms that also occur in `b` (0 when `a` has none)."""
    ta = set(terms(a))
    if not ta:
        return 0.0
    return len(ta & set(terms(b))) / len(ta)
