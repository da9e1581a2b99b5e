"""The ingestion pipeline: paths -> documents -> chunks -> any WritableSource, idempotently.

Unchanged documents are skipped, changed ones are replaced in place, and stale chunks removed;
the writes are ordered so that a run killed at any point is finished by the next one.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

from agentkit.errors import IngestError
from agentkit.ingest.chunking import Tokenizer, chunk_document
from agentkit.ingest.loaders import DEFAULT_MAX_FILE_MB, FileSet, IngestFailure, find_files, load_file
from agentkit.knowledge.base import ScannableSource, WritableSource, is_writable
from agentkit.types import Passage

PathLike = str | os.PathLike[str]

#: Metadata of a document's chunk 0 that must match for the document to count as unchanged.
#: `path` is included so that a moved corpus gets its `file://` uris refreshed.
_FINGERPRINT = ("doc_hash", "n_chunks", "chunking", "path")
#: Metadata keys of a chunk 0 written *before* the rest of its document ("in progress"): such a
#: head never counts as unchanged, and `ingest_span` bounds the chunk ids the document may hold.
_PENDING, _SPAN = "ingest_state", "ingest_span"
#: Failures spelled out in `IngestReport.summary()`; the rest are counted.
_SUMMARY_FAILURES = 3


@dataclass
class IngestReport:
    """What one `ingest()` run did. `failures` are (where, reason) pairs: a path or `path:line`."""

    source: str = ""
    files: int = 0
    #: Documents read, including unchanged ones; duplicates and failures are not counted.
    documents: int = 0
    chunks_written: int = 0
    unchanged_documents: int = 0
    chunks_deleted: int = 0
    #: Documents removed by `prune=True` because their file is gone from an ingested folder.
    documents_pruned: int = 0
    #: Files in the given folders with an extension no loader reads (skipped, not failures).
    unsupported_files: int = 0
    #: Those files' paths (the summary names them, with their suffix).
    unsupported: list[str] = field(default_factory=list)
    failures: list[IngestFailure] = field(default_factory=list)
    elapsed_s: float = 0.0

    def summary(self) -> str:
        head = (
            f"ingested {_n(self.documents, 'document')} ({_n(self.chunks_written, 'chunk')}) "
            f"from {_n(self.files, 'file')} into {self.source!r} in {self.elapsed_s:.1f} s"
        )
        parts = [head]
        if self.unchanged_documents:
            parts.append(f"{self.unchanged_documents} unchanged")
        if self.chunks_deleted:
            parts.append(f"{_n(self.chunks_deleted, 'stale chunk')} removed")
        if self.documents_pruned:
            parts.append(f"{_n(self.documents_pruned, 'document')} of deleted files pruned")
        if self.unsupported_files:
            shown = ", ".join(self.unsupported[:_SUMMARY_FAILURES])
            more = self.unsupported_files - _SUMMARY_FAILURES
            parts.append(f"{_n(self.unsupported_files, 'file')} of unsupported type skipped (no loader for their "
                         f"suffix; a plugin can add one): {shown}" + (f"; and {more} more" if more > 0 else ""))
        if self.failures:
            shown = "; ".join(f"{where}: {why}" for where, why in self.failures[:_SUMMARY_FAILURES])
            more = len(self.failures) - _SUMMARY_FAILURES
            parts.append(f"{len(self.failures)} failed: {shown}" + (f"; and {more} more" if more > 0 else ""))
        return "; ".join(parts)


def _n(count: int, noun: str) -> str:
    return f"{count} {noun}{'' if count == 1 else 's'}"


def ingest(
    paths: PathLike | Iterable[PathLike],
    source: WritableSource,
    *,
    chunk_tokens: int = 200,
    overlap: int = 40,
    batch_size: int = 256,
    progress: bool = True,
    tokenizer: Tokenizer | None = None,
    max_file_mb: float = DEFAULT_MAX_FILE_MB,
    id_prefix: str = "",
    prune: bool = False,
) -> IngestReport:
    """Load, chunk and write every document under `paths` into `source`; return what was done.

    Files or lines that cannot be read land in `report.failures` and the run goes on. Errors of
    the source itself (e.g. SourceUnavailable) propagate, as does a kill; what was written
    before stays valid, and running the same command again converges to a clean ingest.

    `id_prefix` is put before every document id (two folders with a README.md each: ingest one
    with `id_prefix="projB/"`); a file whose id is held by another file that still exists is
    skipped and named rather than overwriting it. `prune=True` removes the stored documents of
    files under an ingested folder that no longer exist there (it needs a ScannableSource).
    """
    started = time.perf_counter()
    if chunk_tokens < 1:
        raise IngestError(f"chunk_tokens must be at least 1, got {chunk_tokens}")
    if not 0 <= overlap < chunk_tokens:
        raise IngestError(f"overlap ({overlap}) must be at least 0 and smaller than chunk_tokens ({chunk_tokens})")
    if batch_size < 1:
        raise IngestError(f"batch_size must be at least 1, got {batch_size}")
    name = getattr(source, "name", type(source).__name__)
    if not is_writable(source):
        raise IngestError(f"source {name!r} is read-only (it has no add/get/delete/count); ingest into a writable one")
    if max_file_mb <= 0:
        raise IngestError(f"max_file_mb must be above 0, got {max_file_mb}")
    if prune and not isinstance(source, ScannableSource):
        raise IngestError(f"source {name!r} cannot list its documents (no ids_where), so it cannot prune; drop prune")

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    # Every path is checked before anything is written: a typo fails fast, with nothing half-done.
    filesets = [find_files(p) for p in paths]
    report = IngestReport(source=name)
    for fs in filesets:
        report.files += len(fs.files)
        report.unsupported_files += len(fs.unsupported)
        report.unsupported.extend(str(f) for f in fs.unsupported)
        report.failures.extend(fs.failures)

    from tqdm import tqdm

    # disable=None: tqdm shows the bar only when stderr is a terminal.
    bar = tqdm(desc=f"ingest → {name}", unit="doc", file=sys.stderr, disable=None if progress else True)
    if not bar.disable:
        bar.total = _estimate_documents(filesets)
    writer = _Writer(source, report, batch_size)
    first_seen: dict[str, str] = {}
    try:
        for fs in filesets:
            for f in fs.files:
                bar.set_postfix_str(f.name, refresh=False)
                for doc in load_file(f, root=fs.root, on_error=report.failures.append, max_file_mb=max_file_mb):
                    bar.update(1)
                    if id_prefix:
                        doc = replace(doc, id=id_prefix + doc.id)
                    where = f"{f}:{doc.metadata['line']}" if "line" in doc.metadata else str(f)
                    if doc.id in first_seen:
                        # Writing both would let the second silently replace the first.
                        why = f"duplicate document id {doc.id!r} (first read from {first_seen[doc.id]}); skipped"
                        report.failures.append(IngestFailure(where, why))
                        continue
                    first_seen[doc.id] = where
                    report.documents += 1
                    writer.push(doc.id, chunk_document(doc, chunk_tokens, overlap, tokenizer), where)
        writer.flush()
        if prune:
            assert isinstance(source, ScannableSource)
            _prune(source, [fs for fs in filesets if fs.folder], set(first_seen), report)
    except Exception as exc:
        if hasattr(exc, "add_note"):
            exc.add_note(
                f"ingest into {name!r} stopped after reading {report.documents} documents "
                f"({report.chunks_written} chunks written); run it again to finish"
            )
        raise
    finally:
        bar.close()
        report.elapsed_s = time.perf_counter() - started
    return report


class _Writer:
    """Collects documents and writes them in batches, in an order that survives a kill anywhere.

    Chunk 0 is the document's manifest: its fingerprint (hash, chunk count, chunking, path) says
    what the stored chunks are. Per batch, for each changed document of more than one chunk:

    1. chunk 0 is written marked in progress (`ingest_state`), with `ingest_span`, the highest
       chunk count the document had or will have, so every chunk id it may hold stays known;
    2. the other chunks are written;
    3. stale chunks are deleted: ids past the new count up to the span, and, where the source
       can list by metadata (ScannableSource), every other chunk whose `doc_id` is this document;
    4. chunk 0 is written again, without the mark: the document is complete.

    A run killed before 4 leaves the mark, so the next run redoes the document instead of
    trusting its fingerprint; a kill before 1 leaves the old, complete version. Where the source
    can list, a document whose stored chunk ids differ from the expected ones is redone too,
    which also repairs stores left inconsistent by older versions.
    """

    def __init__(self, source: WritableSource, report: IngestReport, batch_size: int) -> None:
        self.source = source
        self.report = report
        self.batch_size = batch_size
        self.pending: list[tuple[str, list[Passage], str]] = []
        self.pending_chunks = 0

    def push(self, doc_id: str, passages: list[Passage], where: str = "") -> None:
        self.pending.append((doc_id, passages, where))
        self.pending_chunks += max(1, len(passages))
        if self.pending_chunks >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending, self.pending_chunks = self.pending, [], 0
        stored = {p.id: p for p in self.source.get([f"{doc_id}#0" for doc_id, _, _ in pending])}
        present = _stored_ids(self.source, [doc_id for doc_id, _, _ in pending])
        marks: list[Passage] = []
        body: list[Passage] = []
        heads: list[Passage] = []
        stale: list[str] = []
        emptied: list[str] = []
        for doc_id, passages, where in pending:
            old = stored.get(f"{doc_id}#0")
            new_ids = {p.id for p in passages}
            have = present.get(doc_id, set()) if present is not None else None
            if old is not None and passages and _same(old, passages[0]) and (have is None or have == new_ids):
                self.report.unchanged_documents += 1
                continue
            if old is not None and (clash := _clash(old, passages, where)):
                self.report.documents -= 1
                self.report.failures.append(IngestFailure(where, clash))
                continue
            span = max(_span(old), len(passages))
            gone = {f"{doc_id}#{i}" for i in range(max(1, len(passages)), span)}
            if have is not None:
                gone |= have - new_ids - {f"{doc_id}#0"}
            stale.extend(sorted(gone))
            if len(passages) > 1:
                marks.append(_marked(passages[0], span))
            if passages:
                heads.append(passages[0])
                body.extend(passages[1:])
            elif old is not None or (have and f"{doc_id}#0" in have):
                emptied.append(f"{doc_id}#0")  # the file is now empty: its chunk 0 goes last

        self._add(marks, count=False)
        self._add(body)
        if stale:
            self.source.delete(stale)
            self.report.chunks_deleted += len(stale)
        self._add(heads)
        if emptied:
            self.source.delete(emptied)
            self.report.chunks_deleted += len(emptied)

    def _add(self, passages: Sequence[Passage], *, count: bool = True) -> None:
        for i in range(0, len(passages), self.batch_size):
            batch = passages[i : i + self.batch_size]
            self.source.add(batch)
            if count:
                self.report.chunks_written += len(batch)


def _stored_ids(source: WritableSource, doc_ids: Sequence[str]) -> dict[str, set[str]] | None:
    """doc id -> the ids of its stored chunks, found by `doc_id`; None when the source cannot list."""
    if not isinstance(source, ScannableSource):
        return None
    found: dict[str, set[str]] = {}
    for pid in source.ids_where({"doc_id": list(doc_ids)}):
        # A passage id is `doc_id#i`, and a doc id may itself contain '#'.
        found.setdefault(pid.rsplit("#", 1)[0], set()).add(pid)
    return found


def _span(head: Passage | None) -> int:
    """How many chunk ids (`#0`...) a stored chunk 0 says its document may hold."""
    if head is None:
        return 0
    return max(_int(head.metadata.get("n_chunks"), 1), _int(head.metadata.get(_SPAN), 0))


def _marked(head: Passage, span: int) -> Passage:
    return replace(head, metadata={**head.metadata, _PENDING: "writing", _SPAN: span})


def _clash(old: Passage, passages: list[Passage], where: str) -> str:
    """Why writing `passages` would overwrite another file's document under the same id, or ""."""
    if not passages or "line" in passages[0].metadata or "line" in old.metadata:
        return ""
    before, now = old.metadata.get("path"), passages[0].metadata.get("path")
    # A stored file that no longer exists means the corpus moved: then the id is taken over.
    if not before or before == now or not Path(str(before)).is_file():
        return ""
    return (
        f"its id {old.doc_id!r} already holds {before}, which still exists; skipped rather than "
        f"overwriting it: ingest this folder with --id-prefix NAME/ (ids become NAME/{old.doc_id}), "
        f"or delete {old.doc_id} first"
    )


