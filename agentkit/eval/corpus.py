"""The evaluation store under data_dir/eval: collections named after the corpus file they hold.

`corpus_store` is the one store `eval qa` retrieves from and `tune data` draws evidence from, so
that their passage ids agree; `eval retrieval` names its own collections with `corpus_key` too.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any


def corpus_key(corpus: Path) -> str:
    """A collection name tied to the corpus file's identity, so a changed file gets a new store."""
    st = corpus.stat()
    digest = hashlib.sha1(f"{corpus.resolve()}:{st.st_size}:{st.st_mtime_ns}".encode()).hexdigest()[:10]
    stem = "".join(c if c.isalnum() else "-" for c in corpus.stem)[:40]
    return f"eval-{stem}-{digest}"


def corpus_store(cfg: Any, corpus: Path, chunk_tokens: int = 200, progress: bool = True) -> tuple[Any, Any]:
    """The evaluation store for `corpus` (an embedded Qdrant under data_dir/eval, ingested once and
    reused; what `eval qa` retrieves from and what `agentkit tune data` draws evidence from, so
    that passage ids agree): (source, ingest report)."""
    from agentkit.ingest.pipeline import ingest
    from agentkit.knowledge.qdrant import QdrantSource

    store = QdrantSource("corpus", f"The evaluation corpus {corpus.name}: passages that may answer the questions.",
                         path=cfg.data_dir / "eval", collection=corpus_key(corpus) + f"-qa{chunk_tokens}")
    overlap = min(cfg.ingest.chunk_overlap, chunk_tokens // 4)
    report = ingest([corpus], store, chunk_tokens=chunk_tokens, overlap=overlap, progress=progress)
    return store, report
