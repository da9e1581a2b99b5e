"""Loaders: files and folders of .txt, .md, .html and BEIR .jsonl turned into `Document`s.

A file or line that cannot be read is reported through `on_error` and skipped; the run goes on.
"""

from __future__ import annotations

import json
import logging
import os
import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, NamedTuple

from agentkit.errors import IngestError
from agentkit.types import Document

log = logging.getLogger("agentkit.ingest")

#: File suffix (lower case) -> the `format` recorded in each document's metadata.
SUPPORTED_FORMATS: dict[str, str] = {
    ".txt": "text",
    ".md": "markdown",
    ".markdown": "markdown",
    ".html": "html",
    ".htm": "html",
    ".jsonl": "jsonl",
}


class IngestFailure(NamedTuple):
    """A file (`where` = its path) or a jsonl line (`path:line`) that was skipped, and why."""

    where: str
    reason: str


OnError = Callable[[IngestFailure], None]


def _log_failure(failure: IngestFailure) -> None:
    log.warning("skipped %s: %s", failure.where, failure.reason)


@dataclass
class FileSet:
    """The files one ingested path stands for. Document ids are paths relative to `root`."""

    root: Path
    files: list[Path] = field(default_factory=list)
    #: Files in a folder whose extension no loader handles; not an error, but counted.
    unsupported: list[Path] = field(default_factory=list)
    #: Folders that could not be listed.
    failures: list[IngestFailure] = field(default_factory=list)


def supported_list() -> str:
    return " ".join(sorted(SUPPORTED_FORMATS))


