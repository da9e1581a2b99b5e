"""`agentkit ingest` (files into a source) and `agentkit delete` (documents out of it); both go
through a running `agentkit serve` when one holds the store (agentkit/server/remote.py)."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agentkit.cli.context import Context, close_sources

if TYPE_CHECKING:
    from agentkit.config import Config


@click.command()
@click.argument("paths", nargs=-1, required=True, type=click.Path(exists=True, path_type=Path))
@click.option("--source", "source_name", metavar="NAME", help="The source to write to (default: ingest.source, else the first writable one).")
@click.option("--chunk-tokens", type=int, default=None, help="Words and punctuation marks per chunk, not model tokens (default from config).")
@click.option("--overlap", type=int, default=None, help="Words and punctuation marks shared by consecutive chunks.")
@click.option("--progress/--no-progress", default=True, help="Show a progress bar.")
@click.option("--max-file-mb", type=click.FloatRange(min=0, min_open=True), default=None, help="Skip (and name) files over this size (default: ingest.max_file_mb, 50).")
@click.option("--id-prefix", default="", metavar="PREFIX", help="Put PREFIX before every document id, e.g. projB/ when another folder also has a README.md.")
@click.option("--prune", is_flag=True, help="Also remove stored documents whose files are gone from the given folders.")
@click.pass_obj
def ingest(obj: Context, paths: tuple[Path, ...], source_name: str | None, chunk_tokens: int | None, overlap: int | None, progress: bool,
           max_file_mb: float | None, id_prefix: str, prune: bool) -> None:
    """Read files or folders (.txt .md .html, BEIR .jsonl) into a knowledge source."""
    from agentkit.errors import StoreLocked
    from agentkit.ingest.lock import ingest_lock
    from agentkit.ingest.pipeline import ingest as run_ingest
    from agentkit.knowledge.base import is_writable
    from agentkit.plugins import build_source
    from agentkit.server.remote import forwarded_ingest, locked_error

    cfg = obj.config
    name = _target(cfg, source_name, " to ingest into")
    # A running `agentkit serve` holds the store: it does the writing (server/remote.py says why).
    report = forwarded_ingest(cfg.data_dir, name, paths, chunk_tokens=chunk_tokens, overlap=overlap,
                              max_file_mb=max_file_mb, id_prefix=id_prefix, prune=prune)
    if report is None:
        source = build_source(name, cfg.sources[name], cfg.data_dir, config_dir=cfg.base_dir)
        if not is_writable(source):
            raise click.UsageError(f"source {name!r} is read-only; choose a writable one with --source")
        try:
            with ingest_lock(cfg.data_dir):
                report = run_ingest(
                    list(paths), source,
                    chunk_tokens=chunk_tokens or cfg.ingest.chunk_tokens,
                    overlap=cfg.ingest.chunk_overlap if overlap is None else overlap,
                    batch_size=cfg.ingest.batch_size,
                    progress=progress,
                    max_file_mb=max_file_mb or cfg.ingest.max_file_mb,
                    id_prefix=id_prefix,
                    prune=prune,
                )
        except StoreLocked as exc:
            raise locked_error(exc, cfg.data_dir) from None
        finally:
            close_sources(source)
    click.echo(report.summary())
    if report.failures:
        for where, why in report.failures:
            click.secho(f"  skipped {where}: {why}", fg="yellow", err=True)
        if report.documents == 0:
            sys.exit(1)


@click.command()
@click.argument("doc_ids", nargs=-1, required=True)
@click.option("--source", "source_name", metavar="NAME", help="The source to delete from (default: ingest.source, else the first).")
@click.option("--json", "as_json", is_flag=True, help='Print {"source": NAME, "removed": {DOC_ID: chunks}}.')
@click.pass_obj
def delete(obj: Context, doc_ids: tuple[str, ...], source_name: str | None, as_json: bool) -> None:
    """Remove documents (every chunk) by document id, e.g. guide/install.md or a BEIR _id."""
    from agentkit.ingest.lock import ingest_lock
    from agentkit.ingest.pipeline import delete_documents
    from agentkit.knowledge.base import is_writable
    from agentkit.plugins import build_source

    from agentkit.errors import StoreLocked
    from agentkit.server.remote import forwarded_delete, locked_error

    cfg = obj.config
    name = _target(cfg, source_name)
    # An id given twice is one document: deleted once, reported once.
    ids = list(dict.fromkeys(doc_ids))
    removed = forwarded_delete(cfg.data_dir, name, ids)  # a running serve holds the store
    if removed is None:
        source = build_source(name, cfg.sources[name], cfg.data_dir, config_dir=cfg.base_dir)
        try:
            if not is_writable(source):
                raise click.UsageError(f"source {name!r} is read-only")
            with ingest_lock(cfg.data_dir):
                removed = delete_documents(source, ids)
        except StoreLocked as exc:
            raise locked_error(exc, cfg.data_dir) from None
        finally:
            close_sources(source)
    if as_json:
        import json

        click.echo(json.dumps({"source": name, "removed": removed}, indent=2, ensure_ascii=False))
    else:
        for doc_id, n in removed.items():
            click.echo(f"{doc_id}: removed {n} chunk(s)" if n else f"{doc_id}: not in {name!r}")
    if not any(removed.values()):
        sys.exit(1)


def _target(cfg: Config, source_name: str | None, purpose: str = "") -> str:
    """The source `ingest` and `delete` write to: --source, else ingest.source, else the first."""
    name = source_name or cfg.ingest.source or next(iter(cfg.sources), "")
    if name not in cfg.sources:
        raise click.UsageError(f"no source named {name!r}{purpose}; configured: {', '.join(cfg.sources) or 'none'}")
    return str(name)
