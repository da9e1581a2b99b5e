"""`agentkit sessions list|export|delete`: the chats saved by `agentkit chat --session NAME`
(the store is agentkit/sessions.py)."""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import datetime
from pathlib import Path

import click

from agentkit.cli.context import Context
from agentkit.sessions import SessionStore, default_path


def _open(obj: Context) -> SessionStore:
    return SessionStore(default_path(obj.config.data_dir))


@click.group("sessions")
def sessions_group() -> None:
    """List, export and delete saved chat sessions (`agentkit chat --session NAME`)."""


@sessions_group.command("list")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array.")
@click.pass_obj
def list_sessions(obj: Context, as_json: bool) -> None:
    """Saved sessions, most recently active first."""
    with _open(obj) as store:
        infos = store.list()
        path = store.path
    if as_json:
        click.echo(json.dumps([i.to_dict() for i in infos], indent=2, ensure_ascii=False))
        return
    if not infos:
        click.echo(f"no saved sessions in {path}; start one with: agentkit chat --session NAME")
        return
    width = max(len("name"), *(len(i.name) for i in infos))
    click.echo(f"{'name':<{width}}  turns  {'created':<16}  {'last active':<16}  first question")
    for i in infos:
        first = " ".join(i.first_question.split())
        first = first if len(first) <= 50 else first[:49] + "…"
        flag = f"  ({i.incomplete} incomplete)" if i.incomplete else ""
        click.echo(f"{i.name:<{width}}  {i.turns:>5}  {_short(i.created_at)}  {_short(i.last_active)}  {first}{flag}")


@sessions_group.command("export")
@click.argument("name")
@click.option("-o", "--output", type=click.Path(dir_okay=False, writable=True, path_type=Path), help="Write to FILE instead of stdout.")
@click.pass_obj
def export_session(obj: Context, name: str, output: Path | None) -> None:
    """Print session NAME as JSON: its summary and every message, with citations and routes."""
    with _open(obj) as store:
        text = json.dumps(store.export(name), indent=2, ensure_ascii=False)
    if output is None:
        click.echo(text)
        return
    output.write_text(text + "\n", encoding="utf-8")
    click.echo(f"wrote session {name!r} to {output}", err=True)


@sessions_group.command("delete")
@click.argument("names", nargs=-1, required=True)
@click.pass_obj
def delete_session(obj: Context, names: Sequence[str]) -> None:
    """Delete saved sessions by NAME (every message)."""
    with _open(obj) as store:
        for name in names:
            store.info(name)  # every name is checked before anything is deleted
        for name in names:
            n = store.delete(name)
            click.echo(f"deleted session {name!r} ({n} messages)")


def _short(stamp: str) -> str:
    """An ISO UTC timestamp as local 'YYYY-MM-DD HH:MM'."""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp[:16]