def _prune(source: ScannableSource, folders: Sequence[FileSet], seen: set[str], report: IngestReport) -> None:
    """Delete the documents stored from files under `folders` that this run did not read."""
    if not folders:
        return
    roots = [fs.root.resolve() for fs in folders]
    assert is_writable(source)  # ingest() checked
    writable: WritableSource = source  # type: ignore[assignment]
    heads = source.ids_where({"chunk": 0})
    gone: list[str] = []
    for i in range(0, len(heads), 256):
        for head in writable.get(heads[i : i + 256]):
            path = head.metadata.get("path")
            if head.doc_id in seen or not path:
                continue
            file = Path(str(path))
            # A file that exists but failed to load this run keeps its last good version.
            if not file.is_file() and any(file.is_relative_to(root) for root in roots):
                gone.append(head.doc_id)
    removed = delete_documents(writable, gone)
    report.documents_pruned += sum(1 for n in removed.values() if n)
    report.chunks_deleted += sum(removed.values())


def _same(old: Passage, new: Passage) -> bool:
    a, b = old.metadata, new.metadata
    if _PENDING in a:
        return False  # a run stopped while writing this document
    for key in _FINGERPRINT:
        if key == "n_chunks":
            # Some stores hand numbers back as floats or strings.
            if _int(a.get(key), -1) != _int(b.get(key), -2):
                return False
        elif a.get(key) != b.get(key):
            return False
    return True


