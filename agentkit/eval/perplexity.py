"""Perplexity of a GGUF model on held-out text, through llama.cpp, with and without LoRA adapters
(what `agentkit eval perplexity` prints): one model load, the base run, then the adapters attached.

Scoring follows llama.cpp's `perplexity` tool: a window of `ctx` tokens (BOS first when the
model's vocabulary asks for one) scores only its tokens after the first ctx/2, so every scored
token has at least ctx/2 + 1 tokens of context. Unlike the tool's back-to-back chunks, windows
overlap by about half, so every token after the first half window is scored exactly once: twice
the scored tokens from the same text, at the same evaluation cost per scored token.
"""

from __future__ import annotations

import logging
import math
import numbers
import os
import time
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

from agentkit.errors import (
    InputError,
    ModelLoadError,
    ModelNotFound,
    RealModelForbidden,
)
from agentkit.llm.models import resolve_model_path

if TYPE_CHECKING:
    import numpy as np
    from llama_cpp import Llama

log = logging.getLogger("agentkit.eval")

#: Documents are joined into one stream of text, as llama.cpp's tool reads one file.
_SEPARATOR = "\n\n"

LoraArg = tuple["str | os.PathLike[str]", float]


@dataclass
class PerplexityResult:
    """One row: the model (with or without adapters) on the scored tokens."""

    #: Tokens whose probability was scored.
    tokens: int
    #: Mean negative log-likelihood per scored token, in nats.
    nll: float
    #: exp(nll).
    ppl: float
    seconds: float
    model: str = ""
    #: (file, scale) of each attached LoRA adapter; empty for the base model.
    adapters: list[tuple[str, float]] = field(default_factory=list)
    ctx: int = 0
    #: Tokens run through the model: the scored ones plus the context before them.
    evaluated: int = 0
    #: Standard error of `nll` (per-token spread / sqrt(tokens), as llama.cpp reports it).
    nll_stderr: float = 0.0
    notes: list[str] = field(default_factory=list)

    @property
    def tokens_per_s(self) -> float:
        """Evaluation speed: tokens through the model per second (scored or context)."""
        return self.evaluated / self.seconds if self.seconds > 0 else 0.0

    @property
    def ppl_stderr(self) -> float:
        return self.ppl * self.nll_stderr

    @property
    def adapter_label(self) -> str:
        if not self.adapters:
            return "none"
        return " + ".join(Path(p).name + ("" if s == 1.0 else f" x{s:g}") for p, s in self.adapters)

    def to_dict(self) -> dict[str, Any]:
        return {
            "model": self.model,
            "adapters": [{"path": p, "scale": s} for p, s in self.adapters],
            "ctx": self.ctx,
            "tokens": self.tokens,
            "evaluated": self.evaluated,
            "nll": round(self.nll, 6),
            "nll_stderr": round(self.nll_stderr, 6),
            "ppl": round(self.ppl, 4),
            "ppl_stderr": round(self.ppl_stderr, 4),
            "seconds": round(self.seconds, 3),
            "tokens_per_s": round(self.tokens_per_s, 1),
        }


@dataclass
class PerplexityComparison:
    """The base model and the same model with adapters, scored on the same tokens."""

    base: PerplexityResult
    adapted: PerplexityResult
    #: Mean per-token NLL difference (adapted - base) and its paired standard error.
    delta_nll: float
    delta_nll_stderr: float

    @property
    def rows(self) -> list[PerplexityResult]:
        return [self.base, self.adapted]

    @property
    def relative_change(self) -> float:
        """adapted ppl / base ppl - 1: negative when the adapter makes the text more likely."""
        return self.adapted.ppl / self.base.ppl - 1.0

    def to_dict(self) -> dict[str, Any]:
        return {
            "rows": [r.to_dict() for r in self.rows],
            "relative_change": round(self.relative_change, 6),
            "delta_nll": round(self.delta_nll, 6),
            "delta_nll_stderr": round(self.delta_nll_stderr, 6),
            "notes": self.base.notes,
        }


