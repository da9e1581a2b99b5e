"""Ingestion: loaders per format, token chunking with overlap, and idempotent writes to a source.

Every test writes its own small files into tmp_path; the SciFact test uses the shared BEIR corpus.
"""

from __future__ import annotations

import itertools
import json
from collections.abc import Sequence
from pathlib import Path

import pytest

from agentkit.errors import IngestError, SourceUnavailable
from agentkit.ingest.chunking import chunk_document, regex_tokenize
from agentkit.ingest.loaders import IngestFailure, find_files, load_path
from agentkit.ingest.pipeline import delete_documents, ingest
from agentkit.knowledge.memory import MemorySource
from agentkit.types import Document, Passage

SCIFACT = Path(__file__).resolve().parents[1] / ".." / "shared" / "data" / "scifact" / "corpus.jsonl"


def sentences(n: int, word: str = "alpha") -> str:
    """`n` distinct ten-token sentences."""
    return " ".join(f"Sentence {i} says that {word} follows beta in order." for i in range(n))


class RecordingSource(MemorySource):
    """A MemorySource that logs every write, to check what ingest did and in which order."""

    def __init__(self, name: str = "docs") -> None:
        super().__init__(name)
        self.calls: list[tuple[str, list[str]]] = []

    def add(self, passages: Sequence[Passage]) -> None:
        self.calls.append(("add", [p.id for p in passages]))
        super().add(passages)

    def delete(self, ids: Sequence[str]) -> None:
        self.calls.append(("delete", list(ids)))
        super().delete(ids)


# --- loaders ----------------------------------------------------------------------------------


def test_text_and_markdown_load_with_relative_ids_and_titles(tmp_path: Path) -> None:
    (tmp_path / "guide").mkdir()
    (tmp_path / "notes.txt").write_text("Plain notes.\n", encoding="utf-8")
    (tmp_path / "guide" / "install.md").write_text(
        "Intro line\n\n```bash\n# not a title\npip install x\n```\n\n# Installing agentkit\n\nRun pip.\n",
        encoding="utf-8",
    )
    (tmp_path / "guide" / "untitled.markdown").write_text("## Only a subheading\n\nBody.\n", encoding="utf-8")

    docs = {d.id: d for d in load_path(tmp_path)}

    assert list(docs) == ["guide/install.md", "guide/untitled.markdown", "notes.txt"]  # sorted
    assert docs["guide/install.md"].title == "Installing agentkit"
    assert docs["guide/untitled.markdown"].title == "untitled"
    assert docs["notes.txt"].title == "notes"
    assert docs["notes.txt"].text == "Plain notes.\n"
    meta = docs["guide/install.md"].metadata
    assert meta["format"] == "markdown"
    assert meta["path"] == str((tmp_path / "guide" / "install.md").resolve())


def test_html_drops_script_style_nav_and_keeps_paragraphs(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        """<!doctype html><html><head><title>Routing &amp; rules</title>
        <style>p { color: red }</style><script>var secret = 1;</script></head>
        <body><nav><a href="/">Home</a> | <a href="/x">Menu</a></nav>
        <h1>The router</h1><p>Questions are
        routed by <b>rules</b>.</p><p>Then by overlap.</p></body></html>""",
        encoding="utf-8",
    )
    (tmp_path / "h1only.htm").write_text("<body><h1>Heading title</h1><div>Text</div></body>", encoding="utf-8")

    docs = {d.id: d for d in load_path(tmp_path)}

    page = docs["page.html"]
    assert page.title == "Routing & rules"
    assert page.text == "The router\n\nQuestions are routed by rules.\n\nThen by overlap."
    assert "secret" not in page.text and "Menu" not in page.text and "color" not in page.text
    assert docs["h1only.htm"].title == "Heading title"
    assert docs["h1only.htm"].metadata["format"] == "html"


def test_beir_jsonl_one_document_per_line(tmp_path: Path) -> None:
    rows = [
        {"_id": "d1", "title": "First", "text": "One.", "metadata": {"year": 2020}},
        {"id": 7, "title": "Second", "text": "Two.", "lang": "en"},
    ]
    (tmp_path / "corpus.jsonl").write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")

    docs = list(load_path(tmp_path / "corpus.jsonl"))

    assert [(d.id, d.title, d.text) for d in docs] == [("d1", "First", "One."), ("7", "Second", "Two.")]
    assert docs[0].metadata["year"] == 2020 and docs[0].metadata["line"] == 1
    assert docs[1].metadata["lang"] == "en" and docs[1].metadata["line"] == 2
    assert docs[1].metadata["format"] == "jsonl"


def test_hidden_and_unsupported_files_are_skipped_in_folders(tmp_path: Path) -> None:
    (tmp_path / ".git").mkdir()
    (tmp_path / ".git" / "HEAD.txt").write_text("ref", encoding="utf-8")
    (tmp_path / ".draft.md").write_text("# Hidden", encoding="utf-8")
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "kept.md").write_text("# Kept", encoding="utf-8")

    found = find_files(tmp_path)

    assert [f.name for f in found.files] == ["kept.md"]
    assert [f.name for f in found.unsupported] == ["image.png"]


