"""`agentkit models`: the bundled model, the configured one and the GGUF files in the models folder,
each described from its GGUF header; `agentkit models default NAME` picks the one used by default.

The default is a path in DATA_DIR/default_model.txt. It applies when neither --model nor
llm.model_path (or $AGENTKIT_MODEL in the shipped configs) names a model.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import click

from agentkit.errors import AgentkitError, InputError

if TYPE_CHECKING:
    from agentkit.cli.context import Context
    from agentkit.config import Config

#: The file under data_dir that holds the default model's path (one line).
DEFAULT_FILE = "default_model.txt"
#: Where GGUF files are looked for, besides the configured model: this variable, else DATA_DIR/models.
MODELS_DIR_ENV = "AGENTKIT_MODELS_DIR"
BUNDLED = "bundled"


@dataclass
class ModelEntry:
    """A row of `agentkit models`."""

    name: str
    origin: str  # "bundled", "config" or "folder"
    path: Path | None = None
    detail: str = ""  # for a remote model (openai_compat): its URL and model id
    size: int | None = None
    info: dict[str, Any] | None = None
    error: str = ""
    default: bool = False

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "origin": self.origin,
            "path": str(self.path) if self.path else None,
            "detail": self.detail,
            "size_bytes": self.size,
            "default": self.default,
            **({"error": self.error} if self.error else {}),
            **(self.info or {}),
        }


def models_dir(data_dir: Path) -> Path:
    env = os.environ.get(MODELS_DIR_ENV)
    return Path(env).expanduser() if env else Path(data_dir).expanduser() / "models"


def default_file(data_dir: Path) -> Path:
    return Path(data_dir).expanduser() / DEFAULT_FILE


def read_default(data_dir: Path) -> Path | None:
    """The model chosen with `agentkit models default`, or None (the bundled one)."""
    try:
        text = default_file(data_dir).read_text(encoding="utf-8").strip()
    except OSError:
        return None
    return Path(text) if text else None


def apply_default(cfg: Config) -> str:
    """Put the chosen default model into `cfg` when the config names none; returns a warning, or ""."""
    if cfg.llm_backend != "llama_cpp" or cfg.llm.get("model_path"):
        return ""
    chosen = read_default(cfg.data_dir)
    if chosen is None:
        return ""
    if not chosen.is_file():
        return (f"the default model {chosen} (set in {default_file(cfg.data_dir)}) is gone; using the bundled model; "
                f"choose another with: agentkit models default NAME")
    cfg.llm["model_path"] = str(chosen)
    return ""


def configured_path(cfg: Config) -> Path | None:
    """llm.model_path as the config file (or --model) set it, not as `apply_default` filled it in."""
    value = cfg.llm.get("model_path") if cfg.llm_backend == "llama_cpp" else None
    if not value:
        return None
    path = Path(str(value)).expanduser()
    chosen = read_default(cfg.data_dir)
    return None if chosen is not None and path.absolute() == chosen.absolute() else path


def folder_models(data_dir: Path) -> list[Path]:
    """GGUF files in the models folder and its subfolders (downloads often keep a repo's folder)."""
    folder = models_dir(data_dir)
    if not folder.is_dir():
        return []
    return sorted(p for p in folder.rglob("*.gguf") if p.is_file())


def _entry(name: str, origin: str, path: Path) -> ModelEntry:
    from agentkit.llm.gguf import read_gguf

    entry = ModelEntry(name, origin, path)
    try:
        entry.size = path.stat().st_size
        entry.info = read_gguf(path).to_dict()
    except (OSError, AgentkitError) as exc:
        entry.error = str(exc)
    return entry


def catalog(cfg: Config) -> list[ModelEntry]:
    """Every model agentkit can use here: bundled, configured, then the models folder."""
    from agentkit.llm.models import bundled_model_path

    entries: list[ModelEntry] = []
    try:
        entries.append(_entry(BUNDLED, "bundled", bundled_model_path()))
    except AgentkitError as exc:
        entries.append(ModelEntry(BUNDLED, "bundled", error=str(exc)))
    backend = cfg.llm_backend
    if backend == "openai_compat":
        model = cfg.llm.get("model") or "(the first model the server lists)"
        entries.append(ModelEntry(str(cfg.llm.get("model") or "remote"), "config", detail=f"openai_compat {cfg.llm.get('base_url', '')} model {model}"))
    elif backend == "llama_cpp":
        configured = configured_path(cfg)
        if configured is not None:
            entries.append(_entry(configured.stem, "config", configured))
        chosen_default = read_default(cfg.data_dir)
        if chosen_default is not None:
            entries.append(_entry(chosen_default.stem, "default", chosen_default))
    elif cfg.llm.get("model_path"):
        path = Path(str(cfg.llm["model_path"])).expanduser()
        entries.append(ModelEntry(path.name, "config", path, detail=backend))
    folder = models_dir(cfg.data_dir)
    for path in folder_models(cfg.data_dir):
        entries.append(_entry(path.relative_to(folder).with_suffix("").as_posix(), "folder", path))
    # The model `agentkit ask` would load now: the configured one, else the chosen default, else bundled.
    chosen = cfg.llm.get("model_path") if backend == "llama_cpp" else None
    # Compared unresolved: a symlink in the models folder to the bundled file is another entry.
    active = Path(str(chosen)).expanduser().absolute() if chosen else None
    for entry in entries:
        if backend != "llama_cpp":
            entry.default = entry.origin == "config"
        elif active is None:
            entry.default = entry.origin == "bundled"
        else:
            entry.default = entry.path is not None and entry.path.absolute() == active
    # A configured or default model that is also in the folder is listed once, under its folder name.
    in_folder = {e.path.resolve() for e in entries if e.origin == "folder" and e.path}
    return [e for e in entries if e.origin not in ("config", "default") or e.path is None or e.path.resolve() not in in_folder]


def resolve_model(name: str, data_dir: Path) -> Path:
    """A model NAME as `-m` and `models default` take it: "bundled", a name listed by
    `agentkit models` (a GGUF file in the models folder, without .gguf), or a path."""
    from agentkit.llm.models import bundled_model_path

    if name == BUNDLED:
        return bundled_model_path()
    path = Path(name).expanduser()
    if path.is_file():
        return path.absolute()
    folder = models_dir(data_dir)
    names = {p.relative_to(folder).with_suffix("").as_posix(): p for p in folder_models(data_dir)}
    found = names.get(name) or names.get(name.removesuffix(".gguf"))
    if found is None:
        # A bare file name in a subfolder ("qwen.gguf" for "Qwen/qwen.gguf") is found by its stem.
        matches = [p for key, p in names.items() if Path(key).name == Path(name).stem]
        found = matches[0] if len(matches) == 1 else None
    if found is None and ("/" in name or os.sep in name or name.endswith(".gguf")):
        return path.absolute()  # meant as a file: the backend says it does not exist, and what to pass
    if found is None:
        known = ", ".join([BUNDLED, *names]) if names else f"{BUNDLED} (no .gguf files in {folder})"
        raise InputError(f"no model named {name!r}: not a file, nor a GGUF file in {folder} (${MODELS_DIR_ENV}); "
                         f"known names: {known}; pass a path to a .gguf file or put one in {folder}")
    return found


def _size(n: int | None) -> str:
    if n is None:
        return "-"
    for unit in ("B", "KB", "MB", "GB"):
        if n < 1000 or unit == "GB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1000  # type: ignore[assignment]
    return str(n)


@click.group("models", invoke_without_command=True)
@click.option("--json", "as_json", is_flag=True, help="Print a JSON array (with each model's whole chat template).")
@click.pass_context
def models_group(ctx: click.Context, as_json: bool) -> None:
    """List the models agentkit can use (bundled, configured, GGUF files in the models folder).

    The models folder is $AGENTKIT_MODELS_DIR, else DATA_DIR/models. Size, quantisation, context
    length and chat template are read from each file's GGUF header. `*` marks the model used
    when no --model is given; `agentkit models default NAME` changes it.
    """
    if ctx.invoked_subcommand is not None:
        return
    obj: Context = ctx.obj
    cfg = obj.config
    entries = catalog(cfg)
    if as_json:
        click.echo(json.dumps([e.to_dict() for e in entries], indent=2, ensure_ascii=False))
        return
    rows = [("", "name", "size", "quant", "context", "template", "where")]
    for e in entries:
        info = e.info or {}
        where = e.error or e.detail or str(e.path or "")
        if info.get("type") == "adapter":
            where = f"LoRA adapter ({info.get('architecture')}); {where}"
        ctx_len = info.get("context_length")
        rows.append(("*" if e.default else "", e.name, _size(e.size), info.get("quantization", "-"),
                     f"{ctx_len:,}" if ctx_len else "-", info.get("chat_template", "-"), where))
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]) - 1)]
    for r in rows:
        click.echo("  ".join(c.ljust(w) for c, w in zip(r[:-1], widths, strict=True)) + "  " + r[-1])
    folder = models_dir(cfg.data_dir)
    if not any(e.origin == "folder" for e in entries):
        click.secho(f"(no .gguf files in {folder}; put models there or set ${MODELS_DIR_ENV})", dim=True)


