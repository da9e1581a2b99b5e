"""Write an adapter into a config file's `adapters:` section, bound to sources or route classes.

A config without an `adapters:` key gets a block appended as text, so its comments survive; one
that has the section is rewritten through YAML (comments lost) after a `.bak` copy is kept.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path
from typing import Any

from agentkit.errors import ConfigError

ROUTES = ("parametric", "retrieve", "dictionary")


def register_adapter(
    config_file: str | Path,
    name: str,
    path: str | Path,
    *,
    scale: float = 1.0,
    sources: list[str] | None = None,
    routes: list[str] | None = None,
    default: bool = False,
) -> Path:
    """Bind the adapter at `path` under `adapters.<name>` in `config_file`; return the file.

    The file is created from the packaged defaults when it does not exist. The result is loaded
    again before it is kept, so a binding to an unknown source is refused with the file untouched.
    """
    import yaml

    from agentkit.config import DEFAULTS_FILE, parse_config

    config_file = Path(config_file)
    bad = [r for r in routes or [] if r not in ROUTES]
    if bad:
        raise ConfigError(f"route {', '.join(map(repr, bad))} is not a route class; use one of {', '.join(ROUTES)}")
    text = config_file.read_text(encoding="utf-8") if config_file.exists() else DEFAULTS_FILE.read_text(encoding="utf-8")
    raw: dict[str, Any] = yaml.safe_load(text) or {}
    entry: dict[str, Any] = {"path": _relative(Path(path), config_file.parent), "scale": scale}
    if sources:
        entry["sources"] = list(sources)
    if routes:
        entry["routes"] = list(routes)
    if default:
        entry["default"] = True
    if "adapters" not in raw:
        block = yaml.safe_dump({"adapters": {name: entry}}, sort_keys=False)
        new_text = text.rstrip("\n") + "\n\n# Written by `agentkit tune`: LoRA adapters and what selects them.\n" + block
    else:
        adapters = raw.get("adapters") or {}
        adapters[name] = entry
        raw["adapters"] = adapters
        new_text = yaml.safe_dump(raw, sort_keys=False)
    parse_config(new_text, origin=str(config_file))  # refuse a config that would not load
    if config_file.exists() and "adapters" in raw and text != new_text:
        shutil.copyfile(config_file, config_file.with_name(config_file.name + ".bak"))
    tmp = config_file.with_name(config_file.name + ".tmp")
    tmp.write_text(new_text, encoding="utf-8")
    os.replace(tmp, config_file)
    return config_file


def _relative(path: Path, folder: Path) -> str:
    """`path` relative to the config's folder when it lies inside it, else absolute."""
    resolved = path.expanduser().resolve()
    try:
        return str(resolved.relative_to(folder.resolve()))
    except ValueError:
        return str(resolved)
