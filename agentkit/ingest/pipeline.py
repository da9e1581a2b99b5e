"""The ingestion pipeline: paths -> documents -> chunks -> any WritableSource, idempotently.

Unchanged documents are skipped, changed ones are replaced in place, and stale chunks removed.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from agentkit.errors import IngestError
from agentkit.ingest.chunking import Tokenizer, chunk_document
from agentkit.ingest.loaders import FileSet, IngestFailure, find_files, load_file
from agentkit.knowledge.base import WritableSource, is_writable
from agentkit.types import Passage

PathLike = str | os.PathLike[str]

#: Metadata of a document's chunk 0 that must match for the document to count as unchanged.
#: `path` is included so that a moved corpus gets its `file://` uris refreshed.
_FINGERPRINT = ("doc_hash", "n_chunks", "chunking", "path")
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
    #: Files in the given folders with an extension no loader reads (skipped, not failures).
    unsupported_files: int = 0
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
        if self.unsupported_files:
            parts.append(f"{_n(self.unsupported_files, 'file')} of unsupported type skipped")
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
) -> IngestReport:
    """Load, chunk and write every document under `paths` into `source`; return what was done.

    Files or lines that cannot be read land in `report.failures` and the run goes on. Errors of
    the source itself (e.g. SourceUnavailable) propagate; what was written before stays valid,
    and running the same command again finishes the job.
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

    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    # Every path is checked before anything is written: a typo fails fast, with nothing half-done.
    filesets = [find_files(p) for p in paths]
    report = IngestReport(source=name)
    for fs in filesets:
        report.files += len(fs.files)
        report.unsupported_files += len(fs.unsupported)
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
                for doc in load_file(f, root=fs.root, on_error=report.failures.append):
                    bar.update(1)
                    where = f"{f}:{doc.metadata['line']}" if "line" in doc.metadata else str(f)
                    if doc.id in first_seen:
                        # Writing both would let the second silently replace the first.
                        why = f"duplicate document id {doc.id!r} (first read from {first_seen[doc.id]}); skipped"
                        report.failures.append(IngestFailure(where, why))
                        continue
                    first_seen[doc.id] = where
                    report.documents += 1
                    writer.push(doc.id, chunk_document(doc, chunk_tokens, overlap, tokenizer))
        writer.flush()
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
    """Collects documents and writes them in batches, in a crash-safe order.

    Per batch: one `get` of every chunk 0; then the chunks after chunk 0 are upserted, stale
    chunk ids deleted, and chunk 0 written last. Chunk 0 carries the fingerprint, so until it
    is replaced the stored document still reads as the old version (never missing) and a re-run
    redoes it rather than trusting a half-written one.
    """

    def __init__(self, source: WritableSource, report: IngestReport, batch_size: int) -> None:
        self.source = source
        self.report = report
        self.batch_size = batch_size
        self.pending: list[tuple[str, list[Passage]]] = []
        self.pending_chunks = 0

    def push(self, doc_id: str, passages: list[Passage]) -> None:
        self.pending.append((doc_id, passages))
        self.pending_chunks += max(1, len(passages))
        if self.pending_chunks >= self.batch_size:
            self.flush()

    def flush(self) -> None:
        if not self.pending:
            return
        pending, self.pending, self.pending_chunks = self.pending, [], 0
        stored = {p.id: p for p in self.source.get([f"{doc_id}#0" for doc_id, _ in pending])}
        body: list[Passage] = []
        heads: list[Passage] = []
        stale: list[str] = []
        emptied: list[str] = []
        for doc_id, passages in pending:
            old = stored.get(f"{doc_id}#0")
            old_n = _int(old.metadata.get("n_chunks"), 1) if old is not None else 0
            if old is not None and passages and _same(old, passages[0]):
                self.report.unchanged_documents += 1
                continue
            if passages:
                heads.append(passages[0])
                body.extend(passages[1:])
            elif old is not None:
                emptied.append(f"{doc_id}#0")  # the file is now empty: its chunk 0 goes last
            stale.extend(f"{doc_id}#{i}" for i in range(max(1, len(passages)), old_n))

        self._add(body)
        if stale:
            self.source.delete(stale)
            self.report.chunks_deleted += len(stale)
        self._add(heads)
        if emptied:
            self.source.delete(emptied)
            self.report.chunks_deleted += len(emptied)

    def _add(self, passages: Sequence[Passage]) -> None:
        for i in range(0, len(passages), self.batch_size):
            batch = passages[i : i + self.batch_size]
            self.source.add(batch)
            self.report.chunks_written += len(batch)


def _same(old: Passage, new: Passage) -> bool:
    a, b = old.metadata, new.metadata
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

    Chunk 0 records how many chunks the document has, so the ids are known without a scan.
    It goes last, for the same reason ingestion writes it last: an interrupted delete leaves the
    document findable, and running the delete again finishes it.
    """
    removed: dict[str, int] = {}
    for doc_id in doc_ids:
        first = source.get([f"{doc_id}#0"])
        if not first:
            removed[doc_id] = 0
            continue
        n = _int(first[0].metadata.get("n_chunks"), 1)
        rest = [f"{doc_id}#{i}" for i in range(1, n)]
        if rest:
            source.delete(rest)
        source.delete([f"{doc_id}#0"])
        removed[doc_id] = n
    return removed