def find_files(path: str | os.PathLike[str]) -> FileSet:
    """The supported files under `path` (a file or a folder, recursive, sorted, hidden entries skipped).

    Raises IngestError when `path` does not exist, or is a file with an unsupported extension:
    asking for one file explicitly and silently getting nothing would hide a mistake.
    """
    p = Path(path)
    if p.is_file():
        if p.suffix.lower() not in SUPPORTED_FORMATS:
            raise IngestError(
                f"{p}: unsupported file type {p.suffix or '(no extension)'!r}; "
                f"agentkit ingest reads: {supported_list()} (BEIR-style .jsonl)"
            )
        return FileSet(root=p.parent, files=[p])
    if not p.is_dir():
        raise IngestError(f"{p} does not exist; pass a file or folder of {supported_list()} files")

    found = FileSet(root=p)

    def unreadable(exc: OSError) -> None:
        found.failures.append(IngestFailure(str(exc.filename or p), f"cannot list folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(p, onerror=unreadable):
        # Pruning in place stops os.walk from descending into hidden folders (.git, .venv, ...).
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            f = Path(dirpath, name)
            (found.files if f.suffix.lower() in SUPPORTED_FORMATS else found.unsupported).append(f)
    # Sort on the relative path's parts so the order is the same on every platform.
    found.files.sort(key=lambda f: f.relative_to(p).parts)
    found.unsupported.sort(key=lambda f: f.relative_to(p).parts)
    return found


def load_path(path: str | os.PathLike[str], *, on_error: OnError | None = None) -> Iterator[Document]:
    """Every document under `path`, in sorted file order; failures go to `on_error` (default: logged)."""
    files = find_files(path)
    report = on_error or _log_failure
    for failure in files.failures:
        report(failure)
    for f in files.files:
        yield from load_file(f, root=files.root, on_error=report)


def load_file(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    on_error: OnError | None = None,
) -> Iterator[Document]:
    """The documents in one file: one per file, or one per line for .jsonl.

    Ids of whole-file documents are the path relative to `root` (default: the file's folder),
    with `/` separators, so re-ingesting the same tree gives the same ids.
    """
    p = Path(path)
    report = on_error or _log_failure
    fmt = SUPPORTED_FORMATS.get(p.suffix.lower())
    if fmt is None:
        raise IngestError(f"{p}: unsupported file type; agentkit ingest reads: {supported_list()}")
    absolute = p.resolve()
    if fmt == "jsonl":
        yield from _load_jsonl(p, absolute, report)
        return

    try:
        raw = p.read_bytes()
    except OSError as exc:
        report(IngestFailure(str(p), f"cannot read: {exc.strerror or exc}"))
        return
    try:
        text = _decode(raw)
    except UnicodeDecodeError as exc:
        report(IngestFailure(str(p), _decode_reason(exc)))
        return

    base = Path(root) if root is not None else p.parent
    try:
        doc_id = p.relative_to(base).as_posix()
    except ValueError:
        doc_id = p.name
    metadata: dict[str, Any] = {"path": str(absolute), "format": fmt}
    try:
        if fmt == "markdown":
            title = markdown_title(text) or p.stem
        elif fmt == "html":
            text, html_title = html_to_text(text)
            title = html_title or p.stem
        else:
            title = p.stem
    except Exception as exc:  # noqa: BLE001 - a parser bug on one file must not stop the run
        report(IngestFailure(str(p), f"cannot parse {fmt}: {type(exc).__name__}: {exc}"))
        return
    yield Document(id=doc_id, text=text, title=title, metadata=metadata)


def _decode(raw: bytes) -> str:
    # utf-8-sig drops a byte-order mark that editors on Windows like to add.
    return raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")


def _decode_reason(exc: UnicodeDecodeError) -> str:
    bad = exc.object[exc.start : exc.start + 1].hex()
    return f"not valid UTF-8 (byte 0x{bad} at offset {exc.start}); convert the file to UTF-8"


# --- BEIR .jsonl ------------------------------------------------------------------------------


def _load_jsonl(p: Path, absolute: Path, report: OnError) -> Iterator[Document]:
    """One document per line: `_id` (or `id`), `title`, `text`; other keys become metadata."""
    try:
        handle = p.open("rb")
    except OSError as exc:
        report(IngestFailure(str(p), f"cannot read: {exc.strerror or exc}"))
        return
    with handle:
        # Lines are decoded one by one so that a bad line costs that line, not the file.
        for lineno, raw in enumerate(handle, 1):
            where = f"{p}:{lineno}"
            if not raw.strip():
                continue
            try:
                record = json.loads(raw.decode("utf-8-sig"))
            except UnicodeDecodeError as exc:
                report(IngestFailure(where, _decode_reason(exc)))
                continue
            except json.JSONDecodeError as exc:
                report(IngestFailure(where, f"not valid JSON: {exc.msg} at column {exc.colno}"))
                continue
            if not isinstance(record, dict):
                report(IngestFailure(where, f"expected a JSON object, got {type(record).__name__}"))
                continue
            doc_id = record.pop("_id", None)
            if doc_id is None:
                doc_id = record.pop("id", None)
            if doc_id is None or str(doc_id).strip() == "":
                report(IngestFailure(where, 'the record has no "_id" (or "id")'))
                continue
            text = record.pop("text", "")
            title = record.pop("title", "")
            if not isinstance(text, str) or not isinstance(title, str):
                report(IngestFailure(where, '"text" and "title" must be strings'))
                continue
            metadata: dict[str, Any] = {}
            # BEIR corpora carry an (often empty) "metadata" object; flatten it into ours.
            extra = record.pop("metadata", None)
            if isinstance(extra, dict):
                metadata.update(extra)
            elif extra is not None:
                metadata["metadata"] = extra
            metadata.update(record)
            metadata.update({"path": str(absolute), "format": "jsonl", "line": lineno})
            yield Document(id=str(doc_id), text=text, title=title, metadata=metadata)


# --- Markdown ---------------------------------------------------------------------------------

_FENCE = re.compile(r"^\s{0,3}(```|~~~)")
_H1 = re.compile(r"^\s{0,3}#\s+(.+?)(?:\s+#+)?\s*$")


def markdown_title(text: str) -> str:
    """The first level-1 `# heading` outside code fences, or "" when there is none."""
    in_fence = False
    for line in text.splitlines():
        if _FENCE.match(line):
            in_fence = not in_fence  # a `# comment` in a shell block is not a heading
            continue
        if not in_fence:
            m = _H1.match(line)
            if m:
                return m.group(1).strip()
    return ""


# --- HTML -------------------------------------------------------------------------------------

#: Elements whose content is not prose: code, styling, menus.
_SKIP = frozenset({"script", "style", "nav", "noscript", "template", "svg"})
#: Elements that start a new paragraph.
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main",
    "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.paragraphs: list[str] = []
        self._current: list[str] = []
        self._lines: list[str] = []
        self._skip = 0
        self._pre = 0
        self._in_title = False
        self._in_h1 = False
        self.title = ""
        self.h1 = ""
        self._h1_parts: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif tag in _SKIP:
            self._skip += 1
        if tag == "br":
            self._line_break()
        elif tag in _BLOCK:
            self._break()
        if tag == "pre":
            self._pre += 1
        elif tag == "h1" and not self.h1:
            self._in_h1 = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "br":
            self._line_break()
        elif tag in _BLOCK:  # <hr/>
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
        elif tag in _SKIP and self._skip:
            self._skip -= 1
        if tag == "h1" and self._in_h1:
            self._in_h1 = False
            self.h1 = " ".join("".join(self._h1_parts).split())
        if tag in _BLOCK and tag != "br":
            self._break()  # before leaving <pre>, so its text keeps its line breaks
        if tag == "pre" and self._pre:
            self._pre -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self._skip:
            return
        if self._in_h1:
            self._h1_parts.append(data)
        self._current.append(data)

    def _line_break(self) -> None:
        """End the current line but not the paragraph (<br>)."""
        raw = "".join(self._current)
        self._current = []
        line = raw if self._pre else " ".join(raw.split())
        if line.strip():
            self._lines.append(line)

    def _break(self) -> None:
        """End the current paragraph."""
        self._line_break()
        if self._lines:
            text = "\n".join(self._lines).strip("\n") if self._pre else "\n".join(self._lines)
            self._lines = []
            self.paragraphs.append(text)

    def result(self) -> tuple[str, str]:
        self._break()
        title = " ".join(self.title.split()) or self.h1
        return "\n\n".join(self.paragraphs), title


def html_to_text(html: str) -> tuple[str, str]:
    """(text, title) of an HTML page: paragraphs separated by blank lines, no script/style/nav."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.result()
