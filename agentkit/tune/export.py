"""Exporting a PEFT LoRA adapter to the GGUF LoRA file that llama.cpp applies on top of its base
model (`llm.lora` in a config); needs only numpy and gguf, not torch.

The format is the one llama.cpp's `convert_lora_to_gguf.py` writes and `llama_adapter_lora_init`
reads: a GGUF file whose `general.architecture` is the base model's, with `general.type =
"adapter"`, `adapter.type = "lora"` and `adapter.lora.alpha`, and for each adapted weight of the
base (`blk.{i}.attn_q.weight`, ...) two tensors named after it, `.lora_a` and `.lora_b`. llama.cpp
adds `scale * alpha / r * B @ (A @ x)` to `W @ x`, with `r` read off B and `scale` the per-adapter
factor the caller picks (1.0 by default). That is PEFT's forward pass, so A and B are written as
PEFT saved them: numpy's (rows, cols) is ggml's `ne` reversed, so `lora_A.weight` [r, in] and
`lora_B.weight` [out, r] land as ne [in, r] and [r, out], the shapes llama.cpp checks against the
base weight's ne [in, out].

The one change is a permutation. llama.cpp's llama graph rotates adjacent pairs of each head's
dimensions (RoPE) where Hugging Face's llama rotates its two halves, so llama.cpp's converter
permutes the rows of the q and k weights within each head, and transformers undoes that when it
loads a llama GGUF. A LoRA trained on the model transformers loaded therefore speaks of q and k rows
in Hugging Face's order: B, whose rows are W's rows, must be permuted like W was. A acts on the
input, which both layouts share, and stays as it is.
"""

from __future__ import annotations

import json
import math
import os
import re
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentkit.errors import ConfigError, InputError, ModelLoadError, ModelNotFound
from agentkit.llm.gguf import read_gguf
from agentkit.llm.hf import HF_TO_GGUF
from agentkit.llm.models import resolve_model_path

if TYPE_CHECKING:
    import numpy as np

#: GGUF architectures whose weights carry the llama names in `HF_TO_GGUF`, and whether transformers
#: un-permutes their q/k rows on loading (True only for llama, which also covers the Mistral,
#: SmolLM and TinyLlama GGUFs that llama.cpp files under "llama").
ARCHITECTURES: dict[str, bool] = {
    "llama": True,
    "qwen2": False,
    "qwen3": False,
    "gemma2": False,
    "gemma3": False,
}

#: adapter_config.json keys that mean "not a plain LoRA": llama.cpp could not reproduce the model.
_UNSUPPORTED_OPTIONS = {
    "use_dora": "DoRA (use_dora) rescales each weight by a learned magnitude",
    "lora_bias": "lora_bias adds a bias to lora_B",
    "use_qalora": "QA-LoRA (use_qalora) pools the input in groups",
    "use_bdlora": "BD-LoRA (use_bdlora) uses block-diagonal factors",
    "kasa_config": "KaSA (kasa_config) changes the base weights and adds a diagonal between A and B",
    "monteclora_config": "MonteCLoRA (monteclora_config) samples the factors",
    "arrow_config": "Arrow (arrow_config) routes between several adapters",
    "layer_replication": "layer_replication adds layers the base GGUF does not have",
}

_DTYPES = ("f32", "f16")
_LORA_KEY = re.compile(r"^(?:base_model\.model\.)?(?P<module>.+)\.lora_(?P<ab>[AB])\.weight$")
_LAYER = re.compile(r"(?:^|\.)layers\.(?P<layer>\d+)\.")


@dataclass(frozen=True)
class _Base:
    path: Path
    arch: str
    n_layer: int
    n_head: list[int]
    n_head_kv: list[int]
    #: tensor name -> ggml ne (input size first)
    shapes: dict[str, tuple[int, ...]]


