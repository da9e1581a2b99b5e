"""Loaders for office documents: PDF (pypdf) and Word .docx (python-docx), both pure Python.

Registered by suffix in agentkit.plugins like any plugin's loaders; each library is imported
when the first file of its kind is read.
"""

from __future__ import annotations

import io
import logging
from pathlib import Path

from agentkit.errors import IngestError, MissingDependency
from agentkit.ingest.loaders import Loaded


def load_pdf(raw: bytes, path: Path) -> Loaded:
    """The text layer of every page, pages separated by a blank line; `page_starts` lets each
    chunk cite its page (`file://…#page=3`)."""
    try:
        from pypdf import PdfReader
        from pypdf.errors import PdfReadError
    except ImportError:
        raise MissingDependency("pypdf", purpose="reading .pdf files") from None
    # pypdf logs every malformed object it repairs; one line per skipped file is ours to give.
    logging.getLogger("pypdf").setLevel(logging.ERROR)
    try:
        reader = PdfReader(io.BytesIO(raw))
        if reader.is_encrypted and not reader.decrypt(""):
            raise IngestError("the PDF is password-protected; save an unprotected copy and ingest that")
        texts = [(page.extract_text() or "").strip() for page in reader.pages]
        info = reader.metadata
        title = str(info.title or "").strip() if info is not None else ""
    except PdfReadError as exc:
        raise IngestError(f"not a readable PDF ({exc}); re-save it from a PDF viewer") from None
    if not any(texts):
        raise IngestError(
            f"no text in its {len(texts)} page(s): a scanned PDF has only images; "
            "run OCR first (e.g. ocrmypdf in.pdf out.pdf) and ingest the result"
        )
    parts: list[str] = []
    starts: list[int] = []
    offset = 0
    for text in texts:
        # Every page keeps a start, even an empty one, so page n is always starts[n - 1].
        starts.append(offset)
        parts.append(text)
        offset += len(text) + 2
    return Loaded("\n\n".join(parts), title, format="pdf", page_starts=starts,
                  metadata={"pages": len(texts)})


def load_docx(raw: bytes, path: Path) -> Loaded:
    """Paragraphs, headings and tables (a row per line, cells separated by " | "), in document order."""
    try:
        import docx
        from docx.table import Table
    except ImportError:
        raise MissingDependency("python-docx", purpose="reading .docx files") from None
    try:
        document = docx.Document(io.BytesIO(raw))
    except Exception as exc:  # noqa: BLE001 - python-docx raises zipfile, lxml and its own errors
        raise IngestError(f"not a readable .docx ({type(exc).__name__}: {exc}); re-save it from Word or LibreOffice "
                          "(an old .doc must be converted to .docx)") from None
    blocks: list[str] = []
    heading = ""
    for item in document.iter_inner_content():
        if isinstance(item, Table):
            rows = [" | ".join(c.text.strip() for c in row.cells) for row in item.rows]
            text = "\n".join(r for r in rows if r.strip(" |"))
        else:
            text = item.text.strip()
            style = (item.style.name if item.style is not None else "") or ""
            if text and not heading and (style == "Title" or style.startswith("Heading")):
                heading = text
        if text:
            blocks.append(text)
    title = (document.core_properties.title or "").strip() or heading
    return Loaded("\n\n".join(blocks), title, format="docx")