def test_explicit_unsupported_file_raises_naming_it(tmp_path: Path) -> None:
    pdf = tmp_path / "manual.rtf"  # .pdf is read since the document loaders
    pdf.write_bytes(b"{\\rtf1}")
    with pytest.raises(IngestError, match=r"manual\.rtf.*\.md.*\.pdf.*\.txt"):
        list(load_path(pdf))
    with pytest.raises(IngestError, match="manual.rtf"):
        ingest([pdf], MemorySource(), progress=False)
    with pytest.raises(IngestError, match="does not exist"):
        ingest([tmp_path / "missing"], MemorySource(), progress=False)


def test_loader_reports_failures_and_continues(tmp_path: Path) -> None:
    (tmp_path / "a.jsonl").write_text('{"_id": "ok1", "text": "fine"}\n{broken\n{"_id": "ok2", "text": "also"}\n')
    (tmp_path / "b.txt").write_bytes(b"caf\xe9 latin-1 bytes")
    (tmp_path / "c.md").write_text("# Fine", encoding="utf-8")
    failures: list[IngestFailure] = []

    ids = [d.id for d in load_path(tmp_path, on_error=failures.append)]

    assert ids == ["ok1", "ok2", "c.md"]
    assert [f.where for f in failures] == [f"{tmp_path / 'a.jsonl'}:2", str(tmp_path / "b.txt")]
    assert "JSON" in failures[0].reason and "UTF-8" in failures[1].reason


# --- chunking ---------------------------------------------------------------------------------


def test_chunks_are_exact_slices_that_overlap() -> None:
    text = "\n\n".join(sentences(12, word=f"topic{p}") for p in range(6))  # ~720 tokens, 6 paragraphs
    doc = Document("guide.md", text, "Guide", {"path": "/tmp/guide.md", "format": "markdown"})

    chunks = chunk_document(doc, chunk_tokens=100, overlap=20)

    assert len(chunks) > 5
    spans = regex_tokenize(text)
    starts = [s for s, _ in spans]
    for i, c in enumerate(chunks):
        m = c.metadata
        assert c.text == text[m["start"] : m["end"]]
        assert c.id == f"guide.md#{i}" and m["chunk"] == i and m["n_chunks"] == len(chunks)
        assert m["doc_id"] == "guide.md" and m["path"] == "/tmp/guide.md"
        assert c.title == "Guide" and c.uri == f"file:///tmp/guide.md#chunk={i}"
        n_tokens = len(regex_tokenize(c.text))
        assert 80 <= n_tokens <= 100 or i == len(chunks) - 1
    for a, b in itertools.pairwise(chunks):
        shared = len([s for s in starts if b.metadata["start"] <= s < a.metadata["end"]])
        assert shared == 20
    # Windows prefer to end where a sentence does.
    assert all(c.text.endswith(".") for c in chunks)


def test_chunk_ids_and_hash_are_stable_and_short_or_empty_docs() -> None:
    doc = Document("d", sentences(50), "T")
    first, second = chunk_document(doc, 64, 8), chunk_document(Document("d", sentences(50), "T"), 64, 8)
    assert [(p.id, p.text, p.metadata["doc_hash"]) for p in first] == [
        (p.id, p.text, p.metadata["doc_hash"]) for p in second
    ]
    retitled = chunk_document(Document("d", sentences(50), "Other title"), 64, 8)
    assert retitled[0].metadata["doc_hash"] != first[0].metadata["doc_hash"]

    short = chunk_document(Document("s", "  A short note.  ", "S"), 200, 40)
    assert [(p.id, p.text, p.uri) for p in short] == [("s#0", "A short note.", "doc://s#chunk=0")]
    assert chunk_document(Document("e", " \n\t ", "E")) == []


def test_custom_tokenizer_spans_decide_the_windows() -> None:
    def chars(text: str) -> list[tuple[int, int]]:
        return [(i, i + 1) for i, ch in enumerate(text) if not ch.isspace()]

    chunks = chunk_document(Document("c", "abcdefghij", ""), chunk_tokens=4, overlap=1, tokenizer=chars)
    assert [c.text for c in chunks] == ["abcd", "defg", "ghij"]
    with pytest.raises(ValueError, match="overlap"):
        chunk_document(Document("c", "abc", ""), chunk_tokens=4, overlap=4)


