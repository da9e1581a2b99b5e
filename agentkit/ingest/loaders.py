"""Loaders: files and folders turned into `Document`s, through the loaders registered by suffix.

Built-in loaders (.txt, .md, .html, .pdf, .docx) register through the plugin hook
`register_loaders`, like third-party ones; BEIR .jsonl corpora are read here, line by line.
A file or line that cannot be read is reported through `on_error` and skipped; the run goes on.
"""

from __future__ import annotations

import errno
import json
import logging
import os
import re
import stat
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from html.parser import HTMLParser
from pathlib import Path
from typing import Any, BinaryIO, NamedTuple

from agentkit.errors import IngestError
from agentkit.types import Document

log = logging.getLogger("agentkit.ingest")

#: A corpus format read here (one document per line, each line bounded), not by a registered loader.
JSONL = ".jsonl"


@dataclass
class Loaded:
    """What a loader makes of one file's bytes."""

    text: str
    title: str = ""
    #: Recorded as the documents' `format` metadata; default: the suffix without its dot.
    format: str = ""
    #: Character offsets in `text` where page 1, 2, ... start (paged formats such as PDF): each
    #: chunk then records its `page` and its uri points at it (`file://…#page=3`).
    page_starts: list[int] | None = None
    #: Extra metadata for every chunk of the document (author, ...).
    metadata: dict[str, Any] = field(default_factory=dict)


Loader = Callable[[bytes, Path], "Loaded | str"]


def _loaders() -> dict[str, Any]:
    from agentkit.plugins import registry

    return registry().loaders


def supported_suffixes() -> list[str]:
    """Every suffix `agentkit ingest` reads: the registered loaders' and .jsonl."""
    return sorted({*_loaders(), JSONL})


#: Default per-file limit: a whole file is read into memory, so a huge or endless one must stop.
DEFAULT_MAX_FILE_MB = 50.0


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
    #: Folders that could not be listed, and entries that are not regular files.
    failures: list[IngestFailure] = field(default_factory=list)
    #: True when the path was a folder (only then can a missing file mean it was deleted).
    folder: bool = False


def supported_list() -> str:
    return " ".join(supported_suffixes())


def find_files(path: str | os.PathLike[str]) -> FileSet:
    """The supported files under `path` (a file or a folder, recursive, sorted, hidden entries skipped).

    Raises IngestError when `path` does not exist, or is a file with an unsupported extension:
    asking for one file explicitly and silently getting nothing would hide a mistake.
    """
    p = Path(path)
    try:
        mode = os.stat(p).st_mode
    except OSError as exc:
        if exc.errno == errno.ELOOP:
            raise IngestError(f"{p} is a symlink loop; point it at a real file or folder") from None
        mode = None
    if mode is not None and not (stat.S_ISREG(mode) or stat.S_ISDIR(mode)):
        raise IngestError(f"{p} is {_kind(mode)}, not a regular file or folder; only regular files are read")
    if p.is_file():
        if p.suffix.lower() not in supported_suffixes():
            raise IngestError(_unsupported(p))
        return FileSet(root=p.parent, files=[p])
    if not p.is_dir():
        raise IngestError(f"{p} does not exist; pass a file or folder of {supported_list()} files")

    found = FileSet(root=p, folder=True)
    suffixes = set(supported_suffixes())

    def unreadable(exc: OSError) -> None:
        found.failures.append(IngestFailure(str(exc.filename or p), f"cannot list folder: {exc.strerror or exc}"))

    for dirpath, dirnames, filenames in os.walk(p, onerror=unreadable):
        # Pruning in place stops os.walk from descending into hidden folders (.git, .venv, ...).
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for name in filenames:
            if name.startswith("."):
                continue
            f = Path(dirpath, name)
            if f.suffix.lower() not in suffixes:
                found.unsupported.append(f)
                continue
            # Symlinks to files are followed (os.walk does not descend into linked folders, so a
            # folder loop cannot occur); a link loop, a FIFO or a device is named and skipped here,
            # before anything would block on it or read it forever.
            try:
                mode = os.stat(f).st_mode
            except OSError as exc:
                found.failures.append(IngestFailure(str(f), _os_reason(exc)))
                continue
            if not stat.S_ISREG(mode):
                found.failures.append(IngestFailure(str(f), _not_regular(mode)))
                continue
            found.files.append(f)
    # Sort on the relative path's parts so the order is the same on every platform.
    found.files.sort(key=lambda f: f.relative_to(p).parts)
    found.unsupported.sort(key=lambda f: f.relative_to(p).parts)
    return found


