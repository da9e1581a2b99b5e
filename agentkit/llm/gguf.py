"""What a GGUF file says about itself: architecture, quantisation, context length, chat template,
and (on request) its tensors' names, shapes and types. agentkit's one GGUF reader.

Reads the header only (magic, version, counts, typed key/values, tensor infos), so listing models,
planning a context or checking a LoRA export needs neither llama_cpp nor the `gguf` package and
takes milliseconds even for a many-GB file. (Writing a GGUF LoRA uses the `gguf` package.)
"""

from __future__ import annotations

import functools
import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, BinaryIO

from agentkit.errors import InputError

MAGIC = b"GGUF"
#: Arrays longer than this (the tokenizer's vocabulary) are skipped, not kept: only their length is.
KEEP_ARRAY = 64

#: llama.cpp's `general.file_type` (enum llama_ftype): the quantisation most tensors use.
FILE_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 7: "Q8_0", 8: "Q5_0", 9: "Q5_1", 10: "Q2_K",
    11: "Q3_K_S", 12: "Q3_K_M", 13: "Q3_K_L", 14: "Q4_K_S", 15: "Q4_K_M", 16: "Q5_K_S",
    17: "Q5_K_M", 18: "Q6_K", 19: "IQ2_XXS", 20: "IQ2_XS", 21: "Q2_K_S", 22: "IQ3_XS",
    23: "IQ3_XXS", 24: "IQ1_S", 25: "IQ4_NL", 26: "IQ3_S", 27: "IQ3_M", 28: "IQ2_S", 29: "IQ2_M",
    30: "IQ4_XS", 31: "IQ1_M", 32: "BF16", 36: "TQ1_0", 37: "TQ2_0", 38: "MXFP4_MOE",
}

#: ggml's tensor types (enum ggml_type), as the `gguf` package names them.
TENSOR_TYPES = {
    0: "F32", 1: "F16", 2: "Q4_0", 3: "Q4_1", 6: "Q5_0", 7: "Q5_1", 8: "Q8_0", 9: "Q8_1",
    10: "Q2_K", 11: "Q3_K", 12: "Q4_K", 13: "Q5_K", 14: "Q6_K", 15: "Q8_K", 16: "IQ2_XXS",
    17: "IQ2_XS", 18: "IQ3_XXS", 19: "IQ1_S", 20: "IQ4_NL", 21: "IQ3_S", 22: "IQ2_S",
    23: "IQ4_XS", 24: "I8", 25: "I16", 26: "I32", 27: "I64", 28: "F64", 29: "IQ1_M", 30: "BF16",
    34: "TQ1_0", 35: "TQ2_0", 39: "MXFP4",
}

# Value types of the GGUF spec: id -> struct format (8 = string, 9 = array, read apart).
_SCALARS = {0: "B", 1: "b", 2: "H", 3: "h", 4: "I", 5: "i", 6: "f", 7: "?", 10: "Q", 11: "q", 12: "d"}
_STRING, _ARRAY = 8, 9

#: Chat-template families, recognised by the special tokens their Jinja text writes.
TEMPLATE_FAMILIES = (
    ("<|im_start|>", "chatml"),
    ("<|start_header_id|>", "llama3"),
    ("<start_of_turn>", "gemma"),
    ("[INST]", "mistral"),
    ("<|user|>", "phi3/zephyr"),
    ("<|User|>", "deepseek"),
)


@dataclass(frozen=True)
class GGUFTensor:
    """One tensor's entry in the header; its data is not read."""

    name: str
    #: ggml's `ne`: the input size first, so numpy's (rows, cols) reversed.
    shape: tuple[int, ...]
    type: int
    #: Bytes from the start of the tensor data section.
    offset: int

    @property
    def type_name(self) -> str:
        return TENSOR_TYPES.get(self.type, f"type {self.type}")


@dataclass
class GGUFInfo:
    """The header of one GGUF file; `metadata` holds every key (long arrays as their length) and
    `tensors` each tensor's entry when read with `tensors=True` (else it is empty)."""

    path: Path
    version: int
    tensor_count: int
    metadata: dict[str, Any] = field(default_factory=dict)
    tensors: dict[str, GGUFTensor] = field(default_factory=dict)

    @property
    def architecture(self) -> str:
        return str(self.metadata.get("general.architecture", ""))

    @property
    def name(self) -> str:
        return str(self.metadata.get("general.name", ""))

    @property
    def kind(self) -> str:
        """"model", or "adapter" for a LoRA (which cannot be a default model)."""
        return str(self.metadata.get("general.type", "model"))

    @property
    def quantization(self) -> str:
        ftype = self.metadata.get("general.file_type")
        if ftype is None:
            return "?"
        return FILE_TYPES.get(int(ftype), f"type {ftype}")

    @property
    def context_length(self) -> int | None:
        value = self.metadata.get(f"{self.architecture}.context_length")
        return int(value) if value is not None else None

    @property
    def chat_template(self) -> str:
        return str(self.metadata.get("tokenizer.chat_template", ""))

    @property
    def template_family(self) -> str:
        """A short label for the chat template: chatml, llama3, ... "custom", or "none"."""
        text = self.chat_template
        if not text:
            return "none"
        return next((label for marker, label in TEMPLATE_FAMILIES if marker in text), "custom")

    def to_dict(self) -> dict[str, Any]:
        return {
            "architecture": self.architecture,
            "model_name": self.name,
            "type": self.kind,
            "quantization": self.quantization,
            "context_length": self.context_length,
            "chat_template": self.template_family,
            "chat_template_text": self.chat_template,
            "tensors": self.tensor_count,
            "gguf_version": self.version,
        }