def test_chunk_sizes_count_words_and_punctuation_marks_as_the_docs_say() -> None:
    from click.testing import CliRunner

    from agentkit.cli import cli
    from agentkit.config import IngestSettings

    # "don't" is one word, each comma one mark: 16 words and marks, whatever a model makes of them.
    text = "Don't stop, " * 8 + "end"
    chunks = chunk_document(Document("d", text, ""), chunk_tokens=16, overlap=0)
    assert chunks[0].text == "Don't stop, " * 5 + "Don't"
    assert chunks[0].metadata["chunking"] == "tokens=16,overlap=0,tokenizer=regex"
    # The config schema, --help and the README say the same unit (before: just "tokens").
    for field in ("chunk_tokens", "chunk_overlap"):
        assert "words and punctuation marks" in (IngestSettings.model_fields[field].description or "").lower()
    help_text = " ".join(CliRunner().invoke(cli, ["ingest", "--help"]).output.split())
    assert "Words and punctuation marks per chunk, not model tokens" in help_text
    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text(encoding="utf-8")
    assert "counted in words and punctuation marks, not model tokens" in readme


# --- pipeline ---------------------------------------------------------------------------------


def make_corpus(root: Path) -> None:
    (root / "sub").mkdir(parents=True)
    (root / "intro.md").write_text("# Intro\n\n" + sentences(30, "intro"), encoding="utf-8")
    (root / "sub" / "page.html").write_text(f"<title>Page</title><p>{sentences(5, 'page')}</p>", encoding="utf-8")
    (root / "notes.txt").write_text(sentences(3, "notes"), encoding="utf-8")
    (root / "logo.svg").write_text("<svg/>", encoding="utf-8")


