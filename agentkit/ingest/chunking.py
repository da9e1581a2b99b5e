"""Chunking: a `Document` cut into overlapping windows of tokens, each an exact slice of its text.

A token here is a word or a punctuation mark (`regex_tokenize`), not a model token, unless a
caller passes a model's tokenizer: `chunk_tokens: 200` is 200 words and marks, which SmolLM2
reads as ~220 tokens (examples/docs: 1.10 per word or mark; at most 257 in one chunk).

Passage ids are `doc_id#i`, so re-ingesting a document replaces its chunks instead of adding more.
"""

from __future__ import annotations

import bisect
import hashlib
import re
from collections.abc import Callable, Sequence
from pathlib import Path
from urllib.parse import quote

from agentkit.types import Document, Passage

Span = tuple[int, int]
#: text -> (start, end) character offsets of its tokens, in order and not overlapping.
Tokenizer = Callable[[str], Sequence[Span]]

_TOKEN = re.compile(r"\w+(?:['’]\w+)*|[^\w\s]", re.UNICODE)
_SENTENCE_END = frozenset(".!?;:…")
_CLOSERS = frozenset("\"')]”’»*_`")
#: Share of the window, at its end, searched for a paragraph or sentence boundary.
BOUNDARY_ZONE = 0.2


def regex_tokenize(text: str) -> list[Span]:
    """Words (with inner apostrophes) and single punctuation marks, as character spans."""
    return [m.span() for m in _TOKEN.finditer(text)]


def doc_hash(doc: Document) -> str:
    """sha1 of a document's title and text: equal hashes mean the chunks would be equal too."""
    h = hashlib.sha1()
    h.update(doc.title.encode("utf-8"))
    h.update(b"\0")
    h.update(doc.text.encode("utf-8"))
    return h.hexdigest()


def _paged_windows(
    text: str, spans: Sequence[Span], page_starts: Sequence[int], chunk_tokens: int, overlap: int
) -> list[tuple[int, int]]:
    """`chunk_spans` page by page: no window crosses a page start."""
    starts = [s for s, _ in spans]
    bounds = [bisect.bisect_left(starts, offset) for offset in page_starts[1:]]
    windows: list[tuple[int, int]] = []
    for lo, hi in zip([0, *bounds], [*bounds, len(spans)]):
        if hi > lo:
            windows += [(lo + a, lo + b) for a, b in chunk_spans(text, spans[lo:hi], chunk_tokens, overlap)]
    return windows


def chunk_spans(
    text: str,
    spans: Sequence[Span],
    chunk_tokens: int = 200,
    overlap: int = 40,
) -> list[tuple[int, int]]:
    """Windows as (first token, end token) index pairs over `spans`.

    A window that does not reach the end of the text is shortened, by at most BOUNDARY_ZONE of
    its length, to end at a paragraph break or else a sentence end, so chunks read as whole thoughts.
    The next window starts `overlap` tokens before the previous one ended.
    """
    if chunk_tokens < 1:
        raise ValueError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise ValueError(f"overlap must be between 0 and chunk_tokens - 1 ({chunk_tokens - 1}), got {overlap}")
    n = len(spans)
    windows: list[tuple[int, int]] = []
    start = 0
    zone = max(1, int(chunk_tokens * BOUNDARY_ZONE))
    while start < n:
        end = min(start + chunk_tokens, n)
        if end < n:
            end = _boundary(text, spans, max(start + 1, end - zone), end) or end
        windows.append((start, end))
        if end == n:
            break
        # Always move forward, even when a boundary made the window shorter than the overlap.
        start = max(end - overlap, start + 1)
    return windows


def _boundary(text: str, spans: Sequence[Span], lo: int, hi: int) -> int | None:
    """The latest j in [lo, hi] such that a paragraph (preferred) or sentence ends before token j."""
    sentence = None
    for j in range(hi, lo - 1, -1):
        gap = text[spans[j - 1][1] : spans[j][0]]
        if gap.count("\n") >= 2:
            return j
        if sentence is None and gap and _ends_sentence(text, spans[j - 1]):
            sentence = j
    return sentence


def _ends_sentence(text: str, span: Span) -> bool:
    token = text[span[0] : span[1]].rstrip()
    # Step back over closing quotes and brackets: `said "yes."` ends a sentence.
    token = token.rstrip("".join(_CLOSERS))
    if token:
        return token[-1] in _SENTENCE_END
    # The token was only a closer: look at the character just before it.
    i = span[0] - 1
    while i >= 0 and text[i] in _CLOSERS:
        i -= 1
    return i >= 0 and text[i] in _SENTENCE_END


def chunk_document(
    doc: Document,
    chunk_tokens: int = 200,
    overlap: int = 40,
    tokenizer: Tokenizer | None = None,
) -> list[Passage]:
    """The passages of `doc`: `chunk_tokens`-token windows sharing `overlap` tokens.

    `tokenizer` (text -> spans) lets a model's own tokenizer decide what a token is; the default
    (what `agentkit ingest` uses) counts words and punctuation marks. A document without any
    token gives no passages.
    """
    spans = list((tokenizer or regex_tokenize)(doc.text))
    if not spans:
        return []
    # A paged document (PDF) records where each page starts: chunks then stay within one page,
    # so that each passage can name the page a citation should open.
    pages = doc.metadata.get("page_starts")
    if pages:
        windows = _paged_windows(doc.text, spans, pages, chunk_tokens, overlap)
    else:
        windows = chunk_spans(doc.text, spans, chunk_tokens, overlap)
    digest = doc_hash(doc)
    total = len(windows)
    tokenizer_name = "regex" if tokenizer is None else getattr(tokenizer, "__name__", type(tokenizer).__name__)
    chunking = f"tokens={chunk_tokens},overlap={overlap},tokenizer={tokenizer_name}"
    passages = []
    base = {k: v for k, v in doc.metadata.items() if k != "page_starts"}
    for i, (first, last) in enumerate(windows):
        start, end = spans[first][0], spans[last - 1][1]
        # Model tokenizers often put the leading space inside a token; keep chunks trimmed.
        piece = doc.text[start:end]
        start += len(piece) - len(piece.lstrip())
        end -= len(piece) - len(piece.rstrip())
        metadata = {
            **base,
            "doc_id": doc.id,
            "chunk": i,
            "n_chunks": total,
            "doc_hash": digest,
            "chunking": chunking,
            "start": start,
            "end": end,
        }
        if pages:
            metadata["page"] = max(1, bisect.bisect_right(pages, start))
        passages.append(
            Passage(
                id=f"{doc.id}#{i}",
                text=doc.text[start:end],
                title=doc.title,
                metadata=metadata,
                uri=passage_uri(doc, i, metadata.get("page")),
            )
        )
    return passages


def passage_uri(doc: Document, chunk: int, page: int | None = None) -> str:
    """`file:///abs/path#chunk=i` for a whole file (`#page=n`, which PDF viewers open at, for a
    paged one); `doc://<id>#chunk=i` for a record in a corpus."""
    path = doc.metadata.get("path")
    if path and "line" not in doc.metadata and Path(str(path)).is_absolute():
        return f"{Path(str(path)).as_uri()}#{f'page={page}' if page else f'chunk={chunk}'}"
    return f"doc://{quote(doc.id, safe='/:@!$&()*+,;=-._~')}#chunk={chunk}"
