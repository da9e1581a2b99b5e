"""The `agentkit` command: the click group, and the commands of each family in a module beside it.

ask and chat (ask_chat.py), ingest and delete (ingest.py), sources and config (sources.py) and
eval (eval.py) are registered here; router, serve, mcp, plugins, plugin, sessions, models, logs
and tune are imported only when run, so `agentkit --help` stays fast. context.py holds what they
all share. Nothing outside this package imports from it (agentkit/devtools/layers.py checks).
"""

from __future__ import annotations

import os
import sys
from typing import Any

import click

from agentkit import __version__
from agentkit.cli import ask_chat, ingest, sources
from agentkit.cli import eval as eval_commands
from agentkit.cli.context import Context


def _fail(exc: BaseException) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2)


#: Commands that live in their own modules, imported only when run (or listed by --help).
LAZY_COMMANDS = {
    "router": ("agentkit.cli.router:router_group", "Fit and inspect the router."),
    "serve": ("agentkit.cli.serve:serve", "Serve the agent behind an OpenAI-compatible HTTP API."),
    "mcp": ("agentkit.cli.mcp:mcp_command", "Serve the knowledge sources as MCP tools over stdio."),
    "plugins": ("agentkit.cli.plugin:plugins_command", "List installed plugins and what they registered."),
    "plugin": ("agentkit.cli.plugin:plugin_group", "Write a new plugin skeleton."),
    "sessions": ("agentkit.cli.sessions:sessions_group", "List and export saved chat sessions."),
    "models": ("agentkit.cli.models:models_group", "List the models (GGUF headers read) and set the default."),
    "logs": ("agentkit.cli.logs:logs_group", "Answers given by ask, chat and serve, newest first."),
    "tune": ("agentkit.cli.tune:tune_group", "Adapt the model: data from your knowledge base, a LoRA adapter, GGUF."),
}


def _load_command(target: str) -> click.Command:
    import importlib

    module, _, attr = target.partition(":")
    return getattr(importlib.import_module(module), attr)


class _Group(click.Group):
    """Turns agentkit's own errors into one clear line and exit status 2, without a traceback.

    Commands in LAZY_COMMANDS are imported when used, so `agentkit --help` stays fast.
    """

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*super().list_commands(ctx), *LAZY_COMMANDS, *self._plugin_commands()})

    def get_command(self, ctx: click.Context, name: str) -> click.Command | None:
        command = super().get_command(ctx, name)
        if command is None and name in LAZY_COMMANDS:
            command = _load_command(LAZY_COMMANDS[name][0])
        if command is None:
            command = self._plugin_commands().get(name)
        return command

    def _plugin_commands(self) -> dict[str, click.Command]:
        """Commands from plugins (`register_commands`); consulted only for --help and unknown names."""
        from agentkit.cli.plugin import plugin_commands

        return plugin_commands(reserved={*self.commands, *LAZY_COMMANDS})

    def format_commands(self, ctx: click.Context, formatter: click.HelpFormatter) -> None:
        rows = []
        for name in self.list_commands(ctx):
            if name in LAZY_COMMANDS and name not in self.commands:
                rows.append((name, LAZY_COMMANDS[name][1]))
                continue
            command = self.get_command(ctx, name)
            if command is not None and not command.hidden:
                rows.append((name, command.get_short_help_str(formatter.width - 6 - max(map(len, self.commands)))))
        if rows:
            with formatter.section("Commands"):
                formatter.write_dl(rows)

    def invoke(self, ctx: click.Context) -> Any:
        from agentkit.errors import AgentkitError

        try:
            return super().invoke(ctx)
        except AgentkitError as exc:
            _fail(exc)


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, "--version", prog_name="agentkit")
@click.option("--config", "config_path", metavar="FILE", help="YAML config (default: ./agentkit.yaml, $AGENTKIT_CONFIG, or the built-in embedded default).")
@click.option("-m", "--model", metavar="NAME|PATH", help="A GGUF model file, or a name from `agentkit models`, instead of the default (also after the command).")
@click.option("--data-dir", metavar="DIR", help="Where embedded stores keep their data (overrides data_dir).")
@click.option("-v", "--verbose", "verbose", count=True, help="Log what agentkit does on stderr (-vv: debug).")
@click.option("-q", "--quiet", is_flag=True, help="Only errors on stderr: no warnings' log lines, no progress bars.")
@click.pass_context
def cli(ctx: click.Context, config_path: str | None, model: str | None, data_dir: str | None, verbose: int, quiet: bool) -> None:
    """agentkit: a local model for language, your sources for facts, answers with citations.

    Shell completion: eval "$(_AGENTKIT_COMPLETE=bash_source agentkit)" (zsh_source, fish_source).
    """
    if os.environ.get("NO_COLOR"):
        ctx.color = False  # https://no-color.org: any non-empty value turns styling off
    if verbose and quiet:
        raise click.UsageError("-v and -q contradict each other; give one of them")
    ctx.obj = Context(config_path, model, data_dir, verbosity=-1 if quiet else verbose)
    _setup_logging(ctx.obj.verbosity)
    if quiet:
        # Through click's defaults, so an explicit --progress still wins.
        ctx.default_map = {"ingest": {"progress": False}, "ask": {"progress": False},
                           "eval": {name: {"progress": False} for name in ("retrieval", "qa", "perplexity")}}


def _setup_logging(verbosity: int) -> None:
    """agentkit's loggers on stderr: warnings by default, errors with -q, info with -v, debug with -vv."""
    import logging

    class Stderr(logging.StreamHandler):  # type: ignore[type-arg]
        """Writes to sys.stderr as it is at each record (a test runner swaps it)."""

        @property  # type: ignore[override]
        def stream(self) -> Any:
            return sys.stderr

        @stream.setter
        def stream(self, value: Any) -> None:
            pass

    # NOTSET by default: Python's own last-resort handler prints warnings, and tests' log capture works.
    level = {-1: logging.ERROR, 0: logging.NOTSET, 1: logging.INFO}.get(verbosity, logging.DEBUG)
    root = logging.getLogger("agentkit")
    root.setLevel(level)
    ours = [h for h in root.handlers if getattr(h, "_agentkit_cli", False)]
    if verbosity > 0 and not ours:
        handler = Stderr()
        handler.setFormatter(logging.Formatter("agentkit: %(levelname)s %(name)s: %(message)s"))
        handler._agentkit_cli = True  # type: ignore[attr-defined]
        root.addHandler(handler)
    elif verbosity <= 0:
        for h in ours:
            root.removeHandler(h)


for _command in (ask_chat.ask, ask_chat.chat, ingest.ingest, ingest.delete, sources.sources, sources.show_config,
                 eval_commands.eval_group):
    cli.add_command(_command)


def main() -> None:
    cli(prog_name="agentkit")
