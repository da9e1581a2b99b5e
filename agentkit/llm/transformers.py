"""The transformers backend: a GGUF file (the bundled SmolLM2 too) or a Hugging Face folder run by
PyTorch behind the `LLM` protocol, with PEFT LoRA adapters switched per call on one loaded model.

Needs the `gpu` extra (torch, transformers, peft); runs on CUDA when torch sees a GPU.
"""

from __future__ import annotations

import functools
import json
import os
import warnings
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentkit.errors import InputError, ModelLoadError, ModelNotFound
from agentkit.llm import gguf
from agentkit.llm.base import Completion, Delta, GenerationOptions, TokenLogprob
from agentkit.llm.hf import load_hf_model, require_torch
from agentkit.llm.local import ALWAYS_ON, Adapters, LocalLLM
from agentkit.llm.models import BUNDLED_FILE, FORBID_ENV, LoraConfig, resolve_model_path
from agentkit.llm.models import absolute as _absolute
from agentkit.types import Message, Usage

if TYPE_CHECKING:
    import torch

    from agentkit.llm.hf import HFModel


#: The context used when `n_ctx` is unset, if the model was trained for more: a KV cache grows
#: with it, and few prompts here need more.
DEFAULT_CONTEXT = 8192


class TransformersConfig(BaseModel):
    """The `llm:` section of a config file that selects the transformers backend."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["transformers"] = "transformers"
    model_path: str | None = Field(
        default=None,
        description="GGUF file or Hugging Face folder; None = the bundled SmolLM2-135M-Instruct",
    )
    device: str = Field(default="auto", description="auto (CUDA when torch sees a GPU), cpu, cuda, cuda:1, ...")
    dtype: Literal["auto", "float32", "float16", "bfloat16"] = Field(
        default="auto", description="auto = float32 on a CPU, bfloat16 (or float16) on a GPU"
    )
    n_ctx: int | None = Field(
        default=None,
        ge=1,
        description=f"context size, capped at the model's trained context; None = that, at most {DEFAULT_CONTEXT}",
    )
    lora: list[LoraConfig] = Field(default_factory=list, description="PEFT adapters active on every call")
    cache_dir: str | None = Field(
        default=None, description="where a GGUF's dequantized copy is kept so later loads are fast"
    )
    seed: int | None = Field(default=None, description="sampling seed used when a call gives none")

    @field_validator("model_path", "cache_dir", mode="before")
    @classmethod
    def _empty_is_none(cls, value: object) -> object:
        # `model_path: ${AGENTKIT_MODEL:-}` interpolates to "" when the variable is unset.
        return None if isinstance(value, str) and not value.strip() else value


@dataclass
class _Run:
    """What one generation produced: sampled tokens (end-of-generation excluded) and logprobs."""

    #: Alternatives to keep per token; None = compute no logprobs at all.
    top_n: int | None
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list[list[tuple[int, float]]] = field(default_factory=list)
    text: str = ""
    finish: str = "stop"


class TransformersLLM(LocalLLM):
    """A chat model run by transformers, with named PEFT adapters switched per call.

    Construction is cheap; loading, locking and adapter bookkeeping are `LocalLLM`'s: the model
    loads on first use, once, and serves one generation at a time.
    """

    config_model = TransformersConfig
    #: No grammar or JSON-schema decoding here: config validation refuses settings that need it
    #: (tools, max_steps > 1, the judge), and the agent answers without it where it is optional.
    constrained_output = False
    # PEFT turns adapter names into module attribute names.
    _forbidden_in_names = "."

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        device: str = "auto",
        dtype: str = "auto",
        n_ctx: int | None = None,
        lora: Sequence[tuple[str | os.PathLike[str], float]] | None = None,
        adapters: Mapping[str, str | os.PathLike[str]] | None = None,
        cache_dir: str | os.PathLike[str] | None = None,
        seed: int | None = None,
    ) -> None:
        if n_ctx is not None and n_ctx < 1:
            raise ValueError(f"n_ctx must be >= 1 (or None for the model's trained context), got {n_ctx}")
        super().__init__(model_path, name=_model_name(model_path), lora=lora or [], seed=seed)
        self.device = device
        self.dtype = dtype
        self.n_ctx = n_ctx
        self.cache_dir = cache_dir
        self._peft: Any = None
        self._lora_layers: list[Any] = []
        self._trained: int | None = None
        self._eos: set[int] = set()
        for name, path in (adapters or {}).items():
            self._register(name, path, f"adapters.{name}.path")

    @classmethod
    def from_config(cls, config: TransformersConfig) -> TransformersLLM:
        return cls(
            _absolute(config.model_path) if config.model_path is not None else None,
            device=config.device,
            dtype=config.dtype,
            n_ctx=config.n_ctx,
            lora=[(_absolute(item.path), item.scale) for item in config.lora],
            cache_dir=_absolute(config.cache_dir) if config.cache_dir is not None else None,
            seed=config.seed,
        )

    def __repr__(self) -> str:
        state = f"loaded on {self._hf.device}" if self._hf is not None else "not loaded"
        return f"TransformersLLM({self.name!r}, n_ctx={self.n_ctx}, {state})"

    # --- loading --------------------------------------------------------------------------

    @property
    def _hf(self) -> HFModel | None:
        """The loaded model and tokenizer, or None."""
        return self._loaded  # type: ignore[no-any-return]

    def _unload(self) -> None:
        on_cuda = self._loaded.device.startswith("cuda")
        self._loaded = self._peft = None
        self._lora_layers, self._active = [], ()
        if on_cuda:
            import torch

            torch.cuda.empty_cache()

    def _loaded_context(self) -> int:
        return self._planned_context(self._trained)

    def _trained_context(self, source: Path) -> int | None:
        return _trained_context(source)

    def _planned_context(self, trained: int | None) -> int:
        """`n_ctx` capped at the trained context; unset, the trained context up to DEFAULT_CONTEXT."""
        if trained is None:
            return self.n_ctx or DEFAULT_CONTEXT
        return min(self.n_ctx, trained) if self.n_ctx is not None else min(trained, DEFAULT_CONTEXT)

    def _source(self) -> Path:
        """The GGUF file or Hugging Face folder to load; ModelNotFound, with the fix, when absent."""
        if self.model_path is not None:
            folder = Path(self.model_path).expanduser()
            if folder.is_dir():
                if not (folder / "config.json").is_file():
                    raise ModelNotFound(
                        f"{self.model_path} is a folder without config.json; set llm.model_path to a "
                        "Hugging Face model folder (config.json, tokenizer and weights) or a GGUF file"
                    )
                return folder
        return resolve_model_path(self.model_path)

    def _model(self) -> HFModel:
        return super()._model()  # type: ignore[no-any-return]

    def _load(self) -> HFModel:
        require_torch("gpu", ("torch", "transformers"))  # peft only when an adapter is attached
        source = self._source()
        lora = [(_existing_adapter(p, f"llm.lora[{i}].path"), s) for i, (p, s) in enumerate(self.lora)]
        self._refuse_real_model(source)
        hf = load_hf_model(source, device=self.device, dtype=self.dtype, cache_dir=self.cache_dir)
        if not getattr(hf.tokenizer, "chat_template", None):
            raise ModelLoadError(
                f"{source} has no chat template (tokenizer.chat_template); the transformers backend "
                "needs a chat/instruct model: set llm.model_path to one"
            )
        self._trained = getattr(hf.model.config, "max_position_embeddings", None)
        eos = hf.model.generation_config.eos_token_id
        self._eos = {eos} if isinstance(eos, int) else set(eos or ())
        if hf.tokenizer.eos_token_id is not None:
            self._eos.add(hf.tokenizer.eos_token_id)
        self._peft, self._lora_layers, self._active = None, [], ()
        for i, (path, _) in enumerate(lora):
            self._attach(hf, f"{ALWAYS_ON}{i}", path, f"llm.lora[{i}].path")
        for name, path in self.adapters.items():
            self._attach(hf, name, path, f"adapters.{name}")
        return hf

    # --- adapters (PEFT LoRA folders; the bookkeeping is LocalLLM's) --------------------------

    def _existing_adapter(self, path: str | os.PathLike[str], key: str) -> Path:
        return _existing_adapter(path, key)

    def _attach(self, hf: HFModel, name: str, path: Path, key: str) -> None:
        """Load one PEFT adapter into the loaded model, wrapping it in a PeftModel the first time."""
        require_torch("gpu", ("peft",))
        from peft import PeftModel, PeftType
        from peft.tuners.lora import LoraLayer

        try:
            with warnings.catch_warnings():
                # peft 0.21 calls a transformers method that transformers 5 deprecates.
                warnings.filterwarnings("ignore", "`is_gradient_checkpointing` is deprecated", FutureWarning)
                if self._peft is None:
                    self._peft = PeftModel.from_pretrained(hf.model, str(path), adapter_name=name)
                else:
                    self._peft.load_adapter(str(path), adapter_name=name)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            raise ModelLoadError(
                f"PEFT adapter {path} could not be loaded onto {self.name}: {exc}. It must be a LoRA "
                f"trained for this base model (agentkit tune); fix or remove {key}"
            ) from exc
        if self._peft.peft_config[name].peft_type != PeftType.LORA:
            raise ModelLoadError(
                f"{path} is a {self._peft.peft_config[name].peft_type.value} adapter; only LoRA adapters "
                f"can be switched per call: fix or remove {key}"
            )
        # The model generates directly (the PeftModel only manages adapters), with none active
        # until a call asks for some.
        self._lora_layers = [m for m in hf.model.modules() if isinstance(m, LoraLayer)]
        self._peft.base_model.set_adapter([], inference_mode=True)
        self._active = ()

    def _switch(self, wanted: Adapters) -> None:
        """Make exactly `wanted` active, at those scales; none = the base model, bit for bit.

        Only flags and per-layer scale factors change (~5 ms for SmolLM2's 60 LoRA layers on a
        CPU): the base weights are never touched or reloaded.
        """
        wanted = tuple((n, s) for n, s in wanted if s != 0.0)
        if wanted == self._active or self._peft is None:
            return
        self._peft.base_model.set_adapter([n for n, _ in wanted], inference_mode=True)
        for layer in self._lora_layers:
            for name, scale in wanted:
                layer.set_scale(name, scale)  # scale x lora_alpha / r; skips layers without it
        self._active = wanted

    # --- counting -------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in this model's tokenizer, without BOS or other added tokens."""
        if not text:
            return 0
        return len(self._model().tokenizer(text, add_special_tokens=False).input_ids)

    def count_message_tokens(self, messages: Sequence[Message]) -> int:
        return len(self._prompt(self._model(), messages))

    def _prompt(self, hf: HFModel, messages: Sequence[Message]) -> list[int]:
        """The rendered chat prompt's tokens; the template writes every special token itself."""
        try:
            rendered = hf.tokenizer.apply_chat_template(
                [m.to_dict() for m in messages], add_generation_prompt=True, tokenize=False
            )
        except Exception as exc:  # jinja2 errors raised by the template, e.g. an unsupported role
            raise InputError(f"{self.name}'s chat template rejects these messages: {exc}") from exc
        return list(hf.tokenizer(rendered, add_special_tokens=False).input_ids)

    # --- generation -----------------------------------------------------------------------

    def chat(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Completion:
        options = options or GenerationOptions()
        adapters = self._check(options)
        hf = self._model()
        prompt = self._checked_prompt(hf, messages)
        run = _Run(options.logprobs)
        with self._generating(adapters):
            for _ in self._generate(hf, prompt, options, run):
                pass
        logprobs = _token_logprobs(hf.tokenizer, run) if run.top_n is not None else None
        return Completion(
            text=run.text,
            usage=Usage(len(prompt), len(run.tokens)),
            finish_reason=run.finish,
            logprobs=logprobs,
        )

    def stream(
        self, messages: Sequence[Message], options: GenerationOptions | None = None
    ) -> Generator[Delta, None, None]:
        """Yield text as it is generated; the last `Delta` carries `finish_reason` and `usage`.

        Loading and prompt errors (`PromptTooLong`, ...) raise here, before the first `next()`.
        Closing the iterator stops generation (tokens are made one at a time, as they are read)
        and frees the model for the next call.
        """
        options = options or GenerationOptions()
        adapters = self._check(options)
        hf = self._model()
        prompt = self._checked_prompt(hf, messages)
        return self._stream(hf, prompt, options, adapters)

    def _stream(
        self, hf: HFModel, prompt: list[int], options: GenerationOptions, adapters: Adapters
    ) -> Generator[Delta, None, None]:
        run = _Run(None)
        with self._generating(adapters):
            for piece in self._generate(hf, prompt, options, run):
                yield Delta(piece)
        yield Delta("", finish_reason=run.finish, usage=Usage(len(prompt), len(run.tokens)))

    def _check(self, options: GenerationOptions) -> Adapters:
        """Refuse what this backend cannot do, before anything loads."""
        for what in ("grammar", "json_schema"):
            if getattr(options, what) is not None:
                raise NotImplementedError(
                    f"the transformers backend cannot constrain generation with a {what}; "
                    "use the llama_cpp backend (llm.backend: llama_cpp) for constrained output"
                )
        return self._wanted(options)

    def _checked_prompt(self, hf: HFModel, messages: Sequence[Message]) -> list[int]:
        prompt = self._prompt(hf, messages)
        n_ctx = self.context_length
        if len(prompt) >= n_ctx:
            raise self._too_long(len(prompt), n_ctx, self._trained)
        return prompt

    def _generate(self, hf: HFModel, prompt: list[int], options: GenerationOptions, run: _Run) -> Iterator[str]:
        """Generate token by token with a KV cache, yielding text as it becomes final.

        Text that could be the start of a stop string, or ends in half a UTF-8 character, is held
        back until the next token decides it; `run` gets the tokens, the text and why it ended.
        """
        import torch

        budget = self.context_length - len(prompt)
        limit = min(options.max_tokens, budget) if options.max_tokens and options.max_tokens > 0 else budget
        sampler = _Sampler(options, self.seed, hf.device)
        stops = [s for s in options.stop if s]
        ids = torch.tensor([prompt], device=hf.device)
        seen = ids
        past = None
        sent = 0
        run.finish = "length"
        for _ in range(limit):
            # Inference mode is thread state: entered per token, never held across a yield,
            # so the caller's code between tokens runs in its own mode.
            with torch.inference_mode():
                out = hf.model(input_ids=ids, past_key_values=past, use_cache=True)
                past = out.past_key_values
                logits = out.logits[0, -1].float()
                token = sampler.pick(logits, seen)
                if token in self._eos:
                    run.finish = "stop"
                    break
                run.tokens.append(token)
                if run.top_n is not None:
                    _record_logprobs(run, logits, token)
                ids = torch.tensor([[token]], device=hf.device)
                seen = torch.cat([seen, ids], dim=1)
            run.text = hf.tokenizer.decode(run.tokens, skip_special_tokens=True)
            cut = _first_stop(run.text, stops)
            if cut is not None:
                run.text, run.finish = run.text[:cut], "stop"
                break
            ready = len(run.text) - _held_back(run.text, stops)
            if ready > sent:
                yield run.text[sent:ready]
                sent = ready
        if len(run.text) > sent:
            yield run.text[sent:]


# --- helpers -------------------------------------------------------------------------------


class _Sampler:
    """Greedy at temperature 0, else temperature sampling from a seeded generator, narrowed by
    top_k, top_p and min_p (transformers' own warpers, in the order `generate` applies them).
    Penalties come first and change greedy picks too: `repeat_penalty` is transformers'
    `repetition_penalty`; presence and frequency penalties count the generated tokens, as OpenAI's."""

    def __init__(self, options: GenerationOptions, default_seed: int | None, device: str) -> None:
        import torch
        from transformers import (
            MinPLogitsWarper,
            RepetitionPenaltyLogitsProcessor,
            TopKLogitsWarper,
            TopPLogitsWarper,
        )

        self.temperature = options.temperature
        penalty = options.repeat_penalty
        self.penalty = RepetitionPenaltyLogitsProcessor(penalty) if penalty not in (None, 1.0) else None
        self.presence = options.presence_penalty or 0.0
        self.frequency = options.frequency_penalty or 0.0
        self.prompt_len: int | None = None
        self.warpers: list[Any] = []
        if options.top_k:
            self.warpers.append(TopKLogitsWarper(options.top_k))
        if options.top_p is not None and options.top_p < 1.0:
            # top_p 0 would keep nothing: the likeliest token always stays (min_tokens_to_keep).
            self.warpers.append(TopPLogitsWarper(max(options.top_p, 1e-9)))
        if options.min_p:
            self.warpers.append(MinPLogitsWarper(options.min_p))
        self.generator: torch.Generator | None = None
        if self.temperature > 0:
            self.generator = torch.Generator(device=device)
            seed = options.seed if options.seed is not None else default_seed
            if seed is None:
                self.generator.seed()  # a fresh random seed: torch's default one is a constant
            else:
                self.generator.manual_seed(seed)

    def pick(self, logits: torch.Tensor, seen: torch.Tensor) -> int:
        """The next token, given the raw `logits` and every token so far (the prompt's first:
        `seen` on the first call is the prompt)."""
        import torch

        if self.prompt_len is None:
            self.prompt_len = seen.shape[1]
        scores = logits if self.penalty is None else self.penalty(seen, logits[None].clone())[0]
        if self.presence or self.frequency:
            generated = seen[0, self.prompt_len :]
            if generated.numel():
                counts = torch.bincount(generated, minlength=scores.shape[-1])[: scores.shape[-1]].to(scores.dtype)
                scores = scores - self.frequency * counts - self.presence * (counts > 0).to(scores.dtype)
        if self.generator is None:
            return int(scores.argmax())
        scores = scores[None] / self.temperature
        for warp in self.warpers:
            scores = warp(seen, scores)
        probs = torch.softmax(scores[0], dim=-1)
        return int(torch.multinomial(probs, 1, generator=self.generator))


def _record_logprobs(run: _Run, logits: torch.Tensor, token: int) -> None:
    """Logprobs from the raw logits (before penalty and temperature), as OpenAI-style APIs report."""
    import torch

    logprobs = torch.log_softmax(logits, dim=-1)
    run.logprobs.append(float(logprobs[token]))
    n = min(run.top_n or 0, logprobs.numel())
    if n > 0:
        values, indices = torch.topk(logprobs, n)
        run.tops.append([(int(i), float(v)) for i, v in zip(indices.tolist(), values.tolist(), strict=True)])
    else:
        run.tops.append([])


def _token_logprobs(tokenizer: Any, run: _Run) -> list[TokenLogprob]:
    """Logprobs of the tokens that make up `run.text` (tokens past a stop string dropped).

    Each token's text is the difference of cumulative decodes, so a character split across
    tokens lands on the token that completes it and the pieces join up to the text exactly.
    """
    out: list[TokenLogprob] = []
    done = ""
    for n, logprob in enumerate(run.logprobs):
        if len(done) >= len(run.text):
            break
        upto = tokenizer.decode(run.tokens[: n + 1], skip_special_tokens=True)[: len(run.text)]
        if n + 1 < len(run.logprobs):
            upto = upto.rstrip("\ufffd")  # half a character: it goes to the token that completes it
        top = {tokenizer.decode([alt]): lp for alt, lp in run.tops[n]}
        out.append(TokenLogprob(token=upto[len(done) :], logprob=logprob, top=top))
        done = upto
    return out


def _first_stop(text: str, stops: Sequence[str]) -> int | None:
    found = [i for i in (text.find(s) for s in stops) if i >= 0]
    return min(found) if found else None


def _held_back(text: str, stops: Sequence[str]) -> int:
    """Characters at the end of `text` not yet safe to send: a possible stop-string start, or a
    replacement character that the next token may turn into a whole one."""
    if text.endswith("\ufffd"):
        return len(text) - len(text.rstrip("\ufffd"))
    held = 0
    for stop in stops:
        for k in range(min(len(stop) - 1, len(text)), held, -1):
            if text.endswith(stop[:k]):
                held = k
                break
    return held


def _model_name(model_path: str | os.PathLike[str] | None) -> str:
    if model_path is None:
        return Path(BUNDLED_FILE).stem
    path = Path(model_path)
    return path.name if path.suffix.lower() != ".gguf" else path.stem


def _existing_adapter(path: str | os.PathLike[str], key: str) -> Path:
    resolved = Path(path).expanduser()
    if not (resolved / "adapter_config.json").is_file():
        what = "has no adapter_config.json" if resolved.is_dir() else "does not exist"
        raise ModelNotFound(
            f"PEFT adapter folder {path} {what}; fix the path in {key} (a folder saved by "
            "PeftModel.save_pretrained or agentkit tune) or remove the entry"
        )
    return resolved


@functools.lru_cache(maxsize=32)
def _trained_context(source: Path) -> int | None:
    """The context the model was trained for, from config.json or the GGUF header; None if unknown."""
    if source.is_dir():
        try:
            value = json.loads((source / "config.json").read_text(encoding="utf-8")).get("max_position_embeddings")
        except (OSError, ValueError, AttributeError):
            return None
        return value if isinstance(value, int) and value > 0 else None
    return gguf.trained_context(source)