def export_gguf_lora(
    adapter: str | os.PathLike[str],
    out: str | os.PathLike[str],
    *,
    base: str | os.PathLike[str] | None = None,
    dtype: str = "f32",
) -> Path:
    """Write the PEFT LoRA in folder `adapter` as a llama.cpp GGUF LoRA at `out`; return `out`.

    `base` is the GGUF model the adapter was trained on (None: the bundled SmolLM2): its metadata
    gives the architecture, layer count and head counts, and its tensors the shapes to check
    against. `dtype` is "f32" or "f16" for the written factors. The file appears only once
    complete, so a failed export leaves no half-written adapter behind.
    """
    import numpy as np

    if dtype not in _DTYPES:
        raise ConfigError(f"dtype {dtype!r} is not supported for a GGUF LoRA; use 'f32' or 'f16'")
    folder = _adapter_folder(adapter)
    config = _read_config(folder)
    info = _read_base(base)
    factors = _read_lora_factors(folder)

    rank_pattern: dict[str, int] = config.get("rank_pattern") or {}
    alpha_pattern: dict[str, float] = config.get("alpha_pattern") or {}
    rslora = bool(config.get("use_rslora"))

    def peft_scaling(module: str, rank: int) -> float:
        alpha = float(alpha_pattern.get(_pattern_key(alpha_pattern, module), config["lora_alpha"]))
        return alpha / math.sqrt(rank) if rslora else alpha / rank

    # llama.cpp has one alpha per file and divides it by each tensor's rank. Write the alpha that
    # gives the default modules PEFT's scaling (for rsLoRA alpha/sqrt(r) = (alpha*sqrt(r))/r) and
    # fold any other module's ratio (rank_pattern, alpha_pattern) into its B.
    default_rank = int(config["r"])
    alpha_out = float(config["lora_alpha"]) * (math.sqrt(default_rank) if rslora else 1.0)

    tensors: list[tuple[str, np.ndarray]] = []
    for (layer, hf_name), (module, a, b) in sorted(
        factors.items(), key=lambda item: (item[0][0], list(HF_TO_GGUF).index(item[0][1]))
    ):
        target = f"blk.{layer}.{HF_TO_GGUF[hf_name]}.weight"
        _check_shapes(folder, info, module, target, layer, a, b)
        rank = a.shape[0]
        expected = int(rank_pattern.get(_pattern_key(rank_pattern, module), default_rank))
        if rank != expected:
            raise ConfigError(
                f"{folder}: {module} has rank {rank} in adapter_model.safetensors but "
                f"adapter_config.json says {expected}; the two files come from different "
                "adapters: save the PEFT model again with save_pretrained()"
            )
        scaling = peft_scaling(module, rank)
        factor = scaling * rank / alpha_out if alpha_out else scaling
        if not math.isclose(factor, 1.0, rel_tol=1e-9):
            b = b * np.float32(factor)
        if ARCHITECTURES[info.arch] and hf_name in ("q_proj", "k_proj"):
            heads = info.n_head[layer] if hf_name == "q_proj" else info.n_head_kv[layer]
            b = _llama_permute(b, heads)
        tensors.append((f"{target}.lora_a", a))
        tensors.append((f"{target}.lora_b", b))

    return _write(
        Path(out).expanduser(),
        info.arch,
        name=folder.resolve().name,
        alpha=alpha_out,
        tensors=tensors,
        dtype=dtype,
        invocation_tokens=config.get("alora_invocation_tokens"),
    )


def read_gguf_lora(path: str | os.PathLike[str]) -> dict[str, Any]:
    """What a GGUF LoRA holds: `metadata` (key -> value), `tensors` (name -> shape as numpy
    (rows, cols), so `lora_a` is [r, in] and `lora_b` [out, r]) and `dtypes` (the tensor types)."""
    file = Path(path).expanduser()
    if not file.is_file():
        raise ModelNotFound(
            f"GGUF LoRA adapter {file} does not exist or is not a file; pass the path of the .gguf file"
        )
    try:
        header = read_gguf(file, tensors=True, keep_array=None)  # a LoRA has no vocabulary
    except InputError as exc:
        raise ModelLoadError(f"{file} is not a readable GGUF file ({exc}); pass a GGUF LoRA adapter") from exc
    metadata = header.metadata
    if metadata.get("general.type") != "adapter":
        raise ModelLoadError(
            f"{file} is a GGUF {metadata.get('general.type', 'model')} file, not a LoRA adapter; "
            "pass the file export_gguf_lora() (agentkit tune) wrote"
        )
    return {
        "metadata": metadata,
        "tensors": {t.name: tuple(reversed(t.shape)) for t in header.tensors.values()},
        "dtypes": sorted({t.type_name for t in header.tensors.values()}),
    }


