"""What every backend that runs a model inside this process shares (llama.cpp, transformers).

Loading on first use under a lock, one generation at a time with same-thread re-entry refused,
the context a model will get, the PromptTooLong message and named LoRA adapters beside always-on
ones. A subclass says how to load, attach an adapter and switch adapters; this class says when.
"""

from __future__ import annotations

import contextlib
import os
import threading
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

from agentkit.errors import InputError, ModelNotFound, PromptTooLong, RealModelForbidden
from agentkit.llm.base import GenerationOptions
from agentkit.llm.models import FORBID_ENV, adapters_for_call

#: The (name, scale) pairs active on a model.
Adapters = tuple[tuple[str, float], ...]

#: Prefix of the names given to the always-on `lora` entries ("lora:0", "lora:1", ...).
ALWAYS_ON = "lora:"


class LocalLLM(ABC):
    """A model loaded into this process on first use (or `warm_up()`), once, under a lock.

    One model serves one generation at a time: concurrent calls from other threads wait, and a
    stream holds the model until it is exhausted or closed. Choosing the adapters and generating
    happen under the same lock, so a call never sees another call's adapters.
    """

    #: Characters an adapter name may not hold, beyond the reserved prefix.
    _forbidden_in_names = ""

    def __init__(
        self,
        model_path: str | os.PathLike[str] | None,
        *,
        name: str,
        lora: Sequence[tuple[str | os.PathLike[str], float]],
        seed: int | None,
    ) -> None:
        self.model_path = model_path
        self.name = name
        self.lora = [(path, float(scale)) for path, scale in lora]
        self.seed = seed
        #: Named adapters, switched per call with GenerationOptions.adapters (see add_adapter).
        self.adapters: dict[str, Path] = {}
        #: The (name, scale) pairs now active on the model.
        self._active: Adapters = ()
        #: The loaded model (the backend's own object), or None; published last by `_model()`.
        self._loaded: Any = None
        self._load_lock = threading.Lock()
        # A plain Lock, not an RLock: a stream abandoned in one thread may be finalized (and
        # release the lock) in another. `_owner` turns same-thread re-entry into an error.
        self._generate_lock = threading.Lock()
        self._owner: int | None = None

    # --- what a backend supplies -------------------------------------------------------------

    @abstractmethod
    def _source(self) -> Path:
        """The model file (or folder) to load; ModelNotFound, with the fix, when absent."""

    @abstractmethod
    def _load(self) -> Any:
        """Load the model and every registered adapter; return the loaded object."""

    @abstractmethod
    def _unload(self) -> None:
        """Free `self._loaded` and set it to None; called holding both locks, while loaded."""

    @abstractmethod
    def _existing_adapter(self, path: str | os.PathLike[str], key: str) -> Path:
        """`path` as an adapter this backend can load, or ModelNotFound naming config key `key`."""

    @abstractmethod
    def _attach(self, loaded: Any, name: str, path: Path, key: str) -> None:
        """Load adapter `path` under `name` onto the loaded model."""

    @abstractmethod
    def _switch(self, wanted: Adapters) -> None:
        """Make exactly `wanted` active on the loaded model; none = the base model."""

    @abstractmethod
    def _trained_context(self, source: Path) -> int | None:
        """The context `source` was trained for, read without loading it; None if unknown."""

    @abstractmethod
    def _planned_context(self, trained: int | None) -> int:
        """The context the model gets, given the one it was trained for (None = unknown)."""

    @abstractmethod
    def _loaded_context(self) -> int:
        """The context of the loaded model."""

    # --- loading ------------------------------------------------------------------------------

    def warm_up(self) -> None:
        """Load the model (and every adapter) now rather than on the first call."""
        self._model()

    def close(self) -> None:
        """Free the model; the next call loads it again, adapters included."""
        self._refuse_reentry()
        with self._load_lock, self._generate_lock:
            if self._loaded is not None:
                self._unload()

    def _model(self) -> Any:
        loaded = self._loaded
        if loaded is None:
            with self._load_lock:
                if self._loaded is None:
                    self._loaded = self._load()
                loaded = self._loaded
        return loaded

    def _refuse_real_model(self, source: Path) -> None:
        if os.environ.get(FORBID_ENV) == "1":
            raise RealModelForbidden(
                f"refusing to load {source}: a unit test tried to load a real model; "
                "use agentkit.testing.FakeLLM or mark the test with @pytest.mark.real_model"
            )

    @property
    def context_length(self) -> int:
        """Tokens the context holds: once loaded, the loaded model's; before, the size it will get.

        Never loads the model: on Python < 3.12 `isinstance(x, LLM)` reads every protocol member,
        and a type check must not load weights (or trip the unit-test guard). The trained context
        comes from the file's header (or config.json), which costs milliseconds.
        """
        if self._loaded is not None:
            return self._loaded_context()
        if os.environ.get(FORBID_ENV) == "1":
            return self._planned_context(None)
        try:
            source = self._source()
        except ModelNotFound:
            return self._planned_context(None)
        return self._planned_context(self._trained_context(source))

    # --- adapters -----------------------------------------------------------------------------

    def add_adapter(self, name: str, path: str | os.PathLike[str]) -> None:
        """Register a LoRA under `name`, for `GenerationOptions(adapters={name: scale})`.

        It is loaded beside the base model (at once if the model is already loaded); switching
        to it later only changes which adapter weights take part, the base weights stay put.
        """
        self._refuse_reentry()
        with self._load_lock, self._generate_lock:
            self._register(name, path, f"adapters.{name}.path")
            if self._loaded is not None:
                try:
                    self._attach(self._loaded, name, self.adapters[name], f"adapters.{name}")
                except BaseException:
                    del self.adapters[name]  # a failed adapter stays out of adapter_names
                    raise

    @property
    def adapter_names(self) -> list[str]:
        return list(self.adapters)

    @property
    def active_adapters(self) -> dict[str, float]:
        """The adapters active on the model now (name -> scale); always-on ones as "lora:<i>"."""
        return dict(self._active)

    def _register(self, name: str, path: str | os.PathLike[str], key: str) -> None:
        bad = [c for c in self._forbidden_in_names if c in name]
        if not name or name.startswith(ALWAYS_ON) or bad:
            has = f" or has {bad[0]!r}" if bad else ""
            raise InputError(f"adapter name {name!r} is empty or reserved ({ALWAYS_ON}...){has}; pick another name")
        if name in self.adapters:
            raise InputError(f"an adapter named {name!r} is already registered ({self.adapters[name]})")
        self.adapters[name] = self._existing_adapter(path, key)

    def _default_adapters(self) -> Adapters:
        return tuple((f"{ALWAYS_ON}{i}", scale) for i, (_, scale) in enumerate(self.lora))

    def _wanted(self, options: GenerationOptions) -> Adapters:
        """The always-on adapters plus the call's named ones; InputError for an unknown name."""
        return adapters_for_call([scale for _, scale in self.lora], options.adapters, self.adapters, self.name)

    # --- generating ---------------------------------------------------------------------------

    @contextlib.contextmanager
    def _generating(self, adapters: Adapters) -> Iterator[None]:
        """Hold the model for one generation, with these adapters; other threads wait their turn."""
        self._refuse_reentry()
        with self._generate_lock:
            self._switch(adapters)
            self._owner = threading.get_ident()
            try:
                yield
            finally:
                self._owner = None

    def _refuse_reentry(self) -> None:
        if self._owner == threading.get_ident():
            raise RuntimeError(
                f"{self.name} is still generating for an open stream in this thread; "
                "exhaust or close() that stream first"
            )

    def _too_long(self, n_prompt: int, n_ctx: int, trained: int | None) -> PromptTooLong:
        if trained and n_ctx < trained:
            fix = (
                f"raise llm.n_ctx (this model was trained for up to {trained}) "
                "or shorten the question / use fewer passages"
            )
        else:
            fix = "shorten the question or use fewer, shorter passages (n_ctx is already the model's maximum)"
        return PromptTooLong(
            f"the prompt has {n_prompt} tokens but {self.name}'s context holds {n_ctx} (llm.n_ctx); {fix}"
        )