def load_path(
    path: str | os.PathLike[str], *, on_error: OnError | None = None, max_file_mb: float = DEFAULT_MAX_FILE_MB
) -> Iterator[Document]:
    """Every document under `path`, in sorted file order; failures go to `on_error` (default: logged)."""
    files = find_files(path)
    report = on_error or _log_failure
    for failure in files.failures:
        report(failure)
    for f in files.files:
        yield from load_file(f, root=files.root, on_error=report, max_file_mb=max_file_mb)


def load_file(
    path: str | os.PathLike[str],
    *,
    root: str | os.PathLike[str] | None = None,
    on_error: OnError | None = None,
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
) -> Iterator[Document]:
    """The documents in one file: one per file, or one per line for .jsonl.

    Ids of whole-file documents are the path relative to `root` (default: the file's folder),
    with `/` separators, so re-ingesting the same tree gives the same ids. Only regular files are
    read; a whole file over `max_file_mb` (for .jsonl: a line over it) is skipped and named. The
    file's loader is the one registered for its suffix (`register_loaders`).
    """
    p = Path(path)
    report = on_error or _log_failure
    suffix = p.suffix.lower()
    loaders = _loaders()
    if suffix != JSONL and suffix not in loaders:
        raise IngestError(_unsupported(p))
    max_bytes = int(max_file_mb * 1024 * 1024)
    opened = _open_regular(p, report)
    if opened is None:
        return
    handle, size = opened
    # realpath, unlike Path.resolve() on Python 3.11, never raises on a symlink loop.
    absolute = Path(os.path.realpath(p))
    with handle:
        if suffix == JSONL:
            yield from _load_jsonl(p, handle, absolute, report, max_bytes, max_file_mb)
            return
        if size > max_bytes:
            report(IngestFailure(str(p), _too_big(size, max_file_mb)))
            return
        try:
            # One byte past the limit: a file that grows while read (or lies about its size) stops.
            raw = handle.read(max_bytes + 1)
        except OSError as exc:
            report(IngestFailure(str(p), f"cannot read: {exc.strerror or exc}"))
            return
    if len(raw) > max_bytes:
        report(IngestFailure(str(p), _too_big(len(raw), max_file_mb)))
        return
    fmt = suffix[1:]
    try:
        from agentkit.plugins import registry

        loaded = registry().loader(suffix)(raw, p)
        if isinstance(loaded, str):
            loaded = Loaded(loaded)
        if not isinstance(loaded, Loaded):
            raise TypeError(f"the {suffix} loader returned {type(loaded).__name__}, not Loaded or str")
    except IngestError as exc:  # the loader's own reason, already phrased for the user
        report(IngestFailure(str(p), str(exc)))
        return
    except Exception as exc:  # noqa: BLE001 - a parser bug (or a plugin's) on one file must not stop the run
        report(IngestFailure(str(p), f"cannot parse {fmt}: {type(exc).__name__}: {exc}"))
        return
    text = loaded.text
    if "\0" in text:
        report(IngestFailure(str(p), _nul_reason(text)))
        return

    base = Path(root) if root is not None else p.parent
    try:
        doc_id = p.relative_to(base).as_posix()
    except ValueError:
        doc_id = p.name
    metadata: dict[str, Any] = {**loaded.metadata, "path": str(absolute), "format": loaded.format or fmt}
    if loaded.page_starts:
        metadata["page_starts"] = list(loaded.page_starts)
    yield Document(id=doc_id, text=text, title=loaded.title or p.stem, metadata=metadata)


# --- the built-in text loaders (registered in agentkit.plugins) ----------------------------------


def _text(raw: bytes) -> str:
    try:
        text = _decode(raw)
    except UnicodeDecodeError as exc:
        raise IngestError(_decode_reason(exc)) from None
    if "\0" in text:
        raise IngestError(_nul_reason(text))
    return text


