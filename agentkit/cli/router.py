"""`agentkit router ...`: fit the learned combiner on labelled questions, explain one decision."""

from __future__ import annotations

import json as _json
from pathlib import Path
from typing import Any

import click

from agentkit.cli.context import Context


def _sources(cfg: Any) -> dict[str, Any]:
    from agentkit.plugins import build_source

    return {name: build_source(name, spec, cfg.data_dir, config_dir=cfg.base_dir) for name, spec in cfg.sources.items()}


def _llm(cfg: Any) -> Any:
    from agentkit.plugins import build_llm

    return build_llm(cfg.llm)


@click.group("router")
def router_group() -> None:
    """Fit and inspect the router."""


@router_group.command("fit")
@click.option("--labels", required=True, type=click.Path(exists=True, dir_okay=False, path_type=Path),
              help="JSON lines with question and route (parametric|retrieve|dictionary).")
@click.option("--out", type=click.Path(dir_okay=False, path_type=Path), default=None,
              help="Where to save the model (default: router.model beside the config).")
@click.option("--policies", default=None, help="Comma-separated policies whose signals to use (default: router.policies).")
@click.option("--folds", type=int, default=5, show_default=True, help="Cross-validation folds for the reported accuracy.")
@click.pass_obj
def fit(obj: Context, labels: Path, out: Path | None, policies: str | None, folds: int) -> None:
    """Fit the learned combiner over the policies' signals; then set router.policy: learned."""
    from agentkit.eval.routing import fit_router, load_labels
    from agentkit.routing.build import build_router, model_path

    cfg = obj.config
    names = [p.strip() for p in policies.split(",")] if policies else None
    rows = load_labels(labels)
    sources = _sources(cfg)
    cfg.router.policy = "auto"  # collect signals from the policies themselves
    router = build_router(cfg, _llm(cfg), policies=names)
    model, cv = fit_router(router, sources, rows, folds=folds)
    target = out or model_path(cfg)
    target.parent.mkdir(parents=True, exist_ok=True)
    model.save(target)
    m = model.meta
    click.echo(f"fitted on {m['n']} questions {m['labels']} with policies {', '.join(m['policies'])}")
    click.echo(f"  {folds}-fold cross-validated accuracy {cv:.4f} (training accuracy {m['train_accuracy']:.4f})")
    click.echo(f"saved {target}; use it with router: {{policy: learned, model: {target}}}")


@router_group.command("explain")
@click.argument("question", nargs=-1, required=True)
@click.option("--json", "as_json", is_flag=True, help="Print the decision as JSON.")
@click.pass_obj
def explain(obj: Context, question: tuple[str, ...], as_json: bool) -> None:
    """Show the route the router picks for QUESTION and every signal behind it."""
    from agentkit.routing.build import build_router

    cfg = obj.config
    router = build_router(cfg, _llm(cfg))
    d = router.decide(" ".join(question), _sources(cfg))
    if as_json:
        click.echo(_json.dumps({"targets": d.targets, "confidence": d.confidence, "reason": d.reason,
                                "policy": d.policy, "signals": d.signals}, indent=2))
        return
    click.echo(f"route: {', '.join(d.targets)} (confidence {d.confidence:.2f}, {d.policy})")
    click.echo(f"why:   {d.reason}")
    for key, value in sorted(d.signals.items()):
        click.echo(f"  {key:<32} {value:g}")
