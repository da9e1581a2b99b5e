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
from agentkit.ingest.pipeline import ingest
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
    pdf = tmp_path / "manual.pdf"
    pdf.write_bytes(b"%PDF-1.4")
    with pytest.raises(IngestError, match=r"manual\.pdf.*\.md.*\.txt"):
        list(load_path(pdf))
    with pytest.raises(IngestError, match="manual.pdf"):
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
