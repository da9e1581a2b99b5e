"""What a GGUF file says about itself: architecture, quantisation, context length, chat template.

Reads the header only (magic, version, counts, typed key/values), so listing models needs
neither llama_cpp nor the `gguf` package and takes milliseconds even for a many-GB file.
"""

from __future__ import annotations

import struct
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


@dataclass
class GGUFInfo:
    """The header of one GGUF file; `metadata` holds every key (long arrays as their length)."""

    path: Path
    version: int
    tensor_count: int
    metadata: dict[str, Any] = field(default_factory=dict)

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


def read_gguf(path: str | Path) -> GGUFInfo:
    """The header of GGUF file `path`; an InputError says why a file is not one."""
    p = Path(path)
    try:
        with p.open("rb") as f:
            return _read(f, p)
    except OSError as exc:
        raise InputError(f"{p}: cannot read it ({exc.strerror or exc}); pass a readable .gguf file") from exc
    except (struct.error, UnicodeDecodeError, MemoryError, OverflowError) as exc:
        raise InputError(f"{p}: the GGUF header is truncated or corrupt ({exc}); download the file again") from exc


def _read(f: BinaryIO, path: Path) -> GGUFInfo:
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
    reader = _Reader(f, order)
    tensor_count, kv_count = reader.scalar("Q"), reader.scalar("Q")
    metadata: dict[str, Any] = {}
    for _ in range(kv_count):
        key = reader.string()
        metadata[key] = reader.value(reader.scalar("I"))
    return GGUFInfo(path, version, tensor_count, metadata)


class _Reader:
    def __init__(self, f: BinaryIO, order: str) -> None:
        self.f = f
        self.order = order

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
            if n <= KEEP_ARRAY:
                return [self.value(item) for _ in range(n)]
            if item in _SCALARS:  # fixed size: seek past the whole array at once
                self.f.seek(n * struct.calcsize(_SCALARS[item]), 1)
            else:
                for _ in range(n):
                    self.value(item)
            return {"array_length": n}
        raise struct.error(f"unknown value type {vtype}")