def corpus_texts(path: str | os.PathLike[str]) -> Iterator[str]:
    """The text of every document under `path` (file, folder, or BEIR .jsonl with title + text).

    Lazy, so that a token limit reads only the start of a large corpus. Raises InputError when
    the whole corpus turns out to hold no text.
    """
    from agentkit.ingest.loaders import load_path

    skipped: list[str] = []

    def note(failure: Any) -> None:
        skipped.append(f"{failure.where} ({failure.reason})")
        log.warning("skipped %s: %s", failure.where, failure.reason)

    found = False
    for doc in load_path(path, on_error=note):
        text = doc.text.strip()
        if doc.metadata.get("format") == "jsonl" and doc.title.strip():
            text = f"{doc.title.strip()}\n{text}".strip()
        if text:
            found = True
            yield text
    if not found:
        why = f"; skipped: {'; '.join(skipped[:3])}" if skipped else ""
        raise InputError(
            f"{path} has no text to score{why}; pass a .txt/.md/.html file, a folder of them, "
            "or a BEIR corpus.jsonl whose lines have a non-empty text"
        )


def perplexity(
    model_path: str | os.PathLike[str] | None,
    texts_or_tokens: str | Iterable[str] | Sequence[int],
    *,
    ctx: int = 512,
    lora: Sequence[LoraArg] = (),
    limit_tokens: int | None = None,
    progress: bool = False,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
) -> PerplexityResult:
    """Perplexity of the model (None = bundled), with `lora` adapters attached if given.

    `texts_or_tokens` is one text, texts (joined by blank lines), or token ids (no BOS).
    `limit_tokens` caps the tokens scored.
    """
    with _Scorer(model_path, ctx=ctx, lora=lora, n_threads=n_threads, n_gpu_layers=n_gpu_layers) as scorer:
        tokens = scorer.tokens(texts_or_tokens, limit_tokens)
        if lora:
            scorer.attach_adapters()
        return scorer.run(tokens, limit_tokens, progress=progress)[0]


def compare(
    model_path: str | os.PathLike[str] | None,
    texts_or_tokens: str | Iterable[str] | Sequence[int],
    *,
    lora: Sequence[LoraArg],
    ctx: int = 512,
    limit_tokens: int | None = None,
    progress: bool = False,
    n_threads: int | None = None,
    n_gpu_layers: int = 0,
) -> PerplexityComparison:
    """The base model, then the same loaded model with `lora` attached, on the same tokens."""
    if not lora:
        raise ValueError("compare() needs at least one LoRA adapter; use perplexity() for the base model alone")
    with _Scorer(model_path, ctx=ctx, lora=lora, n_threads=n_threads, n_gpu_layers=n_gpu_layers) as scorer:
        tokens = scorer.tokens(texts_or_tokens, limit_tokens)
        base, base_nll = scorer.run(tokens, limit_tokens, progress=progress)
        scorer.attach_adapters()
        adapted, adapted_nll = scorer.run(tokens, limit_tokens, progress=progress)
    diff = adapted_nll - base_nll
    return PerplexityComparison(base, adapted, float(diff.mean()), _stderr(diff))


