"""What every `agentkit` command shares: the Context (options, config loaded once), the -m and
--threads options, and the printers of an answer that `ask` and the chat REPL both use."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

if TYPE_CHECKING:
    from agentkit.agent import Agent
    from agentkit.config import Config
    from agentkit.display import LiveAnswer
    from agentkit.types import Answer


class Context:
    """Options shared by every command; the config is loaded once, when first needed."""

    def __init__(self, config_path: str | None, model: str | None, data_dir: str | None, *, verbosity: int = 0) -> None:
        self.config_path = config_path
        self.model = model
        self.data_dir = data_dir
        #: -q gives -1, each -v one more: the level of agentkit's logging on stderr.
        self.verbosity = verbosity
        #: `--threads` on ask, chat or serve: llm.n_threads for this run.
        self.threads: int | None = None
        self._config: Config | None = None

    @property
    def config(self) -> Config:
        if self._config is None:
            from agentkit.cli.models import apply_default, resolve_model
            from agentkit.config import load_config

            cfg = load_config(self.config_path)
            if self.data_dir:
                cfg.data_dir = Path(self.data_dir).expanduser()
            if self.model:
                if cfg.llm_backend != "llama_cpp":
                    raise click.UsageError(f"--model applies to the llama_cpp backend; {cfg.origin} uses {cfg.llm_backend!r}")
                # A path, or a name listed by `agentkit models` (a file in the models folder, "bundled").
                cfg.llm["model_path"] = str(resolve_model(self.model, cfg.data_dir))
            else:
                warning = apply_default(cfg)  # `agentkit models default NAME`, when the config names no model
                if warning:
                    click.secho(f"warning: {warning}", fg="yellow", err=True)
            if self.threads:
                if cfg.llm_backend != "llama_cpp":
                    raise click.UsageError(f"--threads applies to the llama_cpp backend; {cfg.origin} uses {cfg.llm_backend!r}")
                cfg.llm["n_threads"] = self.threads
            self._config = cfg
        return self._config

    def agent(self) -> Agent:
        from agentkit.agent import Agent

        return Agent.from_config(self.config)


def close_sources(*sources: Any) -> None:
    """Close whatever sources hold open (files, clients); read-only ones may have nothing to close."""
    for source in sources:
        closer = getattr(source, "close", None)
        if closer is not None:
            closer()


def _set_model(ctx: click.Context, param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).model = value


#: `-m/--model` on a command (ask, chat, serve, eval), as after `agentkit` itself: the same setting.
model_option = click.option(
    "-m", "--model", metavar="NAME|PATH", expose_value=False, callback=_set_model,
    help="A GGUF model file, or a name from `agentkit models`, instead of the default.",
)


def _set_threads(ctx: click.Context, param: click.Parameter, value: int | None) -> None:
    if value is not None:
        ctx.ensure_object(Context).threads = value


#: `--threads N` on ask, chat and serve: llm.n_threads for this run (default: the physical cores).
threads_option = click.option(
    "--threads", type=click.IntRange(min=1), metavar="N", expose_value=False, callback=_set_threads,
    help="CPU threads for the llama.cpp model (default: llm.n_threads, else the physical cores; "
    "on a busy machine fewer can be faster).",
)


def record_answer(config: Config, answer: Answer, via: str) -> None:
    """The answer into `agentkit logs` (agentkit/logs.py), unless logging is off."""
    from agentkit.logs import record

    record(config, answer, via)


def show_answer(answer: Answer, live: LiveAnswer | None = None, *, hint: str = "", verbose: bool = False) -> None:
    """The answer, once, then how it was made, its sources (with the quotes) and warnings. `live`
    is what streamed it (agentkit.display.LiveAnswer): the text is printed only when it did not
    stream as it stands (one agentkit withheld or replaced, or streaming was off)."""
    from agentkit.display import kind_note

    if live is None or not live.finish(answer):
        if live is not None and live.label:
            click.secho(live.label, bold=True, nl=False)
        click.echo(answer.text)
    # Under the text: a streamed answer is already on screen when the note is known.
    note = kind_note(answer)
    if note and answer.withheld and hint:
        note += f" ({hint})"
    if note:
        click.secho(f"[{note}]", dim=True)
    if verbose and answer.withheld:
        click.secho(f"the model's own answer, not shown: {answer.withheld}", dim=True)
    show_footer(answer)


def show_footer(answer: Answer, *, err: bool = False) -> None:
    """The sources under an answer (each `[n]` once, with its quotes), the route, and any warnings."""
    from agentkit.display import MEMORY_NOTE, cited_sources, source_head, source_lines

    sources = cited_sources(answer)
    if sources:
        click.secho("Sources:", bold=True, err=err)
        for s in sources:
            click.echo(f"  {source_head(s)}", err=err)
            for line in source_lines(s):
                click.echo(f"      {line}", err=err)
    elif answer.from_memory:
        click.secho(MEMORY_NOTE, dim=True, err=err)
    if answer.route:
        r = answer.route
        click.secho(f"route: {', '.join(r.targets)} (confidence {r.confidence:.2f}) — {r.reason}", dim=True, err=err)
    # A refusal's warnings are its reasons: label them so.
    label = "why" if answer.kind == "refusal" else "warning"
    for w in answer.warnings:
        click.secho(f"{label}: {w}", fg="yellow", err=err)
