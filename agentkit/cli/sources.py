"""`agentkit sources` (the configured sources and their state) and `agentkit config` (the effective config)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agentkit.cli.context import Context, close_sources

if TYPE_CHECKING:
    from agentkit.config import Config


@click.command()
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
            close_sources(source)
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


@click.command("config")
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