class _Scorer:
    """One loaded model with `logits_all`; adapters are initialised up front, attached on demand."""

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None,
        *,
        ctx: int,
        lora: Sequence[LoraArg],
        n_threads: int | None,
        n_gpu_layers: int,
    ) -> None:
        if ctx < 8:
            raise InputError(f"ctx must be at least 8 tokens, got {ctx}")
        path = resolve_model_path(model_path)
        adapters = [(_checked_lora(p), float(s)) for p, s in lora]
        from agentkit.llm.models import FORBID_ENV

        if os.environ.get(FORBID_ENV) == "1":
            raise RealModelForbidden(
                f"refusing to load {path}: a unit test tried to load a real model; "
                "use agentkit.testing.FakeLLM or mark the test with @pytest.mark.real_model"
            )
        problem = _not_gguf(path)
        if problem:
            raise ModelLoadError(f"{path} cannot be loaded: {problem}; pass --model PATH to a GGUF model")
        # Llama(verbose=False) quiets llama.cpp only once loaded; the metadata peek comes first.
        quiet = logging.getLogger("llama-cpp-python")
        if quiet.level == logging.NOTSET:
            quiet.setLevel(logging.ERROR)
        from agentkit.llm.llama_cpp import trained_context

        self.notes: list[str] = []
        trained = trained_context(path)
        if trained and ctx > trained:
            self.notes.append(f"ctx {ctx} is more than {path.name} was trained for; using {trained}")
            log.info(self.notes[-1])
            ctx = trained
        self.ctx = ctx
        self.path = path
        self.adapter_specs = adapters
        self.attached: list[tuple[str, float]] = []

        import llama_cpp

        threads = n_threads or os.cpu_count() or 1
        try:
            self.llama: Llama = llama_cpp.Llama(
                model_path=str(path), n_ctx=ctx, n_batch=ctx, n_ubatch=min(ctx, 512), logits_all=True,
                n_threads=threads, n_threads_batch=threads, n_gpu_layers=n_gpu_layers, verbose=False,
            )
        except (ValueError, RuntimeError) as exc:
            raise ModelLoadError(
                f"{path} could not be loaded by llama.cpp: {exc}; pass --model PATH to a complete GGUF model"
            ) from exc
        try:
            vocab = llama_cpp.llama_model_get_vocab(self.llama.model)
            self.bos = [self.llama.token_bos()] if llama_cpp.llama_vocab_get_add_bos(vocab) else []
            # Fail before the (long) base run, not after it.
            self._adapters = [self._init_adapter(p) for p, _ in adapters]
        except BaseException:
            self.llama.close()
            raise

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.llama.close()

    def _init_adapter(self, path: Path) -> Any:
        from agentkit.llm.llama_cpp import init_lora

        return init_lora(self.llama, path, "--lora")

    def attach_adapters(self) -> None:
        """Attach every adapter to the context; the KV cache computed without them is dropped."""
        import llama_cpp

        from agentkit.llm.llama_cpp import set_loras

        if not self._adapters:
            return
        set_loras(self.llama, self._adapters, [s for _, s in self.adapter_specs])
        llama_cpp.llama_memory_clear(llama_cpp.llama_get_memory(self.llama.ctx), True)
        self.llama.reset()
        self.attached = [(str(p), s) for p, s in self.adapter_specs]

    def tokens(self, texts_or_tokens: str | Iterable[str] | Sequence[int], limit: int | None) -> list[int]:
        """Token ids of the text, tokenized in one piece; with a limit, only enough of the start."""
        if isinstance(texts_or_tokens, str):
            texts: Iterable[str] = [texts_or_tokens]
        elif isinstance(texts_or_tokens, Sequence) and texts_or_tokens and all(
            isinstance(t, numbers.Integral) for t in texts_or_tokens
        ):
            return [int(t) for t in texts_or_tokens]
        else:
            texts = texts_or_tokens  # type: ignore[assignment]
        need = None if limit is None else self._first_target() + limit
        # ~4.6 characters per token on English prose: 8 per token rarely needs a second pass.
        budget = math.inf if need is None else 8 * need
        parts: list[str] = []
        chars = 0
        remaining = iter(texts)
        while True:
            exhausted = True
            for text in remaining:
                parts.append(text)
                chars += len(text) + len(_SEPARATOR)
                if chars >= budget:
                    exhausted = False
                    break
            ids = self.llama.tokenize(_SEPARATOR.join(parts).encode("utf-8"), add_bos=False, special=False)
            if exhausted or need is None or len(ids) >= need:
                break
            budget *= 2
        if not ids:
            raise InputError("the corpus has no text to score")
        return ids

    def _first_target(self) -> int:
        return self.ctx // 2 + 1 - len(self.bos)

    def run(self, tokens: Sequence[int], limit: int | None, *, progress: bool = False) -> tuple[PerplexityResult, np.ndarray]:
        """Score `tokens` window by window; returns the row and every scored token's NLL."""
        import numpy as np

        llama, ctx, bos = self.llama, self.ctx, self.bos
        spans = windows(len(tokens), ctx, len(bos), limit)
        if not spans:
            first = ctx // 2 + 1 - len(bos)
            raise InputError(
                f"the corpus has {len(tokens)} tokens, but with ctx {ctx} the first {first} are context "
                f"only; add text or lower --ctx (e.g. --ctx {max(8, len(tokens) // 2)})"
            )
        base = spans[0][1]
        nll = np.empty(spans[-1][2] - base, dtype=np.float64)
        evaluated = 0
        iterator: Iterable[tuple[int, int, int]] = spans
        if progress:
            from tqdm import tqdm

            label = "perplexity" + (" +adapter" if self.attached else "")
            iterator = tqdm(spans, desc=label, unit="window")
        t0 = time.perf_counter()
        for w0, scored, w1 in iterator:
            window = bos + list(tokens[w0:w1])
            llama.reset()  # eval() then drops the whole KV cache: windows do not see each other
            llama.eval(window)
            # Row r of the logits predicts window[r + 1]; tokens[scored:w1] are the window's tail.
            first_row = len(bos) + scored - w0 - 1
            nll[scored - base : w1 - base] = token_nll(llama.scores[first_row : len(window) - 1], window[first_row + 1 :])
            evaluated += len(window)
        seconds = time.perf_counter() - t0
        mean = float(nll.mean())
        result = PerplexityResult(
            tokens=len(nll), nll=mean, ppl=math.exp(mean), seconds=seconds, model=self.path.stem,
            adapters=list(self.attached), ctx=ctx, evaluated=evaluated, nll_stderr=_stderr(nll),
            notes=list(self.notes),
        )
        return result, nll


