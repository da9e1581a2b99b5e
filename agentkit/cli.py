"""The `agentkit` command: chat, ask, ingest, sources, config.

Each command imports what it needs when it runs, so `agentkit --help` stays fast.
"""

from __future__ import annotations

import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agentkit import __version__

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
            from agentkit.config import load_config
            from agentkit.models_cli import apply_default, resolve_model

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


def _close(*sources: Any) -> None:
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


def _fail(exc: BaseException) -> None:
    click.secho(f"error: {exc}", fg="red", err=True)
    sys.exit(2)


#: Commands that live in their own modules, imported only when run (or listed by --help).
LAZY_COMMANDS = {
    "router": ("agentkit.routing.cli:router_group", "Fit and inspect the router."),
    "serve": ("agentkit.server.cli:serve", "Serve the agent behind an OpenAI-compatible HTTP API."),
    "mcp": ("agentkit.mcp_server:mcp_command", "Serve the knowledge sources as MCP tools over stdio."),
    "plugins": ("agentkit.plugin_cli:plugins_command", "List installed plugins and what they registered."),
    "plugin": ("agentkit.plugin_cli:plugin_group", "Write a new plugin skeleton."),
    "sessions": ("agentkit.sessions:sessions_group", "List and export saved chat sessions."),
    "models": ("agentkit.models_cli:models_group", "List the models (GGUF headers read) and set the default."),
    "logs": ("agentkit.logs:logs_group", "Answers given by ask, chat and serve, newest first."),
    "tune": ("agentkit.tune.cli:tune_group", "Adapt the model: data from your knowledge base, a LoRA adapter, GGUF."),
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
        from agentkit.plugin_cli import plugin_commands

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


@cli.command()
@click.argument("question", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the whole Answer as JSON.")
@click.option("--route", "routes", multiple=True, metavar="NAME", help="Force the route: a source name or 'parametric' (repeatable).")
@click.option("--stream/--no-stream", default=None, help="Print tokens as they come (default: when stdout is a terminal).")
@click.option("-v", "--verbose", is_flag=True, help="Also print the model's own answer when agentkit showed a source sentence or a refusal instead.")
@click.option("--progress/--no-progress", default=None, help="Say on stderr what agentkit is doing before the answer (default: when stderr is a terminal).")
@model_option
@threads_option
@click.pass_obj
def ask(obj: Context, question: tuple[str, ...], as_json: bool, routes: tuple[str, ...], stream: bool | None, verbose: bool,
        progress: bool | None) -> None:
    """Answer one QUESTION and exit."""
    from agentkit.display import LiveAnswer
    from agentkit.types import AnswerEvent

    from agentkit.server.remote import forwarded_answer

    text = " ".join(question)
    # Beside a running `agentkit serve` (which holds the store), the server answers.
    answer = None if obj.model else forwarded_answer(obj.config.data_dir, text, list(routes) or None)
    if answer is not None:
        record_answer(obj.config, answer, "ask")
        if as_json:
            click.echo(answer.to_json())
        else:
            show_answer(answer, hint="" if verbose else "--verbose shows it", verbose=verbose)
        return
    agent = obj.agent()
    # Tokens on stdout as they come (a terminal, or --stream); what agentkit is doing meanwhile
    # on stderr, so that stdout stays the answer.
    live = LiveAnswer(tokens=(sys.stdout.isatty() if stream is None else stream) and not as_json,
                      progress=sys.stderr.isatty() if progress is None else progress, err=True)
    with agent:
        for event in agent.stream(text, route=list(routes) or None):
            live.show(event)
            if isinstance(event, AnswerEvent):
                answer = event.answer
    assert answer is not None
    record_answer(obj.config, answer, "ask")
    if as_json:
        click.echo(answer.to_json())
        return
    show_answer(answer, live, hint="" if verbose else "--verbose shows it", verbose=verbose)


def record_answer(config: Config, answer: Answer, via: str) -> None:
    """The answer into `agentkit logs` (agentkit/logs.py), unless logging is off."""
    from agentkit.logs import record

    record(config, answer, via)


def show_answer(answer: Answer, live: LiveAnswer | None = None, *, hint: str = "", verbose: bool = False) -> None:
    """The answer, once, then its sources (with the quotes) and warnings. `live` is what streamed
    it (agentkit.display.LiveAnswer): the text is printed only when it did not stream as it stands
    (the quote reader's answer, or one agentkit withheld or replaced)."""
    from agentkit.display import kind_note

    note = kind_note(answer)
    if note and answer.withheld and hint:
        note += f" ({hint})"
    if note:
        click.secho(f"[{note}]", dim=True)
    if live is None or not live.finish(answer):
        if live is not None and live.label:
            click.secho(live.label, bold=True, nl=False)
        click.echo(answer.text)
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


@cli.command()
@click.option("--route", "routes", multiple=True, metavar="NAME", help="Force the route for every question.")
@click.option("--history-file", type=click.Path(dir_okay=False), default=None, help="Line-editing history (default: DATA_DIR/chat_history).")
@click.option("--session", "session", metavar="NAME", default=None, help="Save the conversation as NAME (in DATA_DIR/sessions.sqlite) and resume it if it exists.")
@threads_option
@model_option
@click.pass_obj
def chat(obj: Context, routes: tuple[str, ...], history_file: str | None, session: str | None) -> None:
    """An interactive session: streamed answers with their sources. /help lists the commands."""
    from agentkit.repl import Repl

    if session is None:
        agent = obj.agent()
        with agent:
            Repl(agent, routes=list(routes) or None, history_file=history_file).run()
        return
    from agentkit.sessions import SessionStore, default_path

    with SessionStore(default_path(obj.config.data_dir)) as store:
        agent = obj.agent()
        with agent:
            Repl(agent, routes=list(routes) or None, history_file=history_file, store=store, session=session).run()


@cli.command()
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
    name = source_name or cfg.ingest.source or next(iter(cfg.sources), "")
    if name not in cfg.sources:
        raise click.UsageError(f"no source named {name!r} to ingest into; configured: {', '.join(cfg.sources) or 'none'}")
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
            _close(source)
    click.echo(report.summary())
    if report.failures:
        for where, why in report.failures:
            click.secho(f"  skipped {where}: {why}", fg="yellow", err=True)
        if report.documents == 0:
            sys.exit(1)


@cli.command()
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
    name = source_name or cfg.ingest.source or next(iter(cfg.sources), "")
    if name not in cfg.sources:
        raise click.UsageError(f"no source named {name!r}; configured: {', '.join(cfg.sources) or 'none'}")
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
            _close(source)
    if as_json:
        import json

        click.echo(json.dumps({"source": name, "removed": removed}, indent=2, ensure_ascii=False))
    else:
        for doc_id, n in removed.items():
            click.echo(f"{doc_id}: removed {n} chunk(s)" if n else f"{doc_id}: not in {name!r}")
    if not any(removed.values()):
        sys.exit(1)


@cli.command()
@click.option("--json", "as_json", is_flag=True, help="Print a JSON object: the config, the model, each source with its type, state and settings.")
@click.pass_obj
def sources(obj: Context, as_json: bool) -> None:
    """List the configured knowledge sources with their document counts."""
    import json

    from agentkit.plugins import build_source

    cfg = obj.config
    rows = []
    for name, spec in cfg.sources.items():
        source = build_source(name, spec, cfg.data_dir, config_dir=cfg.base_dir)
        row: dict[str, Any] = {"name": name, "type": spec["type"], "where": _where(spec),
                               "description": " ".join(spec.get("description", "").split())}
        try:
            if hasattr(source, "count"):
                row["passages"] = source.count()
                row["state"] = f"{row['passages']:,} passages"
            elif hasattr(source, "health"):  # read-only, but a server behind it may be down
                row["state"] = f"read-only, {source.health()}"
            else:
                row["state"] = "read-only"
        except Exception as exc:  # noqa: BLE001 - report an unreachable source, keep listing
            row["state"] = f"unavailable: {exc}"
        finally:
            _close(source)
        rows.append(row)
    if as_json:
        model = {"backend": cfg.llm_backend, "model": _model_label(cfg), **_model_endpoint(cfg)}
        click.echo(json.dumps({"config": _origin_label(cfg), "model": model, "sources": rows}, indent=2, ensure_ascii=False))
        return
    click.echo(f"config: {_origin_label(cfg)}")
    width = max([len("model"), *(len(str(s["type"])) for s in cfg.sources.values())])
    click.echo(f"  {'parametric':<14} {'model':<{width}} {_model_label(cfg)}")
    for row in rows:
        where = f" at {row['where']}" if row["where"] else ""
        click.echo(f"  {row['name']:<14} {row['type']:<{width}} {row['state']}{where} — {row['description']}")


def _where(spec: dict[str, Any]) -> str:
    """The server a source reads from (Elasticsearch nodes, a DICT server, an API), if any."""
    for key in ("url", "base_url", "server", "hosts"):
        value = spec.get(key)
        if value:
            return ", ".join(map(str, value)) if isinstance(value, list) else str(value)
    return ""


def _origin_label(cfg: Config) -> str:
    """Where the config came from; the packaged default is named as the README names it."""
    from agentkit.config import DEFAULTS_FILE

    if Path(cfg.origin).resolve() == DEFAULTS_FILE.resolve():
        return "built-in default (configs/default.yaml, packaged as agentkit/defaults.yaml)"
    return cfg.origin


def _model_label(cfg: Config) -> str:
    if cfg.llm_backend == "llama_cpp":
        return cfg.llm.get("model_path") or "bundled SmolLM2-135M-Instruct (Q4_1)"
    if cfg.llm_backend == "openai_compat":
        endpoint = _model_endpoint(cfg)
        return f"openai_compat {endpoint['model'] or '(the first model the server lists)'} at {endpoint['base_url']}"
    return f"{cfg.llm_backend} {cfg.llm.get('model_path') or ''}".rstrip()


def _model_endpoint(cfg: Config) -> dict[str, Any]:
    if cfg.llm_backend != "openai_compat":
        return {}
    return {"base_url": cfg.llm.get("base_url", ""), "model": cfg.llm.get("model") or ""}


@cli.command("config")
@click.option("--json", "as_json", is_flag=True, help='Print {"origin": FILE, "config": {...}} as JSON instead of YAML.')
@click.pass_obj
def show_config(obj: Context, as_json: bool) -> None:
    """Print the effective configuration (after defaults and ${ENV} interpolation)."""
    import yaml

    from agentkit.config import redacted

    cfg = obj.config
    data = redacted(cfg)  # api_key, password, token...: shown as set (and from which variable), never printed
    if as_json:
        import json

        click.echo(json.dumps({"origin": _origin_label(cfg), "config": data}, indent=2, ensure_ascii=False, default=str))
        return
    click.echo(f"# from {_origin_label(cfg)}")
    click.echo(yaml.safe_dump(data, sort_keys=False, allow_unicode=True).rstrip())


@cli.group("eval")
@model_option
def eval_group() -> None:
    """Measure retrieval, routing and answer quality on labelled data."""


@eval_group.command("retrieval")
@click.option("--corpus", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="BEIR corpus.jsonl (_id, title, text).")
@click.option("--queries", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="BEIR queries.jsonl (_id, text).")
@click.option("--qrels", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="BEIR qrels TSV (query-id, corpus-id, score).")
@click.option("--source", "source_name", metavar="NAME", help="Evaluate this configured source (the corpus is ingested into it if writable). Default: a dedicated embedded store under DATA_DIR/eval.")
@click.option("--mode", type=click.Choice(["bm25", "dense", "hybrid"]), default="bm25", show_default=True, help="Retrieval of the dedicated store (dense and hybrid encode the corpus once: minutes).")
@click.option("--chunk-tokens", type=int, default=512, show_default=True, help="Chunk size used when ingesting the corpus.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: ndcg@10, recall@100, mrr@10, ...")
@click.option("--progress/--no-progress", default=True)
@click.pass_obj
def eval_retrieval(obj: Context, corpus: Path, queries: Path, qrels: Path, source_name: str | None, mode: str, chunk_tokens: int, as_json: bool, progress: bool) -> None:
    """nDCG@10, recall@100 and MRR@10 of a source on BEIR-layout data (ingests if needed)."""
    import json as _json

    from agentkit.eval.corpus import corpus_key
    from agentkit.eval.retrieval import evaluate_retrieval, load_qrels, load_queries
    from agentkit.ingest.pipeline import ingest as run_ingest
    from agentkit.knowledge.base import is_writable
    from agentkit.plugins import build_source

    cfg = obj.config
    if source_name:
        if source_name not in cfg.sources:
            raise click.UsageError(f"no source named {source_name!r}; configured: {', '.join(cfg.sources) or 'none'}")
        source = build_source(source_name, cfg.sources[source_name], cfg.data_dir, config_dir=cfg.base_dir)
    else:
        from agentkit.knowledge.embeddings import EmbedderConfig
        from agentkit.knowledge.qdrant import QdrantSource

        dense = None if mode == "bm25" else EmbedderConfig()
        # Dense stores get their own collection: a BM25-only one cannot take vectors later.
        collection = corpus_key(corpus) + ("" if dense is None else "-dense")
        source = QdrantSource(
            "eval", f"evaluation store for {corpus.name}", path=cfg.data_dir / "eval", collection=collection,
            dense=dense, mode=mode, cache_dir=cfg.data_dir / "embeddings",
        )
    try:
        note = ""
        if is_writable(source):
            report = run_ingest([corpus], source, chunk_tokens=chunk_tokens, overlap=min(cfg.ingest.chunk_overlap, chunk_tokens // 4), progress=progress)
            note = report.summary()
            if not as_json:
                click.echo(note, err=True)
        result = evaluate_retrieval(source, load_queries(queries), load_qrels(qrels))
        result.ingest = note
    finally:
        _close(source)
    if as_json:
        click.echo(_json.dumps(result.to_dict(), indent=2))
        return
    click.echo(f"source {result.source}: {result.queries} judged queries")
    click.echo(f"  nDCG@10     {result.ndcg_at_10:.4f}")
    click.echo(f"  recall@100  {result.recall_at_100:.4f}")
    click.echo(f"  MRR@10      {result.mrr_at_10:.4f}")
    click.echo(f"  query median {result.median_query_ms:.2f} ms")


@eval_group.command("routing")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSON lines with question and route (parametric|retrieve|dictionary).")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: accuracy, per_route, retrieval_rate, median_ms, ...")
@click.option("--errors/--no-errors", default=False, help="List the misrouted questions.")
@model_option
@click.pass_obj
def eval_routing(obj: Context, labels: Path, as_json: bool, errors: bool) -> None:
    """Accuracy, per-route precision and recall, retrieval rate and decision time of the router."""
    import json as _json

    from agentkit.eval.routing import evaluate_routing, load_labels
    from agentkit.plugins import build_llm, build_source
    from agentkit.routing.build import build_router

    cfg = obj.config
    rows = load_labels(labels)
    sources = {name: build_source(name, spec, cfg.data_dir, config_dir=cfg.base_dir) for name, spec in cfg.sources.items()}
    try:
        report = evaluate_routing(build_router(cfg, build_llm(cfg.llm)), sources, rows)
    finally:
        _close(*sources.values())
    if as_json:
        click.echo(_json.dumps(report.to_dict(), indent=2))
        return
    click.echo(f"router {report.policy}: {report.n} labelled questions")
    click.echo(f"  accuracy        {report.accuracy:.4f}")
    click.echo(f"  retrieval rate  {report.retrieval_rate:.4f}")
    click.echo(f"  median decision {report.median_ms:.2f} ms")
    click.echo(f"  {'route':<12} {'precision':>9} {'recall':>7} {'n':>5}")
    for route, m in report.per_route.items():
        click.echo(f"  {route:<12} {m['precision']:>9.3f} {m['recall']:>7.3f} {m['n']:>5}")
    classes = list(report.confusion)
    click.echo("  confusion (rows: label, columns: routed to)")
    click.echo("  " + " " * 12 + "".join(f"{c:>12}" for c in classes))
    for g in classes:
        click.echo(f"  {g:<12}" + "".join(f"{report.confusion[g][c]:>12}" for c in classes))
    if errors:
        for e in report.errors:
            click.echo(f"  [{e['label']} -> {e['got']}] {e['question']}  ({e['reason']})")


@eval_group.command("qa")
@click.option("--questions", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="JSON lines: question, answers (a list; empty = unanswerable), optional _id, gold_ids, answerable (SQuAD 2.0 style).")
@click.option("--corpus", type=click.Path(exists=True, path_type=Path), default=None, help="What to retrieve from: a file or folder `agentkit ingest` reads (BEIR corpus.jsonl, .txt, .md, .html), ingested into a private store under DATA_DIR/eval, or into --source. Required without --source.")
@click.option("--source", "source_name", metavar="NAME", help="Answer with the configured agent (all its sources, its router) instead of a private store; --mode always routes to NAME.")
@click.option("--mode", type=click.Choice(["never", "always", "routed"]), default="routed", show_default=True, help="Retrieval never (the model alone), always, or as the router decides.")
@click.option("--limit", type=click.IntRange(min=1), default=None, help="Only the first N questions of the file (with --sample: draw from these).")
@click.option("--sample", type=click.IntRange(min=1), default=None, metavar="N", help="A fixed random subset of N questions, the same on every run for the same --seed.")
@click.option("--seed", type=int, default=0, show_default=True, help="Seed of --sample.")
@click.option("--chunk-tokens", type=int, default=200, show_default=True, help="Chunk size used when ingesting --corpus.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: answerable_accuracy, unanswerable_abstention, exact_match, f1, citation_precision, median_ttft_ms, ...")
@click.option("--out", type=click.Path(dir_okay=False, writable=True, path_type=Path), default=None, help="Write one JSON line per question: the reply, its citations, its route and its scores.")
@click.option("--lora", type=click.Path(exists=True, path_type=Path), default=None, help="Also answer with this adapter (GGUF for llama_cpp, PEFT folder for transformers) and report both.")
@click.option("--lora-scale", type=float, default=1.0, show_default=True)
@click.option("--progress/--no-progress", default=True)
@model_option
@click.pass_obj
def eval_qa(obj: Context, questions: Path, corpus: Path | None, source_name: str | None, mode: str, limit: int | None,
            sample: int | None, seed: int, chunk_tokens: int, as_json: bool, out: Path | None, lora: Path | None,
            lora_scale: float, progress: bool) -> None:
    """Grounded answering of the whole agent, scored as in SQuAD 2.0.

    Answerable questions: how often the reply contains a gold answer, exact match and token F1.
    Unanswerable ones (empty `answers`): how often the agent abstains ("I could not find this in
    the sources."), which scores 1. Also citation precision over the model's own [n] marks
    (agentkit's inferred ones are counted apart), supported-but-wrong answers, time to first
    token and latency.

    \b
    agentkit eval qa --corpus squad2-mini/corpus.jsonl --questions squad2-mini/questions.jsonl --sample 50
    agentkit eval qa --source docs --mode always --questions qa.jsonl --out answers.jsonl
    """
    import json as _json

    from agentkit.agent import Agent
    from agentkit.config import AdapterSpec
    from agentkit.eval.corpus import corpus_store
    from agentkit.eval.qa import evaluate_qa, load_questions, sample_questions
    from agentkit.plugins import build_llm

    cfg = obj.config
    if corpus is None and source_name is None:
        raise click.UsageError("give --corpus FILE to evaluate on a private store of it, or --source NAME to evaluate a configured source")
    if source_name is not None and source_name not in cfg.sources:
        raise click.UsageError(f"no source named {source_name!r}; configured: {', '.join(cfg.sources) or 'none'}")
    items = load_questions(questions, limit)
    if sample is not None:
        if sample >= len(items) and not as_json:
            click.echo(f"--sample {sample}: the file has only {len(items)} questions; using all of them", err=True)
        items = sample_questions(items, sample, seed)
    llm = build_llm(cfg.llm)
    if source_name is not None:
        # The configured agent, as `agentkit ask` builds it: every source, the router, tools, adapters.
        base = Agent.from_config(cfg, llm=llm)
        target = source_name
        if corpus is not None:
            from agentkit.ingest.pipeline import ingest as run_ingest
            from agentkit.knowledge.base import is_writable

            if not is_writable(base.sources[target]):
                base.close()
                raise click.UsageError(f"source {target!r} is read-only; leave out --corpus to evaluate it as it is")
            report = run_ingest([corpus], base.sources[target], chunk_tokens=chunk_tokens,
                                overlap=min(cfg.ingest.chunk_overlap, chunk_tokens // 4), progress=progress and not as_json)
            if not as_json:
                click.echo(report.summary(), err=True)
    else:
        from agentkit.routing.build import build_router

        assert corpus is not None
        store, report = corpus_store(cfg, corpus, chunk_tokens, progress=progress and not as_json)
        if not as_json:
            click.echo(report.summary(), err=True)
        base = Agent(llm, {"corpus": store}, router=build_router(cfg, llm), settings=cfg.agent, config=cfg, adapters={})
        target = "corpus"
    # With --lora: the same loaded model answers twice, without and then with the adapter.
    agents = [("base", base)]
    if lora is not None:
        register = getattr(llm, "add_adapter", None)
        if register is None:
            base.close()
            raise click.UsageError(f"--lora needs a backend that switches adapters (llama_cpp, transformers), not {cfg.llm_backend}")
        register("eval-lora", lora)
        adapters = {**base.adapters, "eval-lora": AdapterSpec(path=str(lora), scale=lora_scale, default=True)}
        agents.append((f"base + {lora.name}", Agent(llm, base.sources, router=base.router, settings=cfg.agent, config=cfg,
                                                    tools=list(base.tools.values()), adapters=adapters)))
    results = []
    sink = out.open("w", encoding="utf-8") if out is not None else None
    try:
        for label, agent in agents:
            def write(record: dict[str, Any], label: str = label) -> None:
                if sink is not None:
                    sink.write(_json.dumps({"run": label, "mode": mode, **record}, ensure_ascii=False) + "\n")
                    sink.flush()

            results.append((label, evaluate_qa(agent, items, mode, target, progress=progress and not as_json, on_record=write)))  # type: ignore[arg-type]
    finally:
        if sink is not None:
            sink.close()
        base.close()
    if as_json:
        if lora is None:
            click.echo(_json.dumps(results[0][1].to_dict(), indent=2))
        else:
            click.echo(_json.dumps({label: r.to_dict() for label, r in results}, indent=2))
        return

    def rate(value: float | None, of: str) -> str:
        return f"n/a (no {of})" if value is None else f"{value:.4f}"

    for label, result in results:
        cp = "n/a (no model citations)" if result.citation_precision is None else f"{result.citation_precision:.4f} ({result.citations} citations)"
        ttft = "n/a" if result.median_ttft_ms is None else f"{result.median_ttft_ms:.1f} ms"
        click.echo(f"{label}, mode {result.mode}: {result.n} questions ({result.n_answerable} answerable, {result.n_unanswerable} unanswerable)")
        click.echo(f"  answerable accuracy      {rate(result.answerable_accuracy, 'answerable questions')}")
        click.echo(f"  unanswerable abstention  {rate(result.unanswerable_abstention, 'unanswerable questions')}")
        click.echo(f"  exact match (SQuAD 2.0)  {result.exact_match:.4f}")
        click.echo(f"  token F1 (SQuAD 2.0)     {result.f1:.4f}")
        click.echo(f"  citation precision       {cp}; {result.inferred_citations} inferred, not counted")
        click.echo(f"  supported but wrong      {rate(result.supported_but_wrong, 'answerable questions')}")
        click.echo(f"  abstention rate          {result.abstention_rate:.4f}")
        click.echo(f"  retrieval rate           {result.retrieval_rate:.4f}")
        click.echo(f"  answer kinds             {', '.join(f'{k} {v}' for k, v in sorted(result.kinds.items()))}")
        click.echo(f"  median time to 1st token {ttft}")
        click.echo(f"  mean latency             {result.mean_latency_ms:.0f} ms")
    if out is not None:
        click.echo(f"wrote {out}", err=True)


@eval_group.command("perplexity")
@click.option("--corpus", required=True, type=click.Path(exists=True, path_type=Path), help="Held-out text: a .txt/.md/.html file, a folder of them, or a BEIR corpus.jsonl (title + text).")
@click.option("-m", "--model", "model_path", metavar="PATH", help="GGUF model (default: llm.model_path of the config, else the bundled SmolLM2-135M-Instruct).")
@click.option("--lora", "loras", multiple=True, metavar="ADAPTER.gguf", help="A GGUF LoRA adapter for this model (repeatable): adds a base+adapter row on the same loaded model.")
@click.option("--lora-scale", "lora_scales", multiple=True, type=float, help="Scale of each --lora, in order; one value applies to all.  [default: 1.0]")
@click.option("--ctx", type=click.IntRange(min=8), default=512, show_default=True, help="Window in tokens; every scored token sees at least ctx/2 tokens of context.")
@click.option("--limit-tokens", type=click.IntRange(min=0), default=4096, show_default=True, help="Score at most N tokens (each costs about two of evaluation); 0 = the whole corpus.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object: rows (tokens, nll, ppl, seconds, tokens_per_s, ...), relative_change.")
@click.option("--progress/--no-progress", default=True)
@click.pass_obj
def eval_perplexity(obj: Context, corpus: Path, model_path: str | None, loras: tuple[str, ...], lora_scales: tuple[float, ...], ctx: int, limit_tokens: int, as_json: bool, progress: bool) -> None:
    """Perplexity of the model on held-out text, and with --lora of the model plus adapters."""
    import json as _json

    from agentkit.eval.perplexity import compare, corpus_texts, perplexity

    if len(lora_scales) not in (0, 1, len(loras)):
        raise click.UsageError(f"give one --lora-scale for all adapters or one per --lora ({len(loras)}), not {len(lora_scales)}")
    scales = list(lora_scales) * len(loras) if len(lora_scales) == 1 else list(lora_scales) or [1.0] * len(loras)
    n_threads, n_gpu_layers = None, 0
    if model_path is None:
        cfg = obj.config  # applies the global --model too
        if cfg.llm_backend == "llama_cpp":
            model_path = cfg.llm.get("model_path") or None
            n_threads, n_gpu_layers = cfg.llm.get("n_threads"), cfg.llm.get("n_gpu_layers") or 0
    kwargs: dict[str, Any] = {"ctx": ctx, "limit_tokens": limit_tokens or None, "progress": progress and not as_json, "n_threads": n_threads, "n_gpu_layers": n_gpu_layers}
    lora = list(zip(loras, scales, strict=True))
    if lora:
        comparison = compare(model_path, corpus_texts(corpus), lora=lora, **kwargs)
        rows, data = comparison.rows, comparison.to_dict()
    else:
        result = perplexity(model_path, corpus_texts(corpus), **kwargs)
        rows, data = [result], {"rows": [result.to_dict()], "notes": result.notes}
    if as_json:
        click.echo(_json.dumps({"corpus": str(corpus), **data}, indent=2))
        return
    for note in rows[0].notes:
        click.echo(f"note: {note}", err=True)
    table = [("model", "adapter", "tokens", "mean NLL", "perplexity", "seconds", "tok/s")]
    table += [(r.model, r.adapter_label, str(r.tokens), f"{r.nll:.4f}", f"{r.ppl:.2f} ± {r.ppl_stderr:.2f}", f"{r.seconds:.1f}", f"{r.tokens_per_s:.0f}") for r in rows]
    widths = [max(len(row[i]) for row in table) for i in range(len(table[0]))]
    click.echo(f"perplexity on {corpus.name}: ctx {rows[0].ctx}, {rows[0].tokens} tokens scored ({rows[0].evaluated} evaluated per row)")
    for row in table:
        click.echo("  " + "  ".join(c.ljust(w) if i < 2 else c.rjust(w) for i, (c, w) in enumerate(zip(row, widths, strict=True))))
    if lora:
        click.echo(f"  change with adapter: perplexity {comparison.relative_change:+.1%}, mean NLL {comparison.delta_nll:+.4f} ± {comparison.delta_nll_stderr:.4f} nats/token (paired)")


def main() -> None:
    cli(prog_name="agentkit")


if __name__ == "__main__":
    main()
