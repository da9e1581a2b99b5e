"""What an Elasticsearch source writes and asks: documents, ids, filter clauses and query text."""

from __future__ import annotations

import hashlib
import json
from typing import Any

from agentkit.errors import KnowledgeSourceError
from agentkit.knowledge.base import Filters
from agentkit.types import Passage

#: The dense_vector field; left out of every response (`_source` excludes), vectors are large.
EMBEDDING = "embedding"
#: Elasticsearch refuses longer `_id`s; longer passage ids are stored under a hash of themselves.
MAX_ID_BYTES = 512
#: A query with more words is cut (first occurrences kept): each word becomes a clause, and
#: clusters refuse queries with more clauses than their heap allows.
MAX_QUERY_WORDS = 1024


def es_id(passage_id: str) -> str:
    if len(passage_id.encode()) <= MAX_ID_BYTES:
        return passage_id
    return "sha256:" + hashlib.sha256(passage_id.encode()).hexdigest()


def indexed_text(p: Passage) -> str:
    return f"{p.title}\n{p.text}" if p.title else p.text


def document(p: Passage) -> dict[str, Any]:
    # A JSON round trip gives the cluster plain values (dates as ISO strings, tuples as lists).
    metadata = json.loads(json.dumps(p.metadata, default=str)) if p.metadata else {}
    return {"id": p.id, "doc_id": p.doc_id, "title": p.title, "text": p.text, "uri": p.uri, "metadata": metadata}


def filter_clauses(filters: Filters | None) -> list[dict[str, Any]] | None:
    """`bool.filter` clauses for `filters` on metadata keys; None when nothing can match.

    Metadata is a `flattened` field, which indexes every leaf value as its JSON text: 2021 as
    "2021", true as "true". Values are matched in that form, and a whole number also as its float
    spelling ("2020" and "2020.0"), so that 2020 == 2020.0 holds as it does in Python.
    """
    clauses: list[dict[str, Any]] = []
    for key, want in (filters or {}).items():
        values = list(want) if isinstance(want, (list, tuple, set, frozenset)) else [want]
        if not values:
            return None
        field = f"metadata.{key}"
        terms: list[str] = []
        missing = False
        for value in values:
            if value is None:
                missing = True
            elif isinstance(value, (str, bool, int, float)):
                terms.extend(t for t in _spellings(value) if t not in terms)
            else:
                raise KnowledgeSourceError(
                    f"filter {key!r}: {value!r} is not a string, number, boolean or null; "
                    f"elasticsearch sources filter on those only"
                )
        options: list[dict[str, Any]] = []
        if terms:
            options.append({"term": {field: terms[0]}} if len(terms) == 1 else {"terms": {field: terms}})
        if missing:  # None matches a key that is absent (or null), as in `matches`
            options.append({"bool": {"must_not": [{"exists": {"field": field}}]}})
        clauses.append(options[0] if len(options) == 1 else {"bool": {"should": options, "minimum_should_match": 1}})
    return clauses


def _spellings(value: str | float) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, bool):
        return ["true" if value else "false"]
    text = json.dumps(value)
    if isinstance(value, float) and value.is_integer():
        return [text, str(int(value))]
    if isinstance(value, int):
        return [text, f"{value}.0"]
    return [text]


def bounded(query: str) -> str:
    words = query.split()
    if len(words) <= MAX_QUERY_WORDS:
        return query
    return " ".join(list(dict.fromkeys(words))[:MAX_QUERY_WORDS])


def boosted(field: str, boost: float) -> str:
    return field if boost == 1 else f"{field}^{boost:g}"