def windows(n_tokens: int, ctx: int, n_bos: int, limit: int | None = None) -> list[tuple[int, int, int]]:
    """The windows over `n_tokens` text tokens as (start, first scored, end) token indices.

    A window holds `n_bos` BOS tokens then tokens[start:end], at most `ctx` in all; it scores
    tokens[first scored:end], each of which has at least ctx/2 + 1 tokens before it in the window
    (llama.cpp's choice). Consecutive windows overlap so that the scored spans tile the text from
    ctx/2 + 1 - n_bos on, up to `limit` tokens. Empty when the text is too short to score any.
    """
    half = ctx // 2
    first = half + 1 - n_bos
    end = n_tokens if limit is None else min(n_tokens, first + limit)
    stride = ctx - 1 - half
    spans = []
    for scored in range(first, end, stride):
        start = scored - first
        spans.append((start, scored, min(start + ctx - n_bos, end)))
    return spans


def token_nll(logits: np.ndarray, targets: Sequence[int]) -> np.ndarray:
    """-log softmax(logits[i])[targets[i]] for each row, via a max-shifted log-sum-exp.

    exp() runs in float32 (arguments <= 0, so no overflow) and the sums in float64.
    """
    import numpy as np

    rows = np.asarray(logits, dtype=np.float32)
    peak = rows.max(axis=1, keepdims=True)
    lse = peak[:, 0].astype(np.float64) + np.log(np.exp(rows - peak).sum(axis=1, dtype=np.float64))
    picked = rows[np.arange(len(rows)), np.asarray(targets)].astype(np.float64)
    return lse - picked  # type: ignore[no-any-return]


def _stderr(values: np.ndarray) -> float:
    n = len(values)
    return float(values.std(ddof=1) / math.sqrt(n)) if n > 1 else 0.0


def _not_gguf(path: Path) -> str | None:
    """Why `path` is plainly not a GGUF file, or None."""
    try:
        with path.open("rb") as f:
            head = f.read(4)
    except OSError as exc:
        return f"it cannot be read ({exc.strerror or exc})"
    if not head:
        return "the file is empty"
    if head != b"GGUF":
        return f"it is not a GGUF file (it starts with {head!r}, not b'GGUF')"
    return None


def _checked_lora(path: str | os.PathLike[str]) -> Path:
    resolved = Path(path).expanduser()
    if not resolved.is_file():
        raise ModelNotFound(f"LoRA adapter {path} does not exist; pass --lora PATH to a GGUF LoRA file")
    problem = _not_gguf(resolved)
    if problem:
        raise ModelLoadError(
            f"LoRA adapter {path} cannot be used: {problem}; --lora takes a GGUF LoRA made for the base "
            "model (convert a PEFT adapter with llama.cpp's convert_lora_to_gguf.py)"
        )
    return resolved
