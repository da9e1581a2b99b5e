"""Test doubles and contract suites shipped with agentkit, for its own tests and for plugin authors.

`FakeLLM` answers without a model: scripted replies, a function of the messages, or by default
an answer that quotes and cites the first numbered evidence passage. `WritableSourceContract` and
`KnowledgeSourceContract` (from agentkit.contracts, loaded on first use since they need pytest)
are the test suites every knowledge source passes.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from agentkit.errors import InputError
from agentkit.llm.base import Completion, Delta, GenerationOptions
from agentkit.types import Message, Usage

Reply = str | dict[str, Any]
Responder = Callable[[Sequence[Message], GenerationOptions], Reply]

_EVIDENCE = re.compile(r"^\[(\d+)\][^\n]*\n?(.*?)(?=^\[\d+\]|\Z)", re.S | re.M)
_TOKEN = re.compile(r"\S+\s*|\s+")


def cite_first_evidence(messages: Sequence[Message], options: GenerationOptions) -> Reply:
    """Default reply: the first sentence of evidence [1], cited; or a refusal without evidence."""
    if options.json_schema is not None:
        return schema_instance(options.json_schema)
    prompt = messages[-1].content if messages else ""
    found = _EVIDENCE.search(prompt)
    if not found:
        return "Reasoning: no sources were given.\nAnswer: I do not know."
    body = found.group(2).strip()
    # The passage's first sentence, never running on into the question that follows it.
    first = re.split(r"(?<=[.!?])\s|\n\s*\n|\n</sources>|\nQuestion:", body, maxsplit=1)[0].strip()
    if "<sources>" in prompt:  # the quote reader's format (reasoning/prompts/grounded.yaml)
        return f'Quote: [{found.group(1)}] "{first}"\nAnswer: {first}'
    return f"Reasoning: source [{found.group(1)}] answers this.\nAnswer: {first} [{found.group(1)}]"


def schema_instance(schema: dict[str, Any]) -> Any:
    """The simplest value that matches a JSON schema: first enum value, required fields filled."""
    if "enum" in schema:
        return schema["enum"][0]
    if "const" in schema:
        return schema["const"]
    for key in ("anyOf", "oneOf"):
        if key in schema:
            return schema_instance(schema[key][0])
    kind = schema.get("type", "object")
    if isinstance(kind, list):
        kind = kind[0]
    if kind == "object":
        props = schema.get("properties", {})
        return {name: schema_instance(props.get(name, {})) for name in schema.get("required", props)}
    return {"string": "", "integer": 0, "number": 0.0, "boolean": False, "array": [], "null": None}[kind]


class _Cut(str):
    """A reply cut at max_tokens: its finish_reason is "length", as a real backend reports."""


def _finish(text: str) -> str:
    return "length" if isinstance(text, _Cut) else "stop"


class FakeLLMConfig(BaseModel):
    """`llm: {backend: fake}`: replies from a list, or cites the first evidence passage."""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["fake"] = "fake"
    responses: list[str] | None = None
    context_length: int = 4096


class FakeLLM:
    """A deterministic stand-in for a model.

    `responses` may be one reply, a list consumed in order (the last one repeats), or a function
    of (messages, options). A dict reply is JSON-encoded. Every call is recorded in `calls`.
    """

    name = "fake"
    config_model: ClassVar[type[BaseModel]] = FakeLLMConfig

    def __init__(
        self,
        responses: Reply | Sequence[Reply] | Responder | None = None,
        *,
        context_length: int = 4096,
    ) -> None:
        self._responder: Responder | None = None
        self._queue: list[Reply] = []
        if responses is None:
            self._responder = cite_first_evidence
        elif callable(responses):
            self._responder = responses
        elif isinstance(responses, (str, dict)):
            self._queue = [responses]
        else:
            self._queue = list(responses)
        self._context_length = context_length
        self.calls: list[tuple[list[Message], GenerationOptions]] = []
        #: Adapters registered with add_adapter (name -> path); calls may select them by name.
        self.adapters: dict[str, str] = {}

    @classmethod
    def from_config(cls, config: FakeLLMConfig) -> FakeLLM:
        return cls(config.responses, context_length=config.context_length)

    @property
    def context_length(self) -> int:
        return self._context_length

    def add_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Register an adapter name, as a real backend would (nothing is loaded)."""
        self.adapters[name] = str(path)

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapters)

    def _reply(self, messages: Sequence[Message], options: GenerationOptions) -> str:
        unknown = [n for n in options.adapters or {} if n not in self.adapters]
        if unknown:
            raise InputError(f"no adapter named {', '.join(map(repr, unknown))} (known: {', '.join(self.adapters) or 'none'})")
        self.calls.append((list(messages), options))
        if self._responder is not None:
            reply = self._responder(messages, options)
        else:
            reply = self._queue.pop(0) if len(self._queue) > 1 else self._queue[0]
        text = reply if isinstance(reply, str) else json.dumps(reply)
        if options.max_tokens:
            tokens = _TOKEN.findall(text)
            if len(tokens) > options.max_tokens:
                return _Cut("".join(tokens[: options.max_tokens]))
        return text

    def chat(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Completion:
        options = options or GenerationOptions()
        text = self._reply(messages, options)
        usage = Usage(self.count_message_tokens(messages), self.count_tokens(text))
        return Completion(text=text, usage=usage, finish_reason=_finish(text))

    def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Iterator[Delta]:
        options = options or GenerationOptions()
        text = self._reply(messages, options)
        pieces = _TOKEN.findall(text)
        for piece in pieces:
            yield Delta(piece)
        yield Delta("", finish_reason=_finish(text), usage=Usage(self.count_message_tokens(messages), len(pieces)))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def count_message_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.count_tokens(m.content) + 4 for m in messages)

    # Helpers for assertions --------------------------------------------------------------

    @property
    def last_prompt(self) -> str:
        """The content of the last message of the most recent call."""
        return self.calls[-1][0][-1].content if self.calls else ""


_CONTRACTS = ("KnowledgeSourceContract", "WritableSourceContract", "CORPUS")


def __getattr__(name: str) -> Any:
    if name in _CONTRACTS:
        from agentkit import contracts

        return getattr(contracts, name)
    raise AttributeError(f"module 'agentkit.testing' has no attribute {name!r}")


def noisy_lora(
    model: Any,
    target_modules: Sequence[str] = ("q_proj", "v_proj"),
    *,
    rank: int = 8,
    alpha: float = 16,
    std: float = 0.05,
    seed: int = 0,
) -> Any:
    """`model` (a transformers model) wrapped in a PEFT LoRA whose B matrices are seeded noise.

    A fresh LoRA has B = 0 and changes nothing; this one changes the outputs, so tests of adapter
    plumbing (loading, switching, exporting) can see it work. `seed` fixes A (PEFT's own random
    init) as well as B: the same adapter, and the same words from it, on every run. Needs the
    tune extra.
    """
    import torch
    from peft import LoraConfig, get_peft_model

    config = LoraConfig(r=rank, lora_alpha=alpha, lora_dropout=0.0, target_modules=list(target_modules))
    with torch.random.fork_rng(devices=[]):  # seeds A's init without touching the caller's RNG
        torch.manual_seed(seed)
        peft_model = get_peft_model(model, config)
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, param in peft_model.named_parameters():
            if "lora_B" in name:
                param.copy_(std * torch.randn(param.shape, generator=generator))
    return peft_model