def _llama_permute(rows: np.ndarray, n_head: int) -> np.ndarray:
    """llama.cpp's `LlamaModel.permute` on the first axis (the inverse of transformers' reverse
    permutation): within each head, interleave the two halves of its rows."""
    return (
        rows.reshape(n_head, 2, rows.shape[0] // n_head // 2, *rows.shape[1:])
        .swapaxes(1, 2)
        .reshape(rows.shape)
    )


def _pattern_key(patterns: dict[str, Any], module: str) -> str:
    """PEFT's `get_pattern_key`: the first rank/alpha pattern that matches the end of `module`."""
    for key in patterns:
        if re.match(rf"(.*\.)?({key})$", module):
            return key
    return module


# --- reading the adapter ----------------------------------------------------------------


def _adapter_folder(adapter: str | os.PathLike[str]) -> Path:
    folder = Path(adapter).expanduser()
    saved_by = "the folder PEFT's save_pretrained() writes (adapter_config.json + adapter_model.safetensors)"
    if not folder.exists():
        raise ModelNotFound(f"LoRA adapter folder {adapter} does not exist; pass {saved_by}")
    if not folder.is_dir():
        raise ModelNotFound(f"LoRA adapter {adapter} is a file, not a folder; pass {saved_by}")
    for name in ("adapter_config.json", "adapter_model.safetensors"):
        if not (folder / name).is_file():
            hint = (
                "; it holds the older adapter_model.bin: save it again with "
                "save_pretrained(..., safe_serialization=True)"
                if name.endswith(".safetensors") and (folder / "adapter_model.bin").is_file()
                else f"; pass {saved_by}"
            )
            raise ModelNotFound(f"LoRA adapter folder {folder} has no {name}{hint}")
    return folder


def _read_config(folder: Path) -> dict[str, Any]:
    path = folder / "adapter_config.json"
    try:
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise ConfigError(
            f"{path} is not readable JSON ({exc}); save the adapter again with save_pretrained()"
        ) from exc
    if not isinstance(config, dict) or config.get("peft_type") != "LORA":
        kind = config.get("peft_type") if isinstance(config, dict) else None
        raise ConfigError(
            f"{path} describes a {kind or 'non-PEFT'} adapter; only LoRA (peft_type LORA) "
            "becomes a GGUF LoRA: train with peft.LoraConfig"
        )
    for key in ("r", "lora_alpha"):
        if not isinstance(config.get(key), int | float):
            raise ConfigError(
                f"{path} lacks a numeric {key!r}; save the adapter again with save_pretrained()"
            )
    for key, what in _UNSUPPORTED_OPTIONS.items():
        if config.get(key):
            raise ConfigError(
                f"{folder}: {what}, which llama.cpp's LoRA cannot apply; retrain without {key} "
                "(a plain LoRA)"
            )
    if config.get("bias", "none") != "none":
        raise ConfigError(
            f"{folder} trains biases (bias={config['bias']!r}), which a GGUF LoRA cannot carry; "
            "retrain with bias='none'"
        )
    return config


def _read_lora_factors(folder: Path) -> dict[tuple[int, str], tuple[str, np.ndarray, np.ndarray]]:
    """(layer, HF module name) -> (module path, A [r, in], B [out, r]), all float32."""
    tensors = _read_safetensors(folder / "adapter_model.safetensors")
    pairs: dict[tuple[int, str], dict[str, Any]] = {}
    unsupported: set[str] = set()
    other: list[str] = []
    for key, value in tensors.items():
        match = _LORA_KEY.match(key)
        if match is None:
            if "lora_embedding_" in key:
                unsupported.add(key.split(".lora_embedding_")[0].rsplit(".", 1)[-1])
            elif "lora_magnitude_vector" in key:
                raise ConfigError(
                    f"{folder} is a DoRA adapter (it has {key}); llama.cpp applies only plain "
                    "LoRA: retrain with use_dora=False"
                )
            else:
                other.append(key)
            continue
        module = match["module"]
        hf_name = module.rsplit(".", 1)[-1]
        layer = _LAYER.search(module)
        if hf_name not in HF_TO_GGUF or layer is None:
            unsupported.add(hf_name)
            continue
        pair = pairs.setdefault((int(layer["layer"]), hf_name), {"module": module})
        pair[match["ab"]] = value
    if unsupported:
        raise ConfigError(
            f"{folder} adapts {', '.join(sorted(unsupported))}, which llama.cpp cannot load as "
            f"LoRA; target_modules must be among {', '.join(HF_TO_GGUF)}: retrain with "
            "target_modules limited to those"
        )
    if other:
        shown = ", ".join(sorted(other)[:3]) + (", ..." if len(other) > 3 else "")
        raise ConfigError(
            f"{folder} holds weights other than LoRA factors ({shown}), e.g. from modules_to_save "
            "or trainable_token_indices; a GGUF LoRA cannot carry them: retrain without those options"
        )
    if not pairs:
        raise ConfigError(
            f"{folder}/adapter_model.safetensors holds no LoRA factors; train the adapter first"
        )
    factors = {}
    for (layer, hf_name), pair in pairs.items():
        if "A" not in pair or "B" not in pair:
            raise ConfigError(
                f"{folder}: {pair['module']} has lora_{'B' if 'A' in pair else 'A'} but not its "
                "partner; the adapter file is damaged: save it again with save_pretrained()"
            )
        factors[(layer, hf_name)] = (pair["module"], pair["A"], pair["B"])
    return factors


def _read_safetensors(path: Path) -> dict[str, np.ndarray]:
    """All tensors of a safetensors file as float32 numpy arrays.

    Read by hand because safetensors' numpy loader cannot decode bfloat16, the dtype PEFT saves
    an adapter in when it was trained on a GPU in bf16 (the format is a JSON header and raw data).
    """
    import numpy as np

    kinds = {"F64": "<f8", "F32": "<f4", "F16": "<f2", "BF16": "<u2"}
    try:
        with path.open("rb") as f:
            (size,) = struct.unpack("<Q", f.read(8))
            header = json.loads(f.read(size))
            data = f.read()
        tensors = {}
        for name, entry in header.items():
            if name == "__metadata__":
                continue
            if entry["dtype"] not in kinds:
                raise ConfigError(
                    f"{path}: tensor {name} is {entry['dtype']}; a LoRA must be saved in "
                    "float32, float16 or bfloat16 (quantized adapters cannot be exported)"
                )
            start, end = entry["data_offsets"]
            raw = np.frombuffer(data[start:end], dtype=kinds[entry["dtype"]])
            if entry["dtype"] == "BF16":
                raw = (raw.astype(np.uint32) << 16).view(np.float32)
            tensors[name] = raw.astype(np.float32).reshape(entry["shape"])
    except (OSError, struct.error, ValueError, KeyError, TypeError) as exc:
        raise ModelLoadError(
            f"{path} is not a readable safetensors file ({exc}); save the adapter again with "
            "save_pretrained()"
        ) from exc
    return tensors


# --- reading the base model (agentkit.llm.gguf) and writing the adapter (the gguf package) --------------------------------------


#: Per-layer metadata arrays (head counts) are kept up to this length; a vocabulary is not.
_KEEP_LAYER_ARRAYS = 4096


def _read_base(base: str | os.PathLike[str] | None) -> _Base:
    path = resolve_model_path(base)
    try:
        header = read_gguf(path, tensors=True, keep_array=_KEEP_LAYER_ARRAYS)
    except InputError as exc:
        raise ModelLoadError(
            f"base model {path} is not a readable GGUF file ({exc}); pass base= the GGUF model "
            "the adapter was trained on"
        ) from exc
    metadata = header.metadata
    arch = metadata.get("general.architecture")
    if arch not in ARCHITECTURES:
        raise ConfigError(
            f"base model {path} has architecture {arch!r}, for which agentkit knows no mapping from "
            f"Hugging Face module names to GGUF tensors; supported: {', '.join(ARCHITECTURES)}"
        )
    n_layer = metadata.get(f"{arch}.block_count")
    n_head = metadata.get(f"{arch}.attention.head_count")
    n_head_kv = metadata.get(f"{arch}.attention.head_count_kv", n_head)
    if not isinstance(n_layer, int) or n_head is None:
        raise ModelLoadError(
            f"base model {path} lacks {arch}.block_count or {arch}.attention.head_count; "
            "pass a complete GGUF model converted by llama.cpp"
        )

    def per_layer(value: Any) -> list[int]:
        return [int(v) for v in value] if isinstance(value, list) else [int(value)] * n_layer

    return _Base(
        path=path,
        arch=arch,
        n_layer=n_layer,
        n_head=per_layer(n_head),
        n_head_kv=per_layer(n_head_kv),
        shapes={name: tensor.shape for name, tensor in header.tensors.items()},
    )


def _check_shapes(folder: Path, info: _Base, module: str, target: str, layer: int, a: Any, b: Any) -> None:
    if layer >= info.n_layer:
        raise ConfigError(
            f"{folder} adapts layer {layer} ({module}) but base model {info.path} has "
            f"{info.n_layer} layers: the adapter was trained on another model; pass base= the GGUF "
            "it was trained on"
        )
    shape = info.shapes.get(target)
    if shape is None:
        raise ConfigError(
            f"{folder} adapts {module} but base model {info.path} has no {target}; pass base= "
            "the GGUF the adapter was trained on"
        )
    n_in, n_out = shape[0], shape[1] if len(shape) > 1 else 1
    if a.ndim != 2 or b.ndim != 2 or a.shape[0] != b.shape[1] or (a.shape[1], b.shape[0]) != (n_in, n_out):
        raise ConfigError(
            f"{folder}: {module} has lora_A {tuple(a.shape)} and lora_B {tuple(b.shape)}, which "
            f"do not fit {target} ({n_in} in, {n_out} out) of base model {info.path}: the adapter "
            "was trained on another model; pass base= the GGUF it was trained on"
        )


def _write(
    out: Path,
    arch: str,
    *,
    name: str,
    alpha: float,
    tensors: list[tuple[str, np.ndarray]],
    dtype: str,
    invocation_tokens: list[int] | None,
) -> Path:
    import gguf
    import numpy as np

    np_dtype = np.float32 if dtype == "f32" else np.float16
    arrays = []
    for tensor_name, array in tensors:
        converted = np.ascontiguousarray(array, dtype=np_dtype)
        if not np.isfinite(converted).all():
            raise ConfigError(
                f"{tensor_name} has values that do not fit {dtype} (or the adapter holds NaN/inf); "
                "export with dtype='f32', or retrain if the adapter itself diverged"
            )
        arrays.append((tensor_name, converted))
    out.parent.mkdir(parents=True, exist_ok=True)
    partial = out.with_name(out.name + ".partial")
    writer = gguf.GGUFWriter(partial, arch)
    try:
        writer.add_type(gguf.GGUFType.ADAPTER)
        writer.add_string(gguf.Keys.Adapter.TYPE, "lora")
        writer.add_name(name)
        writer.add_float32(gguf.Keys.Adapter.LORA_ALPHA, float(alpha))
        if invocation_tokens:
            # Activated LoRA: llama.cpp switches the adapter on after these tokens, as PEFT does.
            writer.add_key_value(
                gguf.Keys.Adapter.ALORA_INVOCATION_TOKENS,
                [int(t) for t in invocation_tokens],
                gguf.GGUFValueType.ARRAY,
                sub_type=gguf.GGUFValueType.UINT32,
            )
        for tensor_name, array in arrays:
            writer.add_tensor(tensor_name, array)
        writer.write_header_to_file()
        writer.write_kv_data_to_file()
        writer.write_tensors_to_file()
        writer.close()
        os.replace(partial, out)
    except BaseException:
        writer.close()
        partial.unlink(missing_ok=True)
        raise
    return out