def _int(value: object, default: int) -> int:
    if isinstance(value, (int, float, str)):
        try:
            return int(value)
        except ValueError:
            pass
    return default


def _estimate_documents(filesets: Sequence[FileSet]) -> int:
    """Documents to expect, for the progress bar: one per file, one per line of a .jsonl file."""
    total = 0
    for fs in filesets:
        for f in fs.files:
            if f.suffix.lower() != ".jsonl":
                total += 1
                continue
            try:
                with Path(f).open("rb") as handle:
                    total += sum(block.count(b"\n") for block in iter(lambda: handle.read(1 << 20), b""))
            except OSError:
                total += 1
    return total


def delete_documents(source: WritableSource, doc_ids: Sequence[str]) -> dict[str, int]:
    """Remove every chunk of each document; returns doc id -> chunks removed (0 = not stored).

    The ids come from chunk 0 (its chunk count, and the span of an interrupted write) and, where
    the source can list by metadata, from every passage whose `doc_id` is the document, so that
    chunks no manifest points to go too. Chunk 0 goes last, as ingestion writes it last: an
    interrupted delete leaves the document findable, and running the delete again finishes it.
    Repeated ids count once.
    """
    removed: dict[str, int] = {}
    for doc_id in dict.fromkeys(doc_ids):
        head_id = f"{doc_id}#0"
        first = source.get([head_id])
        ids = {f"{doc_id}#{i}" for i in range(_span(first[0] if first else None))}
        listed = _stored_ids(source, [doc_id])
        if listed is not None:
            # What is really stored, when the source can say: the count is then exact.
            ids = listed.get(doc_id, set()) | ({head_id} if first else set())
        rest = sorted(ids - {head_id})
        if rest:
            source.delete(rest)
        if first or head_id in ids:
            source.delete([head_id])
        removed[doc_id] = len(ids)
    return removed