def load_text(raw: bytes, path: Path) -> Loaded:
    return Loaded(_text(raw), format="text")


def load_markdown(raw: bytes, path: Path) -> Loaded:
    text = _text(raw)
    return Loaded(text, markdown_title(text), format="markdown")


def load_html(raw: bytes, path: Path) -> Loaded:
    text, title = html_to_text(_text(raw))
    return Loaded(text, title, format="html")


def _unsupported(p: Path) -> str:
    return (f"{p}: unsupported file type {p.suffix or '(no extension)'!r}; agentkit ingest reads: "
            f"{supported_list()} (BEIR-style .jsonl); a plugin can add more (register_loaders)")


def _open_regular(p: Path, report: OnError) -> tuple[BinaryIO, int] | None:
    """`p` opened for reading and its size, or None (reported) when it is not a regular file.

    O_NONBLOCK keeps open() of a FIFO from waiting for a writer; fstat on the open descriptor
    then tells what was really opened, whatever a symlink pointed at.
    """
    try:
        fd = os.open(p, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
    except OSError as exc:
        report(IngestFailure(str(p), _os_reason(exc)))
        return None
    st = os.fstat(fd)
    if not stat.S_ISREG(st.st_mode):
        os.close(fd)
        report(IngestFailure(str(p), _not_regular(st.st_mode)))
        return None
    os.set_blocking(fd, True)
    return os.fdopen(fd, "rb"), st.st_size


def _kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISDIR(mode):
        return "a folder"
    return "not a regular file"


def _not_regular(mode: int) -> str:
    return f"{_kind(mode)}, not a regular file; only regular files are read"


def _os_reason(exc: OSError) -> str:
    if exc.errno == errno.ELOOP:
        return "symlink loop; fix or remove the link"
    if exc.errno == errno.ENOENT:
        return "broken symlink (its target does not exist)"
    return f"cannot read: {exc.strerror or exc}"


def _too_big(size: int | None, max_file_mb: float) -> str:
    # A long .jsonl line is read past without being held, so its size is not known (None).
    what = "the line is longer than the" if size is None else f"the file is {size / 1024 / 1024:,.1f} MB, over the"
    return f"{what} limit of {max_file_mb:g} MB per file; raise ingest.max_file_mb in the config or pass --max-file-mb"


def _nul_reason(text: str) -> str:
    return (
        f"contains NUL characters (first at character {text.index(chr(0))}): a binary file, or UTF-16 "
        f"text; convert it to UTF-8 text"
    )


def _decode(raw: bytes) -> str:
    # utf-8-sig drops a byte-order mark that editors on Windows like to add.
    return raw.decode("utf-8-sig").replace("\r\n", "\n").replace("\r", "\n")


def _decode_reason(exc: UnicodeDecodeError) -> str:
    bad = exc.object[exc.start : exc.start + 1].hex()
    return f"not valid UTF-8 (byte 0x{bad} at offset {exc.start}); convert the file to UTF-8"


# --- BEIR .jsonl ------------------------------------------------------------------------------


def _lines(handle: BinaryIO, max_bytes: int) -> Iterator[bytes | None]:
    """The lines of `handle`, None for one longer than `max_bytes` (it is read past, never held)."""
    while True:
        raw = handle.readline(max_bytes + 1)
        if not raw:
            return
        if len(raw) > max_bytes and not raw.endswith(b"\n"):
            while raw and not raw.endswith(b"\n"):
                raw = handle.readline(max_bytes + 1)
            yield None
            continue
        yield raw


def _load_jsonl(
    p: Path, handle: BinaryIO, absolute: Path, report: OnError, max_bytes: int, max_file_mb: float
) -> Iterator[Document]:
    """One document per line: `_id` (or `id`), `title`, `text`; other keys become metadata."""
    # Lines are decoded one by one so that a bad line costs that line, not the file.
    for lineno, raw in enumerate(_lines(handle, max_bytes), 1):
        where = f"{p}:{lineno}"
        if raw is None:
            report(IngestFailure(where, _too_big(None, max_file_mb)))
            continue
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
        if "\0" in text or "\0" in title:
            report(IngestFailure(where, _nul_reason(title + text)))
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

#: Elements whose content is not prose: code, styling, menus, page furniture.
_SKIP = frozenset({"script", "style", "nav", "noscript", "template", "svg", "footer", "button", "select"})
#: ARIA roles of page furniture (site menus, banners, search boxes, footers).
_SKIP_ROLES = frozenset({"navigation", "banner", "contentinfo", "search", "menu", "menubar"})
#: Elements with no end tag: an attribute on one must not start a region that never ends.
_VOID = frozenset({"area", "base", "br", "col", "embed", "hr", "img", "input", "link", "meta", "source", "track", "wbr"})
#: Where a page's own text lives; when a page has one, text outside it (sidebars, menus) is dropped.
_MAIN = frozenset({"main", "article"})
#: Elements that start a new paragraph.
_BLOCK = frozenset({
    "address", "article", "aside", "blockquote", "br", "dd", "div", "dl", "dt", "figcaption",
    "figure", "footer", "form", "h1", "h2", "h3", "h4", "h5", "h6", "header", "hr", "li", "main",
    "ol", "p", "pre", "section", "table", "td", "th", "tr", "ul",
})


class _TextExtractor(HTMLParser):
    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        #: (text, inside <main>/<article>) per paragraph.
        self.paragraphs: list[tuple[str, bool]] = []
        self._current: list[str] = []
        self._lines: list[str] = []
        self._in_main_text = False
        #: The element that opened the skipped region, and how deep it is nested in itself.
        self._skip_tag = ""
        self._skip_depth = 0
        self._main = 0
        self._pre = 0
        self._in_title = False
        self._in_h1 = False
        self.title = ""
        self.h1 = ""
        self._h1_parts: list[str] = []

    @staticmethod
    def _furniture(tag: str, attrs: list[tuple[str, str | None]]) -> bool:
        if tag in _SKIP:
            return True
        if tag in _VOID:
            return False
        a = {k: (v or "") for k, v in attrs}
        return "hidden" in a or a.get("aria-hidden", "").lower() == "true" or a.get("role", "").lower() in _SKIP_ROLES

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "title":
            self._in_title = True
        elif self._skip_depth:
            if tag == self._skip_tag:
                self._skip_depth += 1
            return
        elif self._furniture(tag, attrs):
            self._break()
            self._skip_tag, self._skip_depth = tag, 1
            return
        if tag == "br":
            self._line_break()
        elif tag in _BLOCK:
            self._break()
        if tag in _MAIN:
            self._main += 1
        if tag == "pre":
            self._pre += 1
        elif tag == "h1" and not self.h1:
            self._in_h1 = True

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip_depth:
            return
        if tag == "br":
            self._line_break()
        elif tag in _BLOCK:  # <hr/>
            self._break()

    def handle_endtag(self, tag: str) -> None:
        if tag == "title":
            self._in_title = False
            return
        if self._skip_depth:
            if tag == self._skip_tag:
                self._skip_depth -= 1
            return
        if tag == "h1" and self._in_h1:
            self._in_h1 = False
            self.h1 = " ".join("".join(self._h1_parts).split())
        if tag in _BLOCK and tag != "br":
            self._break()  # before leaving <pre>, so its text keeps its line breaks
        if tag in _MAIN and self._main:
            self._main -= 1
        if tag == "pre" and self._pre:
            self._pre -= 1

    def handle_data(self, data: str) -> None:
        if self._in_title:
            self.title += data
            return
        if self._skip_depth:
            return
        if self._in_h1:
            self._h1_parts.append(data)
        if self._main and data.strip():
            self._in_main_text = True
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
            self.paragraphs.append((text, self._in_main_text))
        self._in_main_text = False

    def result(self) -> tuple[str, str]:
        self._break()
        title = " ".join(self.title.split()) or self.h1
        # A page that marks its own text (<main>, <article>) loses its sidebars and menus.
        main = [text for text, inside in self.paragraphs if inside]
        return "\n\n".join(main or [text for text, _ in self.paragraphs]), title


def html_to_text(html: str) -> tuple[str, str]:
    """(text, title) of an HTML page: headings and paragraphs separated by blank lines; no
    script, style, menus, footers or hidden elements; only the <main>/<article> text when the page has one."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.result()
