"""`agentkit logs [on|off|status]`: the answers given by ask, chat and serve (the log is agentkit/logs.py)."""

from __future__ import annotations

import json
from datetime import datetime
from pathlib import Path

import click

from agentkit.cli.context import Context
from agentkit.logs import ENV, OFF_FILE, LogStore, enabled, logs_path


@click.group("logs", invoke_without_command=True)
@click.option("-n", "--count", "count", type=click.IntRange(min=0), default=10, show_default=True, help="How many entries, newest first (0 = all).")
@click.option("-q", "--query", metavar="TEXT", help="Only entries whose question or answer contains TEXT.")
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (citations, route, timings in full).")
@click.pass_context
def logs_group(ctx: click.Context, count: int, query: str | None, as_json: bool) -> None:
    """Answers given by ask, chat and serve: question, route, answer, citations, timings.

    Stored in DATA_DIR/sessions.sqlite (table `logs`). `agentkit logs off` stops logging.
    """
    if ctx.invoked_subcommand is not None:
        return
    obj: Context = ctx.obj
    path = logs_path(obj.config.data_dir)
    with LogStore(path) as store:
        entries = store.entries(count or None, query)
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2, ensure_ascii=False))
        return
    if not entries:
        state = "" if enabled(obj.config.data_dir) else " (logging is off: agentkit logs on)"
        click.echo(f"no logged answers{' matching ' + repr(query) if query else ''} in {path}{state}")
        return
    for e in entries:
        when = _local(e.created_at)
        route = ", ".join(e.route["targets"]) if e.route else "-"
        total = e.timings.get("total_ms")
        took = f", {total / 1000:.1f} s" if total else ""
        where = f"{e.via} {e.session}" if e.session else e.via
        click.secho(f"#{e.id}  {when}  {where}  route {route}{took}  {e.model}", dim=True)
        click.secho(f"Q: {e.question}", bold=True)
        click.echo(f"A: {e.answer}")
        for c in {c.get("marker"): c for c in e.citations}.values():  # a passage cited twice is listed once
            click.echo(f"   [{c.get('marker', '?')}] {c.get('title') or c.get('passage_id', '')} {c.get('uri') or ''}".rstrip())
        click.echo()


@logs_group.command("off")
@click.pass_obj
def logs_off(obj: Context) -> None:
    """Stop logging answers (creates DATA_DIR/logs-off)."""
    flag = Path(obj.config.data_dir).expanduser() / OFF_FILE
    flag.parent.mkdir(parents=True, exist_ok=True)
    flag.touch()
    click.echo(f"logging is off ({flag}); `agentkit logs on` turns it back on")


@logs_group.command("on")
@click.pass_obj
def logs_on(obj: Context) -> None:
    """Log answers again (removes DATA_DIR/logs-off)."""
    (Path(obj.config.data_dir).expanduser() / OFF_FILE).unlink(missing_ok=True)
    note = f" (but ${ENV} in this shell keeps its commands from logging)" if not enabled(obj.config.data_dir) else ""
    click.echo(f"logging is on{note}; answers go to {logs_path(obj.config.data_dir)}")


@logs_group.command("status")
@click.option("--json", "as_json", is_flag=True)
@click.pass_obj
def logs_status(obj: Context, as_json: bool) -> None:
    """Whether answers are logged, where, and how many are."""
    path = logs_path(obj.config.data_dir)
    with LogStore(path) as store:
        n = store.count()
    on = enabled(obj.config.data_dir)
    if as_json:
        click.echo(json.dumps({"enabled": on, "path": str(path), "entries": n}))
        return
    click.echo(f"logging is {'on' if on else 'off'}: {n} answer(s) in {path}")


def _local(stamp: str) -> str:
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M:%S")
    except ValueError:
        return stamp