def test_ingest_writes_chunks_and_reingest_is_a_no_op(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    source = RecordingSource()

    report = ingest([tmp_path], source, chunk_tokens=100, overlap=20, progress=False)

    assert (report.files, report.documents, report.unsupported_files, report.failures) == (3, 3, 1, [])
    assert report.chunks_written == source.count() > 3
    assert {p.doc_id for p in source.search("intro follows beta", k=50)} >= {"intro.md"}
    assert source.get(["sub/page.html#0"])[0].title == "Page"
    count = source.count()
    ids_before = sorted(source._passages)

    source.calls.clear()
    again = ingest([tmp_path], source, chunk_tokens=100, overlap=20, progress=False)

    assert (again.chunks_written, again.unchanged_documents, again.documents) == (0, 3, 3)
    assert source.calls == [] and source.count() == count and sorted(source._passages) == ids_before
    assert "3 unchanged" in again.summary()

    # Other chunk settings re-chunk every document, even when the chunk count happens to match.
    rechunked = ingest([tmp_path], source, chunk_tokens=120, overlap=10, progress=False)
    assert rechunked.unchanged_documents == 0 and rechunked.chunks_written > 0


def test_shrinking_a_document_removes_stale_chunks_chunk0_last(tmp_path: Path) -> None:
    doc = tmp_path / "long.md"
    doc.write_text("# Long\n\n" + sentences(25), encoding="utf-8")
    source = RecordingSource()
    ingest([tmp_path], source, chunk_tokens=100, overlap=20, progress=False)
    assert source.get(["long.md#0"])[0].metadata["n_chunks"] == 3
    assert source.count() == 3

    doc.write_text("# Long\n\nNow it is short.", encoding="utf-8")
    source.calls.clear()
    report = ingest([tmp_path], source, chunk_tokens=100, overlap=20, progress=False)

    assert source.count() == 1 and source.get(["long.md#0"])[0].text.endswith("Now it is short.")
    assert (report.chunks_written, report.chunks_deleted) == (1, 2)
    # Chunk 0 carries the fingerprint, so it is written after everything else.
    assert source.calls == [("delete", ["long.md#1", "long.md#2"]), ("add", ["long.md#0"])]

    doc.write_text("   ", encoding="utf-8")
    ingest([tmp_path], source, progress=False)
    assert source.count() == 0


def test_failures_are_reported_and_the_rest_ingested(tmp_path: Path) -> None:
    (tmp_path / "corpus.jsonl").write_text(
        '{"_id": "a", "title": "A", "text": "Alpha text."}\n'
        '{"_id": "b", "text": "unterminated\n'
        '{"_id": "c", "title": "C", "text": "Gamma text."}\n'
        '{"_id": "a", "text": "Duplicate id."}\n',
        encoding="utf-8",
    )
    (tmp_path / "bad.txt").write_bytes(b"\xff\xfe not utf-8 \x80")
    (tmp_path / "good.md").write_text("# Good\n\nGood text.", encoding="utf-8")
    source = MemorySource("docs")

    report = ingest([tmp_path], source, progress=False)

    assert report.documents == 3 and source.count() == 3
    assert {p.doc_id for p in source.get(["a#0", "c#0", "good.md#0"])} == {"a", "c", "good.md"}
    where = [w for w, _ in report.failures]
    assert where == [str(tmp_path / "bad.txt"), f"{tmp_path / 'corpus.jsonl'}:2", f"{tmp_path / 'corpus.jsonl'}:4"]
    assert "UTF-8" in report.failures[0].reason and "duplicate" in report.failures[2].reason
    summary = report.summary()
    assert summary.startswith("ingested 3 documents (3 chunks) from 3 files into 'docs' in ")
    assert "3 failed: " in summary and "bad.txt: not valid UTF-8" in summary


def test_source_errors_propagate_and_a_rerun_finishes(tmp_path: Path) -> None:
    for i in range(4):
        (tmp_path / f"doc{i}.txt").write_text(sentences(25, f"w{i}"), encoding="utf-8")

    class Flaky(MemorySource):
        fail_after = 2

        def add(self, passages: Sequence[Passage]) -> None:
            if self.fail_after == 0:
                raise SourceUnavailable("store went away")
            self.fail_after -= 1
            super().add(passages)

    source = Flaky("docs")
    with pytest.raises(SourceUnavailable):
        ingest([tmp_path], source, chunk_tokens=100, overlap=20, batch_size=4, progress=False)
    assert source.count() > 0

    source.fail_after = 10**6
    report = ingest([tmp_path], source, chunk_tokens=100, overlap=20, batch_size=4, progress=False)
    full = MemorySource("ref")
    ingest([tmp_path], full, chunk_tokens=100, overlap=20, progress=False)
    assert sorted(source._passages) == sorted(full._passages)
    assert report.documents == 4


def test_progress_false_prints_nothing(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    make_corpus(tmp_path)
    ingest([tmp_path], MemorySource(), progress=False)
    out, err = capsys.readouterr()
    assert out == "" and err == ""


def test_single_file_and_directory_give_the_same_id(tmp_path: Path) -> None:
    (tmp_path / "faq.md").write_text("# FAQ\n\nAnswers.", encoding="utf-8")
    source = MemorySource()
    ingest(tmp_path / "faq.md", source, progress=False)
    again = ingest([tmp_path], source, progress=False)
    assert again.unchanged_documents == 1 and source.count() == 1


def test_example_docs_ingest_cleanly() -> None:
    docs = Path(__file__).resolve().parents[1] / "examples" / "docs"
    if not any(docs.glob("*.md")):
        pytest.skip("examples/docs has no Markdown files yet")
    source = MemorySource("docs")
    report = ingest([docs], source, progress=False)
    assert report.failures == [] and report.documents >= 6
    titles = {p.title for p in source.get([f"{f.name}#0" for f in docs.glob("*.md")])}
    assert len(titles) == report.documents  # every file has its own `#` title
    top = source.search("store locked by another process", k=1)
    assert top and top[0].doc_id == "troubleshooting.md"


@pytest.mark.skipif(not SCIFACT.is_file(), reason=f"BEIR SciFact corpus not found at {SCIFACT}")
def test_scifact_first_200_documents() -> None:
    with SCIFACT.open(encoding="utf-8") as f:
        expected = [json.loads(line)["_id"] for line in itertools.islice(f, 200)]
    failures: list[IngestFailure] = []
    docs = list(itertools.islice(load_path(SCIFACT, on_error=failures.append), 200))
    assert [d.id for d in docs] == expected and failures == []
    assert all(d.text and d.title for d in docs)
    chunks = [c for d in docs for c in chunk_document(d)]
    assert all(c.uri == f"doc://{c.doc_id}#chunk={c.metadata['chunk']}" for c in chunks)
    assert all(c.text == d.text[c.metadata["start"] : c.metadata["end"]] for d in docs for c in chunk_document(d))


# --- crash consistency (issue 12, item 1) -----------------------------------------------------


class Killed(BaseException):
    """Stands for kill -9: a BaseException, so no `except Exception` on the way can tidy up."""


class CrashingSource(MemorySource):
    """A MemorySource that dies before its `crash_at`-th write (add or delete call)."""

    def __init__(self, name: str = "docs") -> None:
        super().__init__(name)
        self.crash_at: int | None = None
        self.writes = 0

    def _tick(self) -> None:
        if self.crash_at is not None and self.writes >= self.crash_at:
            raise Killed(f"killed before write {self.writes}")
        self.writes += 1

    def add(self, passages: Sequence[Passage]) -> None:
        self._tick()
        super().add(passages)

    def delete(self, ids: Sequence[str]) -> None:
        self._tick()
        super().delete(ids)


class Unlisted(CrashingSource):
    """The same without `ids_where`: only the manifest in chunk 0 can tell which chunks exist."""

    ids_where = None  # type: ignore[assignment]


def snapshot(source: MemorySource) -> dict[str, tuple[str, str, dict[str, object]]]:
    return {pid: (p.text, p.title, p.metadata) for pid, p in source._passages.items()}


def clean_ingest(folder: Path) -> dict[str, tuple[str, str, dict[str, object]]]:
    ref = MemorySource("docs")
    ingest([folder], ref, chunk_tokens=40, overlap=8, batch_size=4, progress=False)
    return snapshot(ref)


@pytest.mark.parametrize("kind", [CrashingSource, Unlisted])
def test_a_kill_at_any_write_converges_to_a_clean_ingest(tmp_path: Path, kind: type[CrashingSource]) -> None:
    """The probe's case: small doc.txt ingested; a much larger version killed mid-ingest; the
    small one restored and ingested again. Before, the rerun said "1 unchanged" over chunks of
    the aborted version, and `delete` left orphans."""
    folder = tmp_path / "corpus"
    folder.mkdir()
    doc, other = folder / "doc.txt", folder / "other.md"
    small, large = sentences(12, "small"), sentences(60, "large")
    other.write_text("# Other\n\n" + sentences(10, "other"), encoding="utf-8")

    def run(source: CrashingSource) -> None:
        ingest([folder], source, chunk_tokens=40, overlap=8, batch_size=4, progress=False)

    doc.write_text(large, encoding="utf-8")
    clean_large = clean_ingest(folder)
    probe = kind()
    doc.write_text(small, encoding="utf-8")
    run(probe)
    probe.writes = 0
    doc.write_text(large, encoding="utf-8")
    run(probe)
    writes = probe.writes  # every write of the large re-ingest is a crash point
    assert writes >= 5

    for crash_at in range(writes):
        source = kind()
        doc.write_text(small, encoding="utf-8")
        run(source)
        clean_small = snapshot(source)
        doc.write_text(large, encoding="utf-8")
        source.writes, source.crash_at = 0, crash_at
        with pytest.raises(Killed):
            run(source)
        source.crash_at = None

        # Either rerun converges: the restored small version, or the large one again.
        doc.write_text(small, encoding="utf-8")
        run(source)
        assert snapshot(source) == clean_small, f"crash before write {crash_at}"

        doc.write_text(large, encoding="utf-8")
        source.writes, source.crash_at = 0, crash_at
        with pytest.raises(Killed):
            run(source)
        source.crash_at = None
        run(source)
        assert snapshot(source) == clean_large, f"crash before write {crash_at}, then the same ingest"

        # A kill leaves nothing that `delete` would miss.
        doc.write_text(small, encoding="utf-8")
        source.writes, source.crash_at = 0, crash_at
        try:
            run(source)
        except Killed:
            pass
        source.crash_at = None
        delete_documents(source, ["doc.txt", "other.md"])
        assert source.count() == 0, f"crash before write {crash_at}: orphans {sorted(source._passages)}"


def test_orphans_without_a_manifest_are_found_by_doc_id(tmp_path: Path) -> None:
    """A store left inconsistent by an older agentkit (chunks of an aborted version beside an
    intact chunk 0) is repaired by the next ingest, and `delete` counts what it really removed."""
    (tmp_path / "doc.txt").write_text(sentences(12), encoding="utf-8")
    source = MemorySource("docs")
    ingest([tmp_path], source, chunk_tokens=40, overlap=8, progress=False)
    clean = snapshot(source)
    aborted = chunk_document(Document("doc.txt", sentences(60, "aborted"), "doc"), 40, 8)
    source.add(aborted[1:])  # what the old writer left: body written, chunk 0 not yet

    report = ingest([tmp_path], source, chunk_tokens=40, overlap=8, progress=False)

    assert report.unchanged_documents == 0 and snapshot(source) == clean
    source.add(aborted[5:])
    assert delete_documents(source, ["doc.txt", "doc.txt"]) == {"doc.txt": len(clean) + len(aborted) - 5}
    assert source.count() == 0


# --- folder hazards, collisions, prune, NUL, lock (issue 12, items 4, 5, 12) -----------------


def test_symlink_loop_fifo_and_device_are_named_and_skipped(tmp_path: Path) -> None:
    """Before: a symlink loop crashed the run (Path.resolve), a FIFO hung it forever, and a
    symlink to /dev/zero read until memory ran out."""
    import os

    (tmp_path / "good.md").write_text("# Good\n\nGood text.", encoding="utf-8")
    os.symlink("loop_b.txt", tmp_path / "loop_a.txt")
    os.symlink("loop_a.txt", tmp_path / "loop_b.txt")
    os.mkfifo(tmp_path / "pipe.txt")
    os.symlink("/dev/zero", tmp_path / "zero.txt")
    os.symlink("good.md", tmp_path / "alias.md")  # a link to a regular file is read
    source = MemorySource("docs")

    report = ingest([tmp_path], source, progress=False)

    reasons = dict(report.failures)
    assert sorted(reasons) == sorted(str(tmp_path / n) for n in ("loop_a.txt", "loop_b.txt", "pipe.txt", "zero.txt"))
    assert "symlink loop" in reasons[str(tmp_path / "loop_a.txt")]
    assert "FIFO" in reasons[str(tmp_path / "pipe.txt")] and "device" in reasons[str(tmp_path / "zero.txt")]
    assert report.documents == 2 and {p.doc_id for p in source.get(["good.md#0", "alias.md#0"])} == {"good.md", "alias.md"}
    # Named directly, or read by load_file behind find_files' back, they fail the same way.
    with pytest.raises(IngestError, match="FIFO"):
        ingest([tmp_path / "pipe.txt"], source, progress=False)
    failures: list[IngestFailure] = []
    from agentkit.ingest.loaders import load_file

    assert list(load_file(tmp_path / "zero.txt", on_error=failures.append)) == []
    assert "device" in failures[0].reason


def test_files_over_the_size_limit_are_skipped_with_the_fix(tmp_path: Path) -> None:
    (tmp_path / "big.txt").write_text("word " * 300_000, encoding="utf-8")  # 1.5 MB
    (tmp_path / "small.txt").write_text("Small text.", encoding="utf-8")
    (tmp_path / "c.jsonl").write_text(
        json.dumps({"_id": "long", "text": "x " * 700_000}) + "\n" + json.dumps({"_id": "ok", "text": "Fine."}) + "\n",
        encoding="utf-8",
    )
    source = MemorySource("docs")

    report = ingest([tmp_path], source, progress=False, max_file_mb=1)

    reasons = dict(report.failures)
    assert set(reasons) == {str(tmp_path / "big.txt"), f"{tmp_path / 'c.jsonl'}:1"}
    why = reasons[str(tmp_path / "big.txt")]
    assert "1.4 MB" in why and "limit of 1 MB" in why and "ingest.max_file_mb" in why and "--max-file-mb" in why
    assert {p.doc_id for p in source.get(["small.txt#0", "ok#0"])} == {"small.txt", "ok"}
    assert ingest([tmp_path], MemorySource(), progress=False, max_file_mb=2).failures == []


def test_text_with_nul_bytes_is_skipped_and_named(tmp_path: Path) -> None:
    """Before: valid UTF-8 with NUL bytes (a binary file, UTF-16 text) was indexed as text."""
    (tmp_path / "utf16.txt").write_bytes("Hello world".encode("utf-16-le"))
    (tmp_path / "c.jsonl").write_text('{"_id": "n", "text": "a\\u0000b"}\n{"_id": "ok", "text": "Fine."}\n')
    source = MemorySource("docs")

    report = ingest([tmp_path], source, progress=False)

    reasons = dict(report.failures)
    assert set(reasons) == {str(tmp_path / "utf16.txt"), f"{tmp_path / 'c.jsonl'}:1"}
    assert all("NUL" in why and "UTF-8" in why for why in reasons.values())
    assert source.count() == 1


def test_same_named_files_from_two_folders_do_not_overwrite(tmp_path: Path) -> None:
    """Before: `ingest projA; ingest projB` (both with README.md) silently replaced A's text."""
    a, b = tmp_path / "projA", tmp_path / "projB"
    for folder, word in ((a, "apples"), (b, "bananas")):
        folder.mkdir()
        (folder / "README.md").write_text(f"# {folder.name}\n\n{sentences(3, word)}", encoding="utf-8")
    source = MemorySource("docs")
    ingest([a], source, progress=False)

    clash = ingest([b], source, progress=False)

    assert source.get(["README.md#0"])[0].title == "projA"  # A is kept
    assert clash.documents == 0 and clash.chunks_written == 0
    (where, why), = clash.failures
    assert where == str(b / "README.md") and str(a / "README.md") in why and "--id-prefix" in why
    both = ingest([b], source, progress=False, id_prefix="projB/")
    assert both.documents == 1 and source.get(["projB/README.md#0"])[0].title == "projB"
    assert source.get(["README.md#0"])[0].title == "projA"
    # A moved corpus (the old file is gone) still takes its ids over, as before.
    a.rename(tmp_path / "moved")
    assert ingest([tmp_path / "moved"], source, progress=False).failures == []
    assert source.get(["README.md#0"])[0].metadata["path"] == str((tmp_path / "moved" / "README.md").resolve())


def test_prune_removes_documents_of_deleted_files(tmp_path: Path) -> None:
    make_corpus(tmp_path)
    other = tmp_path.parent / f"{tmp_path.name}-other.md"
    other.write_text("# Other\n\nOutside the folder.", encoding="utf-8")
    source = MemorySource("docs")
    ingest([tmp_path, other], source, chunk_tokens=100, overlap=20, progress=False)
    other.unlink()  # outside the ingested folder: prune leaves it alone
    (tmp_path / "intro.md").unlink()

    kept = ingest([tmp_path], source, chunk_tokens=100, overlap=20, progress=False)
    assert kept.documents_pruned == 0 and source.get(["intro.md#0"])

    report = ingest([tmp_path], source, chunk_tokens=100, overlap=20, progress=False, prune=True)

    assert report.documents_pruned == 1 and "1 document of deleted files pruned" in report.summary()
    assert {p.doc_id for p in source._passages.values()} == {"notes.txt", "sub/page.html", other.name}


def test_ingest_lock_makes_a_second_writer_wait_then_fail_clearly(tmp_path: Path) -> None:
    """Before: two first ingests into a new data dir raced to create the store (raw Rust error)."""
    from agentkit.ingest.lock import ingest_lock

    data = tmp_path / "new-data-dir"
    with ingest_lock(data):
        with pytest.raises(IngestError, match=r"another agentkit ingest or delete \(pid \d+\) is writing to .*new-data-dir"):
            with ingest_lock(data, wait=0.3, announce=False):
                pass
    with ingest_lock(data, wait=0):  # released: the next writer goes ahead
        pass


def test_cli_delete_with_a_repeated_id_deletes_once(tmp_path: Path) -> None:
    """Before: `agentkit delete x x` deleted x, then said "x: not in 'docs'" and exited 1."""
    pytest.importorskip("qdrant_edge")
    from click.testing import CliRunner

    from agentkit.cli import cli

    cfg = tmp_path / "c.yaml"
    cfg.write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\nsources:\n  docs: {{type: qdrant}}\n")
    (tmp_path / "corpus").mkdir()
    (tmp_path / "corpus" / "x.md").write_text("# X\n\n" + sentences(40), encoding="utf-8")
    runner = CliRunner()
    assert runner.invoke(cli, ["--config", str(cfg), "ingest", str(tmp_path / "corpus"), "--no-progress"]).exit_code == 0

    result = runner.invoke(cli, ["--config", str(cfg), "delete", "x.md", "x.md"])

    assert result.exit_code == 0 and result.output.count("x.md: removed") == 1 and "not in" not in result.output


_KILLED_INGEST = """
import os, sys
from agentkit.ingest.pipeline import ingest
from agentkit.knowledge.qdrant import QdrantSource

store, folder, kill_at = sys.argv[1], sys.argv[2], int(sys.argv[3])
source = QdrantSource("docs", path=store)
writes = 0
for name in ("add", "delete"):
    def wrapped(items, _real=getattr(source, name)):
        global writes
        if writes == kill_at:
            os._exit(9)  # no flush, no close: as abrupt as kill -9 from Python
        writes += 1
        _real(items)
    setattr(source, name, wrapped)
ingest([folder], source, chunk_tokens=40, overlap=8, batch_size=4, progress=False)
source.close()
"""


@pytest.mark.parametrize("kill_at", [1, 3, 6])
def test_a_killed_process_on_the_embedded_store_converges(tmp_path: Path, kill_at: int) -> None:
    """The probe's case on the real embedded store, with the process really dying mid-ingest."""
    pytest.importorskip("qdrant_edge")
    import subprocess
    import sys

    from agentkit.knowledge.qdrant import QdrantSource

    folder, store = tmp_path / "corpus", tmp_path / "store"
    folder.mkdir()
    doc = folder / "doc.txt"
    script = tmp_path / "killed_ingest.py"
    script.write_text(_KILLED_INGEST, encoding="utf-8")
    doc.write_text(sentences(12, "small"), encoding="utf-8")
    clean = {pid: text for pid, (text, _, _) in clean_ingest(folder).items()}
    run = lambda n: subprocess.run([sys.executable, str(script), str(store), str(folder), str(n)], timeout=120).returncode  # noqa: E731
    assert run(-1) == 0
    doc.write_text(sentences(60, "large"), encoding="utf-8")
    assert run(kill_at) == 9

    doc.write_text(sentences(12, "small"), encoding="utf-8")
    with QdrantSource("docs", path=store) as source:
        ingest([folder], source, chunk_tokens=40, overlap=8, batch_size=4, progress=False)
        stored = {p.id: p.text for p in source.get(source.ids_where({}))}
        assert stored == clean
        assert delete_documents(source, ["doc.txt"]) == {"doc.txt": len(clean)} and source.count() == 0


# --- documents people have: PDF, DOCX, HTML pages (loaders registered through register_loaders) ---


def write_pdf(path: Path, pages: Sequence[str], title: str = "") -> Path:
    """A real PDF with one line of Helvetica text per page, written by hand (xref offsets and all)."""
    objects: list[bytes] = []
    n = len(pages)
    page_ids = [4 + 2 * i for i in range(n)]
    objects.append(b"<< /Type /Catalog /Pages 2 0 R >>")
    objects.append(b"<< /Type /Pages /Kids [" + b" ".join(b"%d 0 R" % i for i in page_ids) + b"] /Count %d >>" % n)
    objects.append(b"<< /Type /Font /Subtype /Type1 /BaseFont /Helvetica >>")
    for text in pages:
        content = b"BT /F1 12 Tf 72 720 Td (" + text.encode("latin-1") + b") Tj ET"
        page_id = 4 + len(objects) - 3
        objects.append(b"<< /Type /Page /Parent 2 0 R /MediaBox [0 0 612 792] /Resources << /Font << /F1 3 0 R >> >> "
                       b"/Contents %d 0 R >>" % (page_id + 1))
        objects.append(b"<< /Length %d >>\nstream\n" % len(content) + content + b"\nendstream")
    info = len(objects) + 1
    objects.append(b"<< /Title (" + title.encode("latin-1") + b") >>")
    out = bytearray(b"%PDF-1.4\n")
    offsets = []
    for i, body in enumerate(objects, 1):
        offsets.append(len(out))
        out += b"%d 0 obj\n" % i + body + b"\nendobj\n"
    xref = len(out)
    out += b"xref\n0 %d\n0000000000 65535 f \n" % (len(objects) + 1)
    out += b"".join(b"%010d 00000 n \n" % o for o in offsets)
    out += b"trailer\n<< /Size %d /Root 1 0 R /Info %d 0 R >>\nstartxref\n%d\n%%%%EOF\n" % (len(objects) + 1, info, xref)
    path.write_bytes(bytes(out))
    return path


def test_pdf_is_ingested_with_its_page_in_each_passage_uri(tmp_path: Path) -> None:
    pages = [sentences(3, "tides"), "The moon pulls the oceans, which makes tides.", "Zebras graze on the savanna."]
    pdf = write_pdf(tmp_path / "guide.pdf", pages, title="Field guide")
    source = MemorySource("docs")

    report = ingest([tmp_path], source, chunk_tokens=16, overlap=0, progress=False)

    assert report.failures == [] and report.documents == 1
    zebra = source.search("zebras savanna", k=1)[0]
    assert zebra.doc_id == "guide.pdf" and zebra.title == "Field guide"
    assert zebra.metadata["page"] == 3 and zebra.metadata["format"] == "pdf"
    assert zebra.uri == pdf.resolve().as_uri() + "#page=3"
    assert source.search("moon oceans", k=1)[0].uri.endswith("#page=2")
    assert "page_starts" not in zebra.metadata  # the offsets stay out of every chunk


def test_a_pdf_without_text_and_a_broken_pdf_are_named_with_the_reason(tmp_path: Path) -> None:
    write_pdf(tmp_path / "scan.pdf", ["", ""])
    (tmp_path / "broken.pdf").write_bytes(b"%PDF-1.4 not really")
    (tmp_path / "ok.txt").write_text("Plain text.", encoding="utf-8")

    report = ingest([tmp_path], MemorySource(), progress=False)

    reasons = {Path(where).name: why for where, why in report.failures}
    assert set(reasons) == {"scan.pdf", "broken.pdf"} and report.documents == 1
    assert "OCR" in reasons["scan.pdf"]
    assert "PDF" in reasons["broken.pdf"]
    assert "scan.pdf" in report.summary() and "broken.pdf" in report.summary()


def test_docx_is_ingested_with_headings_paragraphs_and_tables(tmp_path: Path) -> None:
    import docx

    document = docx.Document()
    document.add_heading("Tide tables", level=1)
    document.add_paragraph("Spring tides follow the new and the full moon.")
    table = document.add_table(rows=2, cols=2)
    table.cell(0, 0).text, table.cell(0, 1).text = "Port", "High water"
    table.cell(1, 0).text, table.cell(1, 1).text = "Brest", "06:12"
    document.save(str(tmp_path / "tides.docx"))
    source = MemorySource("docs")

    report = ingest([tmp_path], source, progress=False)

    assert report.failures == [] and report.documents == 1
    (p,) = source.search("Brest high water", k=1)
    assert p.doc_id == "tides.docx" and p.title == "Tide tables" and p.metadata["format"] == "docx"
    assert "Spring tides follow the new and the full moon." in p.text
    assert "Brest | 06:12" in p.text


def test_a_broken_docx_is_named_with_the_reason(tmp_path: Path) -> None:
    (tmp_path / "old.docx").write_bytes(b"\xd0\xcf\x11\xe0 an old binary .doc renamed")
    report = ingest([tmp_path], MemorySource(), progress=False)
    ((where, why),) = report.failures
    assert where.endswith("old.docx") and ".docx" in why


def test_every_unsupported_file_is_named_in_the_summary(tmp_path: Path) -> None:
    (tmp_path / "image.png").write_bytes(b"\x89PNG")
    (tmp_path / "slides.key").write_bytes(b"PK")
    (tmp_path / "kept.md").write_text("# Kept\n\nText.", encoding="utf-8")

    report = ingest([tmp_path], MemorySource(), progress=False)

    assert report.unsupported_files == 2
    assert "image.png" in report.summary() and "slides.key" in report.summary()


def test_html_keeps_the_article_and_drops_menus_footers_and_hidden_parts(tmp_path: Path) -> None:
    (tmp_path / "page.html").write_text(
        """<html><head><title>Tides</title></head><body>
        <div role="navigation"><a href="/">Home</a> <a href="/about">About us</a></div>
        <header><p>Site banner text</p></header>
        <aside>Related: cookie recipes</aside>
        <main><h2>Why tides happen</h2><p>The moon pulls the oceans.</p>
        <div hidden><p>Hidden promo</p></div><p>Twice a day.</p></main>
        <footer><p>Copyright 2024</p></footer></body></html>""",
        encoding="utf-8",
    )
    (doc,) = load_path(tmp_path)
    assert doc.title == "Tides"
    assert doc.text == "Why tides happen\n\nThe moon pulls the oceans.\n\nTwice a day."
