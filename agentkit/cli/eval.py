"""`agentkit eval ...`: retrieval (BEIR), routing, grounded answering (SQuAD 2.0) and perplexity;
the measuring itself is in agentkit/eval/."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from agentkit.cli.context import Context, close_sources, model_option


@click.group("eval")
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
        close_sources(source)
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
        close_sources(*sources.values())
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

    def rate(result: Any, name: str, of: str) -> str:
        """`0.1020 (10/98; 95% interval 0.056-0.178)`: the rate `name`, its fraction and its luck."""
        value = getattr(result, name)
        if value is None:
            return f"n/a (no {of})"
        ci = result.interval(name)  # None where the report has no counts for it
        if ci is None:
            return f"{value:.4f}"
        hits, of_n = result.counts[name]
        return f"{value:.4f} ({hits}/{of_n}; 95% interval {ci[0]:.3f}-{ci[1]:.3f})"

    for label, result in results:
        cp = rate(result, "citation_precision", "model citations")
        ttft = "n/a" if result.median_ttft_ms is None else f"{result.median_ttft_ms:.1f} ms"
        click.echo(f"{label}, mode {result.mode}: {result.n} questions ({result.n_answerable} answerable, {result.n_unanswerable} unanswerable)")
        click.echo(f"  answerable accuracy      {rate(result, 'answerable_accuracy', 'answerable questions')}")
        click.echo(f"  unanswerable abstention  {rate(result, 'unanswerable_abstention', 'unanswerable questions')}")
        click.echo(f"  exact match (SQuAD 2.0)  {result.exact_match:.4f}")
        click.echo(f"  token F1 (SQuAD 2.0)     {result.f1:.4f}")
        click.echo(f"  citation precision       {cp}; {result.inferred_citations} inferred, not counted")
        click.echo(f"  supported but wrong      {rate(result, 'supported_but_wrong', 'answerable questions')}")
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
