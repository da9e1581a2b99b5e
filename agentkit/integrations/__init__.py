"""Bridges to other frameworks: `agentkit.integrations.langchain` and `agentkit.integrations.llama_index`.

Each bridge imports its library on first import of that module, never from here or from `import agentkit`.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from typing import Any

from agentkit.types import Passage

#: Metadata keys that carry Passage fields through a foreign document and back.
TITLE_KEY = "title"
URI_KEY = "uri"
ID_KEYS = ("id", "passage_id")


def stable_id(text: str, metadata: Mapping[str, Any] | None = None) -> str:
    """A passage id for a foreign document: its metadata id if it has one, else a hash of its text."""
    for key in ID_KEYS:
        value = (metadata or {}).get(key)
        if value not in (None, ""):
            return str(value)
    return "sha256:" + hashlib.sha256(text.encode("utf-8")).hexdigest()[:16]


def passage_metadata(passage: Passage) -> dict[str, Any]:
    """The metadata a foreign document gets for `passage`: its own plus title and uri (if set)."""
    metadata = dict(passage.metadata)
    if passage.title:
        metadata[TITLE_KEY] = passage.title
    if passage.uri:
        metadata[URI_KEY] = passage.uri
    return metadata


def to_passage(
    text: str, metadata: Mapping[str, Any] | None, *, id: str | None, source: str, score: float
) -> Passage:
    """A Passage from a foreign document: title and uri come back out of the metadata."""
    md = dict(metadata or {})
    title = str(md.pop(TITLE_KEY, "") or "")
    # LangChain loaders and LlamaIndex readers name the origin `source` / `file_path`.
    uri = str(md.pop(URI_KEY, "") or md.get("source") or md.get("file_path") or "")
    pid = id or stable_id(text, md)
    return Passage(pid, text, title, source=source, score=float(score), metadata=md, uri=uri)


def check_filters(source: Any, filters: Mapping[str, Any]) -> None:
    """InputError when `filters` name a metadata key the source does not hold (see
    `agentkit.knowledge.memory.check_filter_keys`); sources without `filterable_fields` pass."""
    from agentkit.knowledge.memory import check_filter_keys

    check_filter_keys(source, filters)


def format_passages(passages: list[Passage]) -> str:
    """Numbered evidence, as agentkit's prompts show it: `[n] title (uri)` then the text."""
    if not passages:
        return "No passage matched."
    blocks = []
    for n, p in enumerate(passages, 1):
        head = f"[{n}] {p.title}".rstrip()
        if p.uri:
            head += f" ({p.uri})"
        blocks.append(f"{head}\n{p.text}")
    return "\n\n".join(blocks)
