"""The protocol every model backend implements, and the small types it returns.

The agent depends on this protocol only; llama.cpp, transformers and remote servers plug in behind it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from agentkit.types import Message, Usage


@dataclass
class TokenLogprob:
    token: str
    logprob: float
    #: The most likely alternatives at this position, token -> logprob.
    top: dict[str, float] = field(default_factory=dict)


@dataclass
class Completion:
    text: str
    usage: Usage = field(default_factory=Usage)
    finish_reason: str = "stop"
    logprobs: list[TokenLogprob] | None = None


@dataclass
class Delta:
    """One piece of a streamed completion; the last one carries `finish_reason` and `usage`."""

    text: str
    finish_reason: str | None = None
    usage: Usage | None = None


@dataclass
class GenerationOptions:
    """Sampling and constraint options shared by `chat` and `stream`.

    `grammar` is GBNF text; `json_schema` a JSON schema the output must match. A backend that
    cannot honour a constraint raises `NotImplementedError` rather than silently ignoring it.
    """

    max_tokens: int = 256
    temperature: float = 0.0
    stop: list[str] = field(default_factory=list)
    grammar: str | None = None
    json_schema: dict[str, Any] | None = None
    #: Return this many top alternatives per token (0 = the chosen token's logprob only).
    logprobs: int | None = None
    seed: int | None = None
    #: Penalise repeating recent tokens (1.0 = off; None = the backend's default).
    repeat_penalty: float | None = None
    #: Nucleus sampling: draw from the smallest set of tokens whose probabilities reach `top_p`
    #: (1.0 = off); `top_k`: from the `top_k` likeliest tokens (0 = off); `min_p`: drop tokens
    #: less likely than `min_p` times the likeliest (0.0 = off). None = the backend's default
    #: (llama.cpp: 0.95, 40, 0.05; transformers: off). They shape sampling only: at temperature 0
    #: the likeliest token is taken whatever they say.
    top_p: float | None = None
    top_k: int | None = None
    min_p: float | None = None
    #: OpenAI's penalties, subtracted from a token's logit: `presence_penalty` once if it already
    #: occurred, `frequency_penalty` per occurrence (0.0 = off). Counted over the generated text
    #: (transformers, OpenAI), or the last 64 tokens, prompt included (llama.cpp).
    presence_penalty: float | None = None
    frequency_penalty: float | None = None
    #: Named LoRA adapters for this call, name -> scale, by the names given to the backend's
    #: `add_adapter` (see `AdapterLLM`), on top of the always-on ones (`llm.lora`); None or {}
    #: = the always-on ones alone. A backend without adapters raises `NotImplementedError` for a
    #: non-empty mapping.
    adapters: dict[str, float] | None = None


@runtime_checkable
class LLM(Protocol):
    """A chat model. Heavy loading happens on first use, never in `__init__`."""

    name: str

    @property
    def context_length(self) -> int: ...

    def chat(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Completion: ...

    def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Iterator[Delta]:
        """Yield text deltas. Closing the iterator stops generation."""
        ...

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in this model's own tokenizer."""
        ...

    def count_message_tokens(self, messages: Sequence[Message]) -> int:
        """Tokens the rendered chat prompt takes, template included."""
        ...


@runtime_checkable
class AdapterLLM(Protocol):
    """A backend that keeps named LoRA adapters loaded beside one base model and switches between
    them per call (`GenerationOptions.adapters`) without reloading the base model."""

    def add_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Register an adapter file (GGUF for llama.cpp, a PEFT folder for transformers); it is
        loaded with the model, or at once when the model is already loaded."""
        ...

    @property
    def adapter_names(self) -> list[str]: ...
