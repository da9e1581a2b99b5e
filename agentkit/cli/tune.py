"""`agentkit tune ...`: instruction data from the knowledge base, LoRA training, GGUF export, binding.

`agentkit tune run` does all four; `data`, `train`, `export` and `register` are the single steps.
"""

from __future__ import annotations

import json as _json
from pathlib import Path
from typing import Any

import click

from agentkit.cli.context import Context

ROUTE_CHOICE = click.Choice(["parametric", "retrieve", "dictionary"])


def _base_model(cfg: Any, settings: Any, override: str | None) -> str | None:
    """What to adapt: --base, tune.base_model, llm.model_path (llama_cpp), else the bundled model."""
    if override:
        return override
    if settings.base_model:
        return str(cfg.resolve_path(settings.base_model))
    if cfg.llm_backend == "llama_cpp" and cfg.llm.get("model_path"):
        return str(cfg.llm["model_path"])
    return None


def _out_dir(cfg: Any, settings: Any, name: str) -> Path:
    return cfg.resolve_path(settings.output_dir) / name


def _config_file(obj: Context) -> Path:
    """Where `register` writes: --config / $AGENTKIT_CONFIG / ./agentkit.yaml (created if absent)."""
    from agentkit.config import find_config

    found = find_config(obj.config_path)
    return found if found is not None else Path("agentkit.yaml")


@click.group("tune")
def tune_group() -> None:
    """Adapt the model: data from your knowledge base, a LoRA adapter, GGUF for llama.cpp.

    Needs the tune extra: pip install "agentkit[tune]" (torch, transformers, peft).
    """


# --- data ----------------------------------------------------------------------------------------


