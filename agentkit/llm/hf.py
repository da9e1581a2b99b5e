"""Loading a model into transformers (PyTorch): from a GGUF file (the bundled SmolLM2 too) or a
local Hugging Face folder, on CUDA when there is one.

Shared by the transformers backend (`llm/transformers.py`) and `agentkit tune`. Needs the
`gpu` or `tune` extra (torch, transformers, peft, gguf); nothing is downloaded: a GGUF file is
dequantized by transformers itself, and a folder must hold `config.json` and the weights.
"""

from __future__ import annotations

import hashlib
import os
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentkit.errors import MissingDependency, ModelLoadError, ModelNotFound
from agentkit.llm.models import resolve_model_path

if TYPE_CHECKING:
    import torch

#: HF module names (what PEFT's `target_modules` take) -> GGUF tensor names in llama.cpp.
HF_TO_GGUF = {
    "q_proj": "attn_q",
    "k_proj": "attn_k",
    "v_proj": "attn_v",
    "o_proj": "attn_output",
    "gate_proj": "ffn_gate",
    "up_proj": "ffn_up",
    "down_proj": "ffn_down",
}


def require_torch(extra: str = "tune", packages: Sequence[str] = ("torch", "transformers", "peft")) -> None:
    """Raise a `MissingDependency` naming the extra when one of `packages` is absent."""
    import importlib.util

    for package in packages:
        if importlib.util.find_spec(package) is None:
            raise MissingDependency(package, extra=extra, purpose=f"agentkit[{extra}]")


def pick_device(device: str = "auto") -> str:
    """`auto` -> `cuda` when torch sees a GPU, else `cpu`; anything else is passed through."""
    import torch

    if device == "auto":
        return "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise ModelLoadError(f"device {device!r} was asked for but torch sees no CUDA GPU; use device: auto or cpu")
    return device


def pick_dtype(device: str, dtype: str = "auto") -> torch.dtype:
    """float32 on the CPU (fastest and exact there), bfloat16 on a GPU that supports it."""
    import torch

    if dtype != "auto":
        try:
            return getattr(torch, dtype)  # type: ignore[no-any-return]
        except AttributeError:
            raise ModelLoadError(f"unknown dtype {dtype!r}; use auto, float32, float16 or bfloat16") from None
    if device.startswith("cuda"):
        return torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16
    return torch.float32


@dataclass
class HFModel:
    model: Any
    tokenizer: Any
    #: The GGUF file the weights came from (None for a Hugging Face folder).
    gguf: Path | None
    device: str


def load_hf_model(
    path: str | os.PathLike[str] | None = None,
    *,
    device: str = "auto",
    dtype: str = "auto",
    cache_dir: str | os.PathLike[str] | None = None,
) -> HFModel:
    """The model and tokenizer at `path`: a GGUF file, a Hugging Face folder, or None (bundled).

    A GGUF file is dequantized (SmolLM2-135M: ~14 s on 2 cores, mostly the tokenizer's
    conversion); with `cache_dir` the converted model is saved there once and later loads read it
    back (~1 s).
    """
    require_torch()
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TRANSFORMERS_NO_ADVISORY_WARNINGS", "1")
    from transformers import AutoModelForCausalLM, AutoTokenizer
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    hf_logging.disable_progress_bar()
    # Raised from inside peft's get_peft_model on transformers 5; nothing a user can act on.
    warnings.filterwarnings("ignore", message="`is_gradient_checkpointing` is deprecated", category=FutureWarning)
    device = pick_device(device)
    torch_dtype = pick_dtype(device, dtype)
    gguf: Path | None = None
    folder: Path
    kwargs: dict[str, Any] = {}
    if path is not None and Path(path).expanduser().is_dir():
        folder = Path(path).expanduser()
        if not (folder / "config.json").is_file():
            raise ModelNotFound(
                f"{folder} has no config.json: give a Hugging Face model folder (config.json, "
                "tokenizer and weights) or a GGUF file"
            )
    else:
        gguf = resolve_model_path(path)
        cached = _cache_folder(gguf, cache_dir) if cache_dir is not None else None
        if cached is not None and (cached / "config.json").is_file():
            folder = cached
        else:
            folder, kwargs = gguf.parent, {"gguf_file": gguf.name}
    try:
        tokenizer = AutoTokenizer.from_pretrained(str(folder), local_files_only=True, **kwargs)
        model = AutoModelForCausalLM.from_pretrained(
            str(folder), local_files_only=True, dtype=torch_dtype, **kwargs
        )
    except (OSError, ValueError, RuntimeError, KeyError) as exc:
        raise ModelLoadError(
            f"transformers could not load {gguf or folder}: {exc}. A GGUF file must be of an "
            "architecture transformers can dequantize (llama, mistral, qwen2, gemma3, ...); "
            "or give a Hugging Face folder"
        ) from exc
    if tokenizer.pad_token_id is None:
        tokenizer.pad_token = tokenizer.eos_token
    if gguf is not None and cache_dir is not None and "gguf_file" in kwargs:
        cached = _cache_folder(gguf, cache_dir)
        try:
            cached.mkdir(parents=True, exist_ok=True)
            _save_dequantized(model, tokenizer, cached)
        except (OSError, ValueError):
            pass  # a cache is an optimisation; a read-only data dir must not stop training
    model.to(device)
    return HFModel(model=model, tokenizer=tokenizer, gguf=gguf, device=device)


def _cache_folder(gguf: Path, cache_dir: str | os.PathLike[str]) -> Path:
    stat = gguf.stat()
    key = hashlib.sha1(f"{gguf.resolve()}:{stat.st_size}:{stat.st_mtime_ns}".encode()).hexdigest()[:12]
    return Path(cache_dir).expanduser() / f"{gguf.stem}-{key}"


def _save_dequantized(model: Any, tokenizer: Any, folder: Path) -> None:
    """Save a model transformers dequantized from GGUF as a plain Hugging Face folder.

    transformers refuses `save_pretrained` on a model loaded with `gguf_file`, though its
    weights are ordinary float tensors by then: drop the GGUF marker for the save, then restore it.
    """
    quantizer = getattr(model, "hf_quantizer", None)
    qconfig = getattr(model.config, "quantization_config", None)
    try:
        model.hf_quantizer = None
        if qconfig is not None:
            del model.config.quantization_config
        model.save_pretrained(str(folder))
        tokenizer.save_pretrained(str(folder))
    finally:
        model.hf_quantizer = quantizer
        if qconfig is not None:
            model.config.quantization_config = qconfig