def read_gguf(path: str | Path, *, tensors: bool = False, keep_array: int | None = KEEP_ARRAY) -> GGUFInfo:
    """The header of GGUF file `path`; an InputError says why a file is not one.

    `tensors=True` reads the tensor infos too. Arrays longer than `keep_array` are kept as
    `{"array_length": n}` (None keeps every array: fine for a LoRA, slow for a vocabulary).
    """
    return _read_file(Path(path), tensors=tensors, keep_array=keep_array)


@functools.lru_cache(maxsize=32)
def trained_context(path: str | Path) -> int | None:
    """`<architecture>.context_length` of a GGUF model: the context it was trained for; None when
    the file does not say or cannot be read (the load that follows reports the real problem).

    Stops reading once it has the value: it comes before the vocabulary, so this costs well under
    a millisecond where the whole header costs ~50 ms (SmolLM2's 49k tokens).
    """

    def found(metadata: dict[str, Any]) -> bool:
        arch = metadata.get("general.architecture")
        return arch is not None and f"{arch}.context_length" in metadata

    try:
        info = _read_file(Path(path), tensors=False, keep_array=KEEP_ARRAY, until=found)
    except InputError:
        return None
    value = info.context_length
    return value if value and value > 0 else None


def _read_file(
    p: Path, *, tensors: bool, keep_array: int | None, until: Callable[[dict[str, Any]], bool] | None = None
) -> GGUFInfo:
    try:
        with p.open("rb") as f:
            return _read(f, p, tensors=tensors, keep_array=keep_array, until=until)
    except OSError as exc:
        raise InputError(f"{p}: cannot read it ({exc.strerror or exc}); pass a readable .gguf file") from exc
    except (struct.error, UnicodeDecodeError, MemoryError, OverflowError) as exc:
        raise InputError(f"{p}: the GGUF header is truncated or corrupt ({exc}); download the file again") from exc


def _read(
    f: BinaryIO,
    path: Path,
    *,
    tensors: bool,
    keep_array: int | None,
    until: Callable[[dict[str, Any]], bool] | None,
) -> GGUFInfo:
    magic = f.read(4)
    if magic != MAGIC:
        raise InputError(f"{path} is not a GGUF file (it starts with {magic!r}, not b'GGUF'); pass a .gguf model file")
    (version,) = struct.unpack("<I", f.read(4))
    # A big-endian file shows its version byte-swapped (2 or 3 reads as 0x02000000 ...).
    order = "<" if version < 0x10000 else ">"
    if order == ">":
        (version,) = struct.unpack(">I", struct.pack("<I", version))
    if version == 1:
        raise InputError(f"{path} is GGUF version 1 (2023), which llama.cpp no longer loads; convert it again with llama.cpp")
    reader = _Reader(f, order, keep_array)
    tensor_count, kv_count = reader.scalar("Q"), reader.scalar("Q")
    info = GGUFInfo(path, version, tensor_count)
    for _ in range(kv_count):
        key = reader.string()
        info.metadata[key] = reader.value(reader.scalar("I"))
        if until is not None and until(info.metadata):
            return info
    if tensors:
        for _ in range(tensor_count):
            name = reader.string()
            n_dims = reader.scalar("I")
            shape = tuple(int(reader.scalar("Q")) for _ in range(n_dims))
            info.tensors[name] = GGUFTensor(name, shape, reader.scalar("I"), reader.scalar("Q"))
    return info


class _Reader:
    def __init__(self, f: BinaryIO, order: str, keep_array: int | None) -> None:
        self.f = f
        self.order = order
        self.keep_array = keep_array

    def scalar(self, fmt: str) -> Any:
        size = struct.calcsize(fmt)
        data = self.f.read(size)
        if len(data) != size:
            raise struct.error("the file ends inside its header")
        return struct.unpack(self.order + fmt, data)[0]

    def string(self) -> str:
        n = self.scalar("Q")
        data = self.f.read(n)
        if len(data) != n:
            raise struct.error("the file ends inside a string of its header")
        return data.decode("utf-8", errors="replace")

    def value(self, vtype: int) -> Any:
        if vtype in _SCALARS:
            return self.scalar(_SCALARS[vtype])
        if vtype == _STRING:
            return self.string()
        if vtype == _ARRAY:
            item, n = self.scalar("I"), self.scalar("Q")
            if self.keep_array is None or n <= self.keep_array:
                if item in _SCALARS and n:  # one unpack for the whole array
                    fmt = f"{n}{_SCALARS[item]}"
                    data = self.f.read(struct.calcsize(fmt))
                    if len(data) != struct.calcsize(fmt):
                        raise struct.error("the file ends inside an array of its header")
                    return list(struct.unpack(self.order + fmt, data))
                return [self.value(item) for _ in range(n)]
            if item in _SCALARS:  # fixed size: seek past the whole array at once
                self.f.seek(n * struct.calcsize(_SCALARS[item]), 1)
            else:
                for _ in range(n):
                    self.value(item)
            return {"array_length": n}
        raise struct.error(f"unknown value type {vtype}")
