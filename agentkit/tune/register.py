"""Write an adapter into a config file's `adapters:` section, bound to sources or route classes.

The file is edited through ruamel.yaml's round trip, so its comments, key order and quoting
survive; a config without an `adapters:` key gets the block appended as text, the rest untouched.
"""

from __future__ import annotations

import io
import os
import shutil
from collections.abc import MutableMapping
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
    from agentkit.config import DEFAULTS_FILE, parse_config

    config_file = Path(config_file)
    bad = [r for r in routes or [] if r not in ROUTES]
    if bad:
        raise ConfigError(f"route {', '.join(map(repr, bad))} is not a route class; use one of {', '.join(ROUTES)}")
    text = config_file.read_text(encoding="utf-8") if config_file.exists() else DEFAULTS_FILE.read_text(encoding="utf-8")
    from ruamel.yaml import YAMLError

    yaml = _round_trip()
    try:
        raw = yaml.load(text)
    except YAMLError as exc:
        raise ConfigError(f"{config_file} is not valid YAML ({exc}); fix it before registering an adapter") from exc
    if raw is None:  # empty, or only comments
        raw = {}
    if not isinstance(raw, MutableMapping):
        raise ConfigError(f"{config_file} holds a {type(raw).__name__}, not a mapping of settings; it cannot take an adapters: section")
    entry: dict[str, Any] = {"path": _relative(Path(path), config_file.parent), "scale": scale}
    if sources:
        entry["sources"] = list(sources)
    if routes:
        entry["routes"] = list(routes)
    if default:
        entry["default"] = True
    if "adapters" not in raw:
        block = _dump(yaml, {"adapters": {name: entry}})
        new_text = text.rstrip("\n") + "\n\n# Written by `agentkit tune`: LoRA adapters and what selects them.\n" + block
    else:
        if raw.get("adapters") is None:  # `adapters:` with nothing under it
            raw["adapters"] = {}
        raw["adapters"][name] = entry
        new_text = _dump(yaml, raw)
    parse_config(new_text, origin=str(config_file))  # refuse a config that would not load
    if config_file.exists() and "adapters" in raw and text != new_text:
        shutil.copyfile(config_file, config_file.with_name(config_file.name + ".bak"))
    tmp = config_file.with_name(config_file.name + ".tmp")
    tmp.write_text(new_text, encoding="utf-8")
    os.replace(tmp, config_file)
    return config_file


def _round_trip() -> Any:
    from ruamel.yaml import YAML

    yaml = YAML()  # round-trip mode: comments, order, flow style and quotes are kept
    yaml.preserve_quotes = True
    yaml.width = 4096  # never re-wrap a long value the user wrote on one line
    return yaml


def _dump(yaml: Any, data: Any) -> str:
    out = io.StringIO()
    yaml.dump(data, out)
    return out.getvalue()


def _relative(path: Path, folder: Path) -> str:
    """`path` relative to the config's folder when it lies inside it, else absolute."""
    resolved = path.expanduser().resolve()
    try:
        return str(resolved.relative_to(folder.resolve()))
    except ValueError:
        return str(resolved)