@models_group.command("default")
@click.argument("name", required=False)
@click.option("--json", "as_json", is_flag=True, help="Print the default as JSON.")
@click.pass_obj
def default_command(obj: Context, name: str | None, as_json: bool) -> None:
    """Show the default model, or make NAME the default (a name from `agentkit models`, a .gguf path,
    or `bundled` to go back to the bundled model). Saved in DATA_DIR/default_model.txt."""
    from agentkit.llm.gguf import read_gguf

    cfg = obj.config
    target = default_file(cfg.data_dir)
    configured = configured_path(cfg)  # read before the default changes: it tells them apart
    if name is None:
        chosen = read_default(cfg.data_dir)
        if as_json:
            click.echo(json.dumps({"default": str(chosen) if chosen else BUNDLED, "file": str(target)}))
        else:
            click.echo(str(chosen) if chosen else f"{BUNDLED} (SmolLM2-135M-Instruct)")
        return
    if name == BUNDLED:
        target.unlink(missing_ok=True)
        chosen = None
    else:
        chosen = resolve_model(name, cfg.data_dir)
        info = read_gguf(chosen)  # refuse a file llama.cpp could not load as a model, now
        if info.kind == "adapter":
            raise InputError(f"{chosen} is a LoRA adapter, not a model; give it to --lora or llm.lora, and pick a model here")
        target.parent.mkdir(parents=True, exist_ok=True)
        target.write_text(f"{chosen}\n", encoding="utf-8")
    if as_json:
        click.echo(json.dumps({"default": str(chosen) if chosen else BUNDLED, "file": str(target)}))
        return
    click.echo(f"default model: {chosen} (saved in {target})" if chosen else f"default model: {BUNDLED} ({target} removed)")
    if configured and (chosen is None or configured.resolve() != chosen.resolve()):
        click.secho(f"note: {cfg.origin} sets llm.model_path ({configured}), which comes first; --model overrides both", fg="yellow", err=True)