def _data_options(f: Any) -> Any:
    options = [
        click.option("--corpus", required=True, type=click.Path(exists=True, path_type=Path),
                     help="The knowledge base: a file or folder `agentkit ingest` reads (BEIR corpus.jsonl, .txt, .md, .html)."),
        click.option("--labels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="A labelled task file: JSON lines with question, answer(s), optional gold_ids or context."),
        click.option("--queries", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None,
                     help="BEIR queries.jsonl (with --qrels): each query with its judged passages."),
        click.option("--qrels", type=click.Path(exists=True, dir_okay=False, path_type=Path), default=None),
        click.option("--generate/--no-generate", default=None,
                     help="Let the model write questions about passages (default: only when no labels are given)."),
        click.option("--max-passages", type=int, default=None, help="Passages to write questions about (tune.data.max_passages)."),
        click.option("--limit", type=int, default=None, help="Only the first N labelled items."),
        click.option("--chunk-tokens", type=int, default=200, show_default=True,
                     help="Chunk size; keep it equal to `eval qa --chunk-tokens` so held-out gold ids match."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _build_data(obj: Context, settings: Any, out: Path, corpus: Path, labels: Path | None, queries: Path | None,
                qrels: Path | None, generate: bool | None, max_passages: int | None, limit: int | None,
                chunk_tokens: int, progress: bool) -> Any:
    from agentkit.eval.corpus import corpus_store
    from agentkit.plugins import build_llm
    from agentkit.tune import dataset as ds

    cfg = obj.config
    if (queries is None) != (qrels is None):
        raise click.UsageError("--queries and --qrels go together (BEIR layout)")
    items: list[Any] = []
    if labels is not None:
        items += ds.load_task_file(labels, limit)
    if queries is not None and qrels is not None:
        items += ds.load_beir_task(queries, qrels, limit)
    generate = (not items) if generate is None else generate
    store, ingest_report = corpus_store(cfg, corpus, chunk_tokens, progress=progress)
    click.echo(ingest_report.summary(), err=True)
    llm = build_llm(cfg.llm)
    report = ds.DatasetReport()
    try:
        if generate:
            stats = ds.GenerationStats()
            passages = ds.corpus_passages(corpus, chunk_tokens=chunk_tokens, overlap=min(cfg.ingest.chunk_overlap, chunk_tokens // 4))
            items += list(ds.generate_items(
                llm, passages, per_passage=settings.data.per_passage,
                max_passages=max_passages or settings.data.max_passages, seed=settings.data.seed,
                stats=stats, progress=progress,
            ))
            report.generation = stats
            click.echo(stats.summary(), err=True)
        if not items:
            raise click.UsageError("no questions: give --labels, --queries/--qrels, or let --generate write some")
        examples = list(ds.build_examples(
            store, items, k=settings.data.passages, distractors=settings.data.passages - 1,
            seed=settings.data.seed, refusal_rate=settings.data.refusal_rate, count_tokens=llm.count_tokens,
            evidence_tokens=cfg.agent.evidence_tokens, report=report, progress=progress,
        ))
    finally:
        store.close()
    if not examples:
        raise click.UsageError(f"no example could be built ({report.summary()})")
    return ds.write_dataset(examples, out, heldout=settings.data.heldout, seed=settings.data.seed, report=report)


@tune_group.command("data")
@_data_options
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for train.jsonl and heldout.jsonl.")
@click.option("--progress/--no-progress", default=True)
@click.pass_obj
def data_command(obj: Context, out: Path, progress: bool, **options: Any) -> None:
    """Build instruction data (instruction, input, output) from the knowledge base."""
    report = _build_data(obj, obj.config.tune, out, progress=progress, **options)
    click.echo(report.summary())


# --- train and export ----------------------------------------------------------------------------


def _train(obj: Context, settings: Any, data: Path, out: Path, base: str | None, resume: bool,
           max_steps: int | None, progress: bool) -> tuple[Any, Path | None]:
    from agentkit.llm.hf import load_hf_model
    from agentkit.tune.export import export_gguf_lora
    from agentkit.tune.train import read_examples, train

    cfg = obj.config
    examples = read_examples(data)
    model_path = _base_model(cfg, settings, base)
    click.echo(f"loading {model_path or 'the bundled SmolLM2-135M-Instruct'} into transformers ...", err=True)
    hf = load_hf_model(model_path, device=settings.train.device, dtype=settings.train.dtype,
                       cache_dir=cfg.data_dir / "hf-cache")
    try:
        report = train(hf.model, hf.tokenizer, examples, out, lora=settings.lora, settings=settings.train,
                       device=hf.device, resume=resume, max_steps=max_steps, progress=progress)
    except KeyboardInterrupt:
        from agentkit.tune.train import latest_checkpoint

        click.echo(f"\ninterrupted: saved {latest_checkpoint(out)}; run the same command with --resume "
                   "to continue from there", err=True)
        raise SystemExit(130) from None
    click.echo(report.summary())
    gguf = None
    if hf.gguf is not None:
        gguf = export_gguf_lora(out / "peft", out / "adapter.gguf", base=hf.gguf)
        click.echo(f"exported the adapter for llama.cpp: {gguf}")
    else:
        click.echo("the base is a Hugging Face folder: the PEFT adapter serves the transformers backend "
                   "(convert the base to GGUF to export it for llama.cpp)")
    return report, gguf


def _train_options(f: Any) -> Any:
    options = [
        click.option("--base", default=None, help="Base model (GGUF file or HF folder); default: tune.base_model, llm.model_path, the bundled model."),
        click.option("--epochs", type=float, default=None, help="tune.train.epochs"),
        click.option("--learning-rate", type=float, default=None, help="tune.train.learning_rate"),
        click.option("--batch-size", type=int, default=None, help="tune.train.batch_size"),
        click.option("--rank", type=int, default=None, help="tune.lora.rank"),
        click.option("--alpha", type=float, default=None, help="tune.lora.alpha"),
        click.option("--device", default=None, help="tune.train.device: auto, cpu, cuda"),
        click.option("--max-steps", type=int, default=None, help="Stop after N optimiser steps (a quick trial)."),
        click.option("--resume", is_flag=True, help="Continue from the newest checkpoint in the output folder."),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _train_settings(cfg: Any, epochs: Any, learning_rate: Any, batch_size: Any, rank: Any, alpha: Any, device: Any) -> Any:
    """The config's `tune:` section with the options given on the command line."""
    def given(**values: Any) -> dict[str, Any]:
        return {key: value for key, value in values.items() if value is not None}

    tune = cfg.tune
    return tune.model_validate({
        **tune.model_dump(),
        "train": {**tune.train.model_dump(), **given(epochs=epochs, learning_rate=learning_rate, batch_size=batch_size, device=device)},
        "lora": {**tune.lora.model_dump(), **given(rank=rank, alpha=alpha)},
    })


@tune_group.command("train")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="train.jsonl from `agentkit tune data`.")
@click.option("--out", required=True, type=click.Path(file_okay=False, path_type=Path), help="Folder for checkpoints, the PEFT adapter and adapter.gguf.")
@_train_options
@click.option("--progress/--no-progress", default=True)
@click.pass_obj
def train_command(obj: Context, data: Path, out: Path, base: str | None, epochs: float | None, learning_rate: float | None,
                  batch_size: int | None, rank: int | None, alpha: float | None, device: str | None,
                  max_steps: int | None, resume: bool, progress: bool) -> None:
    """Train a LoRA adapter with PEFT (resumable), then export it to GGUF."""
    settings = _train_settings(obj.config, epochs, learning_rate, batch_size, rank, alpha, device)
    _train(obj, settings, data, out, base, resume, max_steps, progress)


@tune_group.command("export")
@click.argument("adapter", type=click.Path(exists=True, file_okay=False, path_type=Path))
@click.argument("out", type=click.Path(dir_okay=False, path_type=Path))
@click.option("--base", default=None, help="The base GGUF the adapter was trained on (default: the bundled model).")
@click.option("--dtype", type=click.Choice(["f32", "f16"]), default="f32", show_default=True)
def export_command(adapter: Path, out: Path, base: str | None, dtype: str) -> None:
    """Convert a PEFT LoRA folder into a GGUF LoRA for llama.cpp."""
    from agentkit.tune.export import export_gguf_lora, read_gguf_lora

    path = export_gguf_lora(adapter, out, base=base, dtype=dtype)
    info = read_gguf_lora(path)
    click.echo(f"wrote {path}: {len(info['tensors'])} tensors, alpha {info['metadata'].get('adapter.lora.alpha')}")


# --- binding -------------------------------------------------------------------------------------


def _binding_options(f: Any) -> Any:
    options = [
        click.option("--source", "sources", multiple=True, help="Use the adapter when the router picks this source (repeatable)."),
        click.option("--route", "routes", multiple=True, type=ROUTE_CHOICE, help="Use it for this route class (repeatable)."),
        click.option("--default", "default", is_flag=True, help="Use it when no other binding matches."),
        click.option("--scale", type=float, default=1.0, show_default=True),
    ]
    for option in reversed(options):
        f = option(f)
    return f


def _register(obj: Context, name: str, adapter: Path, sources: tuple[str, ...], routes: tuple[str, ...],
              default: bool, scale: float) -> Path:
    from agentkit.tune.register import register_adapter

    if not (sources or routes or default):
        routes = ("retrieve",)
    file = register_adapter(_config_file(obj), name, adapter, scale=scale, sources=list(sources),
                            routes=list(routes), default=default)
    bound = ", ".join([*(f"source {s}" for s in sources), *(f"route {r}" for r in routes), *(["default"] if default else [])])
    click.echo(f"registered adapter {name!r} ({bound}) in {file}")
    return file


@tune_group.command("register")
@click.argument("name")
@click.argument("adapter", type=click.Path(exists=True, path_type=Path))
@_binding_options
@click.pass_obj
def register_command(obj: Context, name: str, adapter: Path, sources: tuple[str, ...], routes: tuple[str, ...],
                     default: bool, scale: float) -> None:
    """Bind an adapter to sources or route classes in the config (default: --route retrieve)."""
    _register(obj, name, adapter, sources, routes, default, scale)


# --- everything ----------------------------------------------------------------------------------


@tune_group.command("run")
@click.option("--name", required=True, help="The adapter's name (its folder under tune.output_dir and its key in adapters:).")
@_data_options
@_train_options
@_binding_options
@click.option("--register/--no-register", default=True, help="Write the adapter into the config's adapters: section.")
@click.option("--progress/--no-progress", default=True)
@click.pass_obj
def run_command(obj: Context, name: str, base: str | None, epochs: float | None, learning_rate: float | None,
                batch_size: int | None, rank: int | None, alpha: float | None, device: str | None,
                max_steps: int | None, resume: bool, sources: tuple[str, ...], routes: tuple[str, ...],
                default: bool, scale: float, register: bool, progress: bool, **data_options: Any) -> None:
    """Build the data, train, export to GGUF and register the adapter: the whole pipeline."""
    cfg = obj.config
    settings = _train_settings(cfg, epochs, learning_rate, batch_size, rank, alpha, device)
    out = _out_dir(cfg, settings, name)
    data_dir = out / "data"
    if resume and (data_dir / "train.jsonl").is_file():
        click.echo(f"resuming: reusing the data in {data_dir}", err=True)
    else:
        report = _build_data(obj, settings, data_dir, progress=progress, **data_options)
        click.echo(report.summary())
    _, gguf = _train(obj, settings, data_dir / "train.jsonl", out, base, resume, max_steps, progress)
    adapter = gguf if gguf is not None and cfg.llm_backend == "llama_cpp" else out / "peft"
    if register:
        _register(obj, name, adapter, sources, routes, default, scale)
    summary = {"adapter": str(adapter), "data": str(data_dir), "heldout": str(data_dir / "heldout.jsonl")}
    click.echo(_json.dumps(summary))
    click.echo(f"compare base and adapter on the held-out examples: agentkit tune eval --data {data_dir / 'heldout.jsonl'} "
               f"--lora {adapter}\n  or with the whole agent's retrieval: agentkit eval qa --corpus {data_options['corpus']} "
               f"--questions {data_dir / 'heldout.jsonl'} --chunk-tokens {data_options['chunk_tokens']} --mode always --lora {adapter}")


# --- evaluation ----------------------------------------------------------------------------------


@tune_group.command("eval")
@click.option("--data", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path), help="heldout.jsonl from `agentkit tune data` (or run).")
@click.option("--lora", type=click.Path(exists=True, path_type=Path), default=None, help="Also answer with this adapter and report both.")
@click.option("--lora-scale", type=float, default=1.0, show_default=True)
@click.option("--limit", type=int, default=None, help="Only the first N examples.")
@click.option("--json", "as_json", is_flag=True, help="Print one JSON object per run.")
@click.option("--progress/--no-progress", default=True)
@click.pass_obj
def eval_command(obj: Context, data: Path, lora: Path | None, lora_scale: float, limit: int | None, as_json: bool, progress: bool) -> None:
    """Evidence use on held-out examples (same passages as built): gold cited, refusals, format."""
    from agentkit.eval.adapters import evaluate_evidence_use
    from agentkit.plugins import build_llm
    from agentkit.tune.dataset import load_examples

    examples = load_examples(data)[:limit] if limit else load_examples(data)
    llm = build_llm(obj.config.llm)
    runs: list[tuple[str, dict[str, float] | None]] = [("base", None)]
    if lora is not None:
        register = getattr(llm, "add_adapter", None)
        if register is None:
            raise click.UsageError(f"--lora needs a backend that switches adapters (llama_cpp, transformers), not {obj.config.llm_backend}")
        register("eval-lora", lora)
        runs.append((f"base + {lora.name}", {"eval-lora": lora_scale}))
    reports = [evaluate_evidence_use(llm, examples, adapters=a, label=label, progress=progress and not as_json) for label, a in runs]
    if as_json:
        click.echo(_json.dumps({r.label: r.to_dict() for r in reports}, indent=2))
        return
    click.echo(f"evidence use on {len(examples)} held-out examples ({reports[0].answerable} answerable)")
    click.echo(f"  {'run':<28}{'gold cited':>11}{'cite prec':>10}{'EM':>7}{'F1':>7}{'refusals ok':>12}{'false ref':>10}{'format':>8}{'ms':>8}")
    for r in reports:
        precision = "n/a" if r.citation_precision is None else f"{r.citation_precision:.3f}"
        refusals = "n/a" if r.correct_refusals is None else f"{r.correct_refusals:.3f}"
        click.echo(f"  {r.label:<28}{r.gold_cited:>11.3f}{precision:>10}{r.exact_match:>7.3f}{r.f1:>7.3f}"
                   f"{refusals:>12}{r.false_refusals:>10.3f}{r.formatted:>8.3f}{r.mean_latency_ms:>8.0f}")
