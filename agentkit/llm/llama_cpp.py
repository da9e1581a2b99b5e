"""The llama.cpp backend: any GGUF chat model behind the `LLM` protocol, loaded lazily, once.

Honours grammars, JSON schemas, logprobs and LoRA adapters; counts tokens with the model's own
tokenizer and chat template, and turns llama.cpp's failures into agentkit's typed errors.
Over 600 lines because the recording sampler, grammar checks and native-stderr capture are glue
to llama-cpp-python's internals that belongs beside the one backend that uses it.
"""

from __future__ import annotations

import collections
import contextlib
import functools
import io
import json
import logging
import os
import re
import sys
import threading
from collections.abc import Generator, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal, Protocol, TypeAlias

from pydantic import BaseModel, ConfigDict, Field, field_validator

from agentkit.errors import ConfigError, InputError, ModelLoadError, ModelNotFound, PromptTooLong
from agentkit.llm import gguf
from agentkit.llm.base import Completion, Delta, GenerationOptions, TokenLogprob
from agentkit.llm.local import ALWAYS_ON, Adapters, LocalLLM
from agentkit.llm.models import BUNDLED_FILE, LoraConfig, resolve_model_path
from agentkit.llm.models import absolute as _absolute
from agentkit.types import Message, Usage

if TYPE_CHECKING:
    from llama_cpp import Llama
    from llama_cpp.llama_chat_format import Jinja2ChatFormatter
    from llama_cpp.llama_grammar import LlamaGrammar


#: Template tokens assumed per message when the chat template cannot be rendered.
_MESSAGE_OVERHEAD = 4
#: Compiled grammars kept per model, least recently used dropped first: a server's clients may
#: send a new grammar with every request, and each one would otherwise stay in memory for good.
GRAMMAR_CACHE_SIZE = 32

_TOO_LONG = re.compile(r"Requested tokens \((\d+)\) exceed context window of (\d+)")


def physical_cores() -> int:
    """Physical CPU cores this process may run on: llama.cpp's default thread count.

    Not logical CPUs: two threads on one core's hyperthreads contend for the same arithmetic
    units, and on a loaded machine every extra thread waits for a turn (one thread was 4-5x
    faster than two on a busy 2-core box). Linux reads the CPU topology of the CPUs in this
    process's affinity mask; elsewhere psutil if installed, else the logical count.
    """
    try:
        allowed = sorted(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        allowed = []
    cores = set()
    for cpu in allowed:
        topology = Path(f"/sys/devices/system/cpu/cpu{cpu}/topology")
        try:
            package = (topology / "physical_package_id").read_text().strip()
            core = (topology / "core_id").read_text().strip()
        except OSError:
            cores = set()
            break
        cores.add((package, core))
    if cores:
        return len(cores)
    try:
        import psutil  # type: ignore[import-untyped]

        counted = psutil.cpu_count(logical=False)
    except ImportError:
        counted = None
    return max(1, counted or len(allowed) or os.cpu_count() or 1)


class LlamaCppConfig(BaseModel):
    """The `llm:` section of a config file that selects the llama.cpp backend."""

    model_config = ConfigDict(extra="forbid")

    backend: Literal["llama_cpp"] = "llama_cpp"
    model_path: str | None = Field(
        default=None, description="GGUF file; None = the bundled SmolLM2-135M-Instruct"
    )
    n_ctx: int = Field(
        default=4096, ge=0, description="context size, capped at the model's trained context; 0 = trained"
    )
    n_threads: int | None = Field(
        default=None, ge=1, description="CPU threads; None = the physical cores this process may use"
    )
    n_batch: int = Field(default=512, ge=1, description="prompt tokens evaluated per batch")
    n_gpu_layers: int = Field(default=0, ge=-1, description="layers offloaded to a GPU; -1 = all")
    seed: int | None = Field(default=None, description="sampling seed used when a call gives none")
    chat_format: str | None = Field(
        default=None, description="llama_cpp chat format name; None = the GGUF's template"
    )
    lora: list[LoraConfig] = Field(default_factory=list)
    logprobs: bool = Field(default=False, description="return chosen-token logprobs on every chat call")
    verbose: bool = Field(default=False, description="let llama.cpp print its load and timing logs")

    @field_validator("model_path", mode="before")
    @classmethod
    def _empty_is_bundled(cls, value: object) -> object:
        # `model_path: ${AGENTKIT_MODEL:-}` interpolates to "" when the variable is unset.
        return None if isinstance(value, str) and not value.strip() else value


class LoraLike(Protocol):
    @property
    def path(self) -> str | os.PathLike[str]: ...

    @property
    def scale(self) -> float: ...


LoraSpec: TypeAlias = "tuple[str | os.PathLike[str], float] | LoraLike"


@dataclass
class _Recorder:
    """What the sampler did during one generation: each token it picked and, if asked, logprobs."""

    #: Alternatives to keep per token; None = compute no logprobs at all.
    top_n: int | None
    prompt: list[int] = field(default_factory=list)
    tokens: list[int] = field(default_factory=list)
    logprobs: list[float] = field(default_factory=list)
    tops: list[list[tuple[int, float]]] = field(default_factory=list)


@functools.cache
def _recording_llama() -> type[Llama]:
    import llama_cpp
    import numpy as np
    from llama_cpp import Llama

    class _RecordingLlama(Llama):
        """A `Llama` whose sampler reports each token it picks, with its logprob on request.

        Why not `logits_all=True`, llama-cpp-python's own way to logprobs: it keeps a logits row
        for every prompt token. Measured on SmolLM2-135M (2 CPU threads, 2,061-token prompt):
        prompt speed 227 -> 191 tokens/s (-16%), +615 MB resident (an n_ctx x n_vocab array),
        and its per-token Python sort of the vocabulary made generation 5x slower (100 tokens:
        1.0 s -> 5.3 s). Reading the one row llama.cpp computes anyway for each sampled token
        costs nothing on the prompt, no memory, under a millisecond per generated token, and
        only when a call asks for logprobs; the values equal llama-cpp-python's.
        """

        recorder: _Recorder | None = None

        def sample(self, *args: Any, **kwargs: Any) -> int:
            rec = self.recorder
            if rec is None:
                return int(super().sample(*args, **kwargs))
            idx = kwargs.get("idx")
            if not rec.tokens:
                rec.prompt = self.input_ids[: (idx + 1 if idx is not None else self.n_tokens)].tolist()
            logits = None
            if rec.top_n is not None:
                # The row the sampler is about to read, copied before sampling so that no sampler
                # stage can have touched it: raw logits, as OpenAI-style logprobs report them.
                row = idx - self.n_tokens if idx is not None else -1
                ptr = llama_cpp.llama_get_logits_ith(self.ctx, row)
                if ptr:
                    logits = np.ctypeslib.as_array(ptr, shape=(self.n_vocab(),)).astype(np.float64)
            token = int(super().sample(*args, **kwargs))
            rec.tokens.append(token)
            if rec.top_n is not None and logits is None:
                rec.logprobs.append(float("nan"))  # keeps logprobs aligned with tokens
                rec.tops.append([])
            elif logits is not None:
                peak = logits.max()
                norm = peak + np.log(np.exp(logits - peak).sum())
                rec.logprobs.append(float(logits[token] - norm))
                n = min(rec.top_n or 0, logits.size)
                if n > 0:
                    best = np.argpartition(logits, -n)[-n:]
                    best = best[np.argsort(-logits[best])]
                    rec.tops.append([(int(i), float(logits[i] - norm)) for i in best])
                else:
                    rec.tops.append([])
            return token

    return _RecordingLlama


class LlamaCppLLM(LocalLLM):
    """A GGUF chat model run by llama.cpp (via llama-cpp-python).

    Construction is cheap; loading, locking and adapter bookkeeping are `LocalLLM`'s: the model
    loads on first use, once, and serves one generation at a time.
    """

    config_model = LlamaCppConfig

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None = None,
        *,
        n_ctx: int = 4096,
        n_threads: int | None = None,
        n_batch: int = 512,
        n_gpu_layers: int = 0,
        seed: int | None = None,
        chat_format: str | None = None,
        lora: Sequence[LoraSpec] | None = None,
        adapters: Mapping[str, str | os.PathLike[str]] | None = None,
        logprobs: bool = False,
        verbose: bool = False,
    ) -> None:
        if n_ctx < 0:
            raise ValueError(f"n_ctx must be >= 0 (0 = the model's trained context), got {n_ctx}")
        name = Path(model_path).stem if model_path is not None else Path(BUNDLED_FILE).stem
        super().__init__(model_path, name=name, lora=[_lora_pair(item) for item in lora or []], seed=seed)
        self.n_ctx = n_ctx
        self.n_threads = n_threads
        self.n_batch = n_batch
        self.n_gpu_layers = n_gpu_layers
        self.chat_format = chat_format
        #: Loaded adapter handles by name; the always-on `lora` entries are named "lora:<i>".
        self._handles: dict[str, Any] = {}
        self.logprobs = logprobs
        self.verbose = verbose
        self._formatter: Jinja2ChatFormatter | None = None
        self._grammars: collections.OrderedDict[str, LlamaGrammar] = collections.OrderedDict()
        # Requests build their grammar before taking the model (`_request` runs outside
        # `_generating`), so concurrent calls share the LRU cache: one lock for its reorders and evictions.
        self._grammar_lock = threading.Lock()
        for adapter, path in (adapters or {}).items():
            self._register(adapter, path, f"adapters.{adapter}.path")

    @classmethod
    def from_config(cls, config: LlamaCppConfig) -> LlamaCppLLM:
        return cls(
            _absolute(config.model_path) if config.model_path is not None else None,
            n_ctx=config.n_ctx,
            n_threads=config.n_threads,
            n_batch=config.n_batch,
            n_gpu_layers=config.n_gpu_layers,
            seed=config.seed,
            chat_format=config.chat_format,
            lora=[(_absolute(item.path), item.scale) for item in config.lora],
            logprobs=config.logprobs,
            verbose=config.verbose,
        )

    def __repr__(self) -> str:
        state = "loaded" if self._llama is not None else "not loaded"
        return f"LlamaCppLLM({self.name!r}, n_ctx={self.n_ctx}, {state})"

    # --- loading --------------------------------------------------------------------------

    @property
    def _llama(self) -> Llama | None:
        """The loaded llama_cpp model, or None."""
        return self._loaded  # type: ignore[no-any-return]

    def _source(self) -> Path:
        return resolve_model_path(self.model_path)

    def _trained_context(self, source: Path) -> int | None:
        return trained_context(source)

    def _planned_context(self, trained: int | None) -> int:
        """`n_ctx`, capped at (or, when 0, set to) the context the model was trained for."""
        if not trained:
            return self.n_ctx
        return trained if self.n_ctx == 0 else min(self.n_ctx, trained)

    def _loaded_context(self) -> int:
        return int(self._loaded.n_ctx())

    def _unload(self) -> None:
        self._loaded.close()
        self._loaded = None

    def _model(self) -> Llama:
        return super()._model()  # type: ignore[no-any-return]

    def _load(self) -> Llama:
        path = self._source()
        adapters = [(self._existing_adapter(p, "llm.lora"), scale) for p, scale in self.lora]
        self._refuse_real_model(path)
        from llama_cpp import llama_chat_format

        if self.chat_format is not None and not self._uses_gguf_template():
            try:
                llama_chat_format.get_chat_completion_handler(self.chat_format)
            except llama_chat_format.LlamaChatCompletionHandlerNotFoundException as exc:
                raise ConfigError(
                    f"llm.chat_format: {exc}; or leave it unset to use the model's own template"
                ) from exc

        # The same switch Llama(verbose=...) flips, set before the load so that it covers all of it.
        logging.getLogger("llama-cpp-python").setLevel(logging.DEBUG if self.verbose else logging.ERROR)
        n_ctx = self._planned_context(trained_context(path))
        threads = self.n_threads or physical_cores()
        kwargs: dict[str, Any] = {}
        if self.seed is not None:
            kwargs["seed"] = self.seed
        try:
            llama = _recording_llama()(
                model_path=str(path),
                n_ctx=n_ctx,
                n_threads=threads,
                n_threads_batch=threads,
                n_batch=self.n_batch,
                n_gpu_layers=self.n_gpu_layers,
                # GGUF templates are installed by _template() below; only named formats go here.
                chat_format=None if self._uses_gguf_template() else self.chat_format,
                verbose=self.verbose,
                **kwargs,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(_load_failure(path, exc)) from exc
        try:
            self._handles = {}
            for i, (p, _) in enumerate(adapters):
                self._attach(llama, f"{ALWAYS_ON}{i}", p, "llm.lora")
            for name, p in self.adapters.items():
                self._attach(llama, name, p, f"adapters.{name}")
            self._active = ()
            self._apply(llama, self._default_adapters())
            self._formatter = self._template(llama)
        except BaseException:
            llama.close()
            raise
        return llama

    # --- adapters (GGUF LoRA files; the bookkeeping is LocalLLM's) ---------------------------

    def _existing_adapter(self, path: str | os.PathLike[str], key: str) -> Path:
        return _existing_lora(path, key)

    def _attach(self, loaded: Any, name: str, path: Path, key: str) -> None:
        self._handles[name] = init_lora(loaded, path, key)

    def _switch(self, wanted: Adapters) -> None:
        self._apply(self._loaded, wanted)

    def _apply(self, llama: Llama, wanted: Adapters) -> None:
        """Point the context at `wanted`; a change drops the cached prompt (its KV was computed
        with other weights). Measured in bench/adapters.py: ~0.1 ms, versus a whole model load."""
        wanted = tuple((n, s) for n, s in wanted if s != 0.0)
        if wanted == self._active:
            return
        set_loras(llama, [self._handles[n] for n, _ in wanted], [s for _, s in wanted])
        llama.reset()
        self._active = wanted

    def _uses_gguf_template(self) -> bool:
        return self.chat_format is None or self.chat_format.startswith("chat_template.")

    def _template(self, llama: Llama) -> Jinja2ChatFormatter | None:
        """The GGUF's own chat template, installed as the handler so that counts match prompts."""
        from llama_cpp.llama_chat_format import Jinja2ChatFormatter

        if not self._uses_gguf_template():
            return None  # a named llama_cpp format: token counts fall back to an estimate
        key = "tokenizer.chat_template"
        if self.chat_format not in (None, "chat_template.default"):
            key = "tokenizer." + str(self.chat_format)
        template = llama.metadata.get(key)
        if template is None:
            if self.chat_format is not None:
                found = sorted(
                    k[len("tokenizer.") :] for k in llama.metadata if k.startswith("tokenizer.chat_template")
                )
                raise ConfigError(
                    f"llm.chat_format: {self.name} has no {self.chat_format!r} template "
                    f"(it has: {', '.join(found) or 'none'}); pick one of those or a llama_cpp format name"
                )
            return None  # no template in the file: llama_cpp guesses a format
        eos, bos = llama.token_eos(), llama.token_bos()
        formatter = Jinja2ChatFormatter(
            template=template,
            eos_token=_token_text(llama, eos),
            bos_token=_token_text(llama, bos),
            stop_token_ids=[eos],
        )
        llama.chat_handler = formatter.to_chat_handler()
        return formatter

    # --- counting -------------------------------------------------------------------------

    def count_tokens(self, text: str) -> int:
        """Tokens `text` takes in this model's tokenizer, without BOS, special tokens parsed as
        the chat prompt parses them."""
        if not text:
            return 0
        return len(self._model().tokenize(text.encode("utf-8"), add_bos=False, special=True))

    def count_message_tokens(self, messages: Sequence[Message]) -> int:
        return self._prompt_tokens(self._model(), messages)[0]

    def _prompt_tokens(self, llama: Llama, messages: Sequence[Message]) -> tuple[int, bool]:
        """(tokens of the rendered prompt, whether that count is exact rather than estimated)."""
        if self._formatter is not None:
            try:
                rendered = self._formatter(messages=[m.to_dict() for m in messages])  # type: ignore[misc]
            except Exception:  # a template that rejects these messages: estimate instead
                pass
            else:
                tokens = llama.tokenize(
                    rendered.prompt.encode("utf-8"), add_bos=not rendered.added_special, special=True
                )
                return len(tokens), True
        return sum(self.count_tokens(m.content) + _MESSAGE_OVERHEAD for m in messages), False

    # --- generation -----------------------------------------------------------------------

    def chat(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Completion:
        options = options or GenerationOptions()
        llama = self._model()
        request, _ = self._request(llama, messages, options)
        top_n = options.logprobs if options.logprobs is not None else (0 if self.logprobs else None)
        with self._recording(llama, _Recorder(top_n), self._wanted(options)) as rec:
            try:
                response: Any = llama.create_chat_completion(**request)
            except ValueError as exc:
                too_long = self._too_long_from(exc)
                if too_long is None:
                    raise
                raise too_long from exc
        choice = response["choices"][0]
        text = choice["message"]["content"] or ""
        usage = Usage(response["usage"]["prompt_tokens"], response["usage"]["completion_tokens"])
        logprobs = _token_logprobs(llama, rec, text) if top_n is not None else None
        return Completion(
            text=text, usage=usage, finish_reason=choice["finish_reason"] or "stop", logprobs=logprobs
        )

    def stream(
        self, messages: Sequence[Message], options: GenerationOptions | None = None
    ) -> Generator[Delta, None, None]:
        """Yield text as it is generated; the last `Delta` carries `finish_reason` and `usage`.

        Loading and prompt errors (`PromptTooLong`, ...) raise here, before the first `next()`.
        Closing the iterator stops generation and frees the model for the next call.
        """
        options = options or GenerationOptions()
        llama = self._model()
        request, n_prompt = self._request(llama, messages, options)
        return self._stream(llama, request, n_prompt, self._wanted(options))

    def _stream(
        self, llama: Llama, request: dict[str, Any], n_prompt: int, adapters: Adapters
    ) -> Generator[Delta, None, None]:
        with self._recording(llama, _Recorder(None), adapters) as rec:
            chunks: Any = llama.create_chat_completion(stream=True, **request)
            finish = "stop"
            try:
                for chunk in chunks:
                    choice = chunk["choices"][0]
                    text = choice["delta"].get("content")
                    if text:
                        yield Delta(text)
                    finish = choice.get("finish_reason") or finish
            except ValueError as exc:
                too_long = self._too_long_from(exc)
                if too_long is None:
                    raise
                raise too_long from exc
            finally:
                # Runs on close() too (GeneratorExit at the yield): ends llama_cpp's generator chain
                # so that nothing half-finished survives into the next call.
                chunks.close()
            completion = sum(1 for t in rec.tokens if not _is_end_of_generation(llama, t))
        yield Delta("", finish_reason=finish, usage=Usage(n_prompt, completion))

    def _request(
        self, llama: Llama, messages: Sequence[Message], options: GenerationOptions
    ) -> tuple[dict[str, Any], int]:
        n_prompt, exact = self._prompt_tokens(llama, messages)
        if exact and n_prompt >= llama.n_ctx():
            raise self._too_long(n_prompt, llama.n_ctx(), _trained_context_of(llama))
        seed = options.seed if options.seed is not None else self.seed
        request: dict[str, Any] = {
            "messages": [m.to_dict() for m in messages],
            "max_tokens": options.max_tokens if options.max_tokens and options.max_tokens > 0 else None,
            "temperature": options.temperature,
            "stop": list(options.stop),
            "seed": seed,
            "grammar": self._grammar(llama, options),
        }
        # Only what the call sets: llama_cpp's own defaults (top_p 0.95, top_k 40, min_p 0.05) stay.
        for name in ("repeat_penalty", "top_p", "top_k", "min_p", "presence_penalty", "frequency_penalty"):
            value = getattr(options, name)
            if value is not None:
                request[name] = value
        return request, n_prompt

    @contextlib.contextmanager
    def _recording(self, llama: Llama, recorder: _Recorder, adapters: Adapters) -> Iterator[_Recorder]:
        """Hold the model for one generation (`LocalLLM._generating`), its sampler reporting to `recorder`."""
        with self._generating(adapters):
            llama.recorder = recorder  # type: ignore[attr-defined]
            try:
                yield recorder
            finally:
                llama.recorder = None  # type: ignore[attr-defined]

    def _too_long_from(self, exc: ValueError) -> PromptTooLong | None:
        """llama_cpp's own context check, for prompts whose length could only be estimated."""
        found = _TOO_LONG.search(str(exc))
        if found is None:
            return None
        return self._too_long(int(found.group(1)), int(found.group(2)), _trained_context_of(self._llama))

    def _grammar(self, llama: Llama, options: GenerationOptions) -> LlamaGrammar | None:
        from llama_cpp.llama_grammar import LlamaGrammar, json_schema_to_gbnf

        if options.grammar is not None and options.json_schema is not None:
            raise NotImplementedError(
                "llama.cpp takes one grammar per call; pass grammar or json_schema, not both"
            )
        if options.grammar is not None:
            key, what = "gbnf:" + options.grammar, "grammar"
        elif options.json_schema is not None:
            key, what = "schema:" + json.dumps(options.json_schema, sort_keys=True), "json_schema"
        else:
            return None
        with self._grammar_lock:
            cached = self._grammars.get(key)
            if cached is not None:
                self._grammars.move_to_end(key)
                return cached
            if options.grammar is not None:
                gbnf = options.grammar
            else:
                try:
                    gbnf = json_schema_to_gbnf(json.dumps(options.json_schema))
                except Exception as exc:  # the converter raises bare Exceptions
                    raise InputError(f"json_schema cannot be turned into a grammar: {exc}") from exc
            _check_grammar(llama, gbnf, what)
            grammar = LlamaGrammar.from_string(gbnf, verbose=self.verbose)
            self._grammars[key] = grammar
            while len(self._grammars) > GRAMMAR_CACHE_SIZE:
                self._grammars.popitem(last=False)
            return grammar


# --- helpers -------------------------------------------------------------------------------


def _lora_pair(item: LoraSpec) -> tuple[str | os.PathLike[str], float]:
    if isinstance(item, tuple):
        path, scale = item
        return path, float(scale)
    return item.path, float(item.scale)


def _existing_lora(path: str | os.PathLike[str], key: str = "llm.lora") -> Path:
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ModelNotFound(f"LoRA adapter {path} does not exist; fix the path in {key} or remove the entry")
    return resolved


def trained_context(path: Path) -> int | None:
    """The context length the GGUF was trained for, from its header (agentkit.llm.gguf)."""
    return gguf.trained_context(path)


def _trained_context_of(llama: Llama | None) -> int | None:
    if llama is None:
        return None
    import llama_cpp

    return int(llama_cpp.llama_model_n_ctx_train(llama.model)) or None


def _load_failure(path: Path, exc: Exception) -> str:
    import llama_cpp

    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as err:
        head, reason = b"", f"it cannot be read ({err})"
    else:
        if not head:
            reason = "the file is empty"
        elif head != gguf.MAGIC:
            reason = f"it is not a GGUF file (it starts with {head!r}, not b'GGUF')"
        elif "context" in str(exc):
            # The weights loaded but the KV cache did not fit.
            return (
                f"{path} loaded but llama.cpp could not create its context ({exc}); "
                "lower llm.n_ctx (or llm.n_gpu_layers on a small GPU)"
            )
        else:
            reason = str(exc)
    return (
        f"{path} could not be loaded by llama.cpp: {reason}. Check that it is a complete GGUF model "
        "(re-download it if the download was interrupted) whose architecture llama-cpp-python "
        f"{llama_cpp.__version__} supports (pip install -U llama-cpp-python), "
        "or pass --model PATH / set llm.model_path to another model"
    )


def init_lora(llama: Llama, path: Path, key: str) -> Any:
    """Load one GGUF LoRA onto the model; llama.cpp owns (and frees) it with the model."""
    import llama_cpp

    adapter = llama_cpp.llama_adapter_lora_init(llama.model, str(path).encode("utf-8"))
    if not adapter:
        raise ModelLoadError(
            f"LoRA adapter {path} could not be loaded onto {llama.model_path}: it must be a GGUF "
            "LoRA made for this base model (agentkit tune export, or llama.cpp's "
            f"convert_lora_to_gguf.py); fix or remove {key}"
        )
    return adapter


def set_loras(llama: Llama, handles: Sequence[Any], scales: Sequence[float]) -> None:
    """Make exactly these adapters (with these scales) active on the context; none = the base."""
    import ctypes

    import llama_cpp

    set_all = getattr(llama_cpp, "llama_set_adapters_lora", None)
    if set_all is not None:
        array = (llama_cpp.llama_adapter_lora_p_ctypes * max(1, len(handles)))(*handles)
        failed = set_all(llama.ctx, array, len(handles), (ctypes.c_float * max(1, len(scales)))(*scales))
    else:
        # Older bindings: clear, then each call adds one adapter to the context.
        llama_cpp.llama_clear_adapter_lora(llama.ctx)
        failed = 0
        for adapter, scale in zip(handles, scales, strict=True):
            failed = failed or llama_cpp.llama_set_adapter_lora(llama.ctx, adapter, scale)
    if failed:
        raise ModelLoadError(f"llama.cpp refused to apply {len(handles)} LoRA adapter(s) to {llama.model_path}")


def _check_grammar(llama: Llama, gbnf: str, what: str) -> None:
    """Parse the grammar once now: llama.cpp would otherwise crash on it mid-generation."""
    import llama_cpp

    vocab = llama_cpp.llama_model_get_vocab(llama.model)
    with _native_stderr() as log:
        sampler = llama_cpp.llama_sampler_init_grammar(vocab, gbnf.encode("utf-8"), b"root")
    if not sampler:
        detail = " ".join(log.getvalue().split()) or "llama.cpp could not parse it"
        raise InputError(f"{what} is not a valid GBNF grammar with a `root` rule: {detail}")
    llama_cpp.llama_sampler_free(sampler)


@contextlib.contextmanager
def _native_stderr() -> Iterator[io.StringIO]:
    """Capture what C code writes to file descriptor 2 (llama.cpp's grammar parser fprintf()s
    its errors there), so that the error can go into an exception instead of the terminal."""
    import tempfile

    captured = io.StringIO()
    sys.stderr.flush()
    saved = os.dup(2)
    with tempfile.TemporaryFile() as sink:
        os.dup2(sink.fileno(), 2)
        try:
            with contextlib.redirect_stderr(captured):
                yield captured
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            sink.seek(0)
            captured.write(sink.read().decode("utf-8", errors="replace"))


def _token_text(llama: Llama, token: int) -> str:
    if token < 0:
        return ""
    return llama.detokenize([token], special=True).decode("utf-8", errors="replace")


def _is_end_of_generation(llama: Llama, token: int) -> bool:
    import llama_cpp

    return bool(llama_cpp.llama_vocab_is_eog(llama_cpp.llama_model_get_vocab(llama.model), token))


def _token_logprobs(llama: Llama, rec: _Recorder, text: str) -> list[TokenLogprob]:
    """Logprobs of the tokens that make up `text` (end-of-generation and post-stop tokens dropped).

    Each token's text is the difference of cumulative decodes, so a character split across
    tokens lands on the token that completes it and the pieces join up to `text` exactly.
    """
    kept = [(i, t) for i, t in enumerate(rec.tokens) if not _is_end_of_generation(llama, t)]
    tokens = [t for _, t in kept]
    out: list[TokenLogprob] = []
    done = ""
    for n, (i, _) in enumerate(kept):
        if len(done) >= len(text) or i >= len(rec.logprobs):
            break
        upto = llama.detokenize(tokens[: n + 1], prev_tokens=rec.prompt).decode("utf-8", errors="ignore")
        top = {_token_text(llama, alt): lp for alt, lp in rec.tops[i]}
        out.append(TokenLogprob(token=upto[len(done) :], logprob=rec.logprobs[i], top=top))
        done = upto
    return out


_SELF_CHECK = """
import llama_cpp
from agentkit.llm.models import bundled_model_path
llama = llama_cpp.Llama(str(bundled_model_path()), n_ctx=64, n_batch=32, n_threads=1, verbose=False)
llama.eval(llama.tokenize(b"The quick brown fox jumps over the lazy dog"))
"""


def self_check() -> int:
    """0 when llama.cpp evaluates a batch of tokens on this CPU, else the child's exit status.

    A build for the machine's own CPU may use AMX tiles, which some VMs and sandboxes do not
    enable: the first matrix product then dies with SIGSEGV, taking the process with it. The check
    runs in a child process so that `make install` can rebuild without AMX instead of crashing.
    """
    import subprocess

    return subprocess.run([sys.executable, "-c", _SELF_CHECK], capture_output=True).returncode


if __name__ == "__main__":
    status = self_check()
    print("llama.cpp: runs on this CPU" if status == 0 else f"llama.cpp: crashed on this CPU (exit {status})")
    raise SystemExit(0 if status == 0 else 1)
