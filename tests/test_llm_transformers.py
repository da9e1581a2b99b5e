"""Tests of the transformers backend: errors and config without a model, behaviour with SmolLM2,
and PEFT adapters switched per call on one loaded model.

Tests marked `real_model` share one loaded SmolLM2-135M (module fixture `llm`); its GGUF is
dequantized once into a module-wide cache folder, which later loads read back.
"""

from __future__ import annotations

import importlib.util
import json
import statistics
import threading
import time
import warnings
from dataclasses import replace
from pathlib import Path
from typing import Any, NamedTuple

import pytest

from agentkit.config import parse_config
from agentkit.errors import (
    ConfigError,
    InputError,
    MissingDependency,
    ModelNotFound,
    PromptTooLong,
    RealModelForbidden,
)
from agentkit.llm.base import LLM, AdapterLLM, GenerationOptions
from agentkit.llm.gguf import trained_context
from agentkit.llm.models import FORBID_ENV, bundled_model_path
from agentkit.llm.transformers import DEFAULT_CONTEXT, TransformersLLM
from agentkit.plugins import build_llm, registry
from agentkit.types import Message

QUESTION = [Message("user", "What is the capital of France? Answer in one sentence.")]
STORY = [Message("user", "Write a long story about a cat who learns to sail.")]


@pytest.fixture(scope="module")
def cache_dir(hf_cache: Path) -> Path:
    return hf_cache  # the session's dequantized copy of the bundled model (tests/conftest.py)


@pytest.fixture(scope="module")
def llm(cache_dir: Path) -> TransformersLLM:
    pytest.importorskip("torch", reason="the gpu extra is not installed: pip install 'agentkit[gpu]'")
    pytest.importorskip("transformers", reason="the gpu extra is not installed: pip install 'agentkit[gpu]'")
    model = TransformersLLM(cache_dir=cache_dir, seed=1234)
    # Module fixtures are set up before the per-test guard fixture, so lift the guard here.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(FORBID_ENV, raising=False)
        model.warm_up()
    return model


class Adapter(NamedTuple):
    path: Path
    #: Seconds a fresh load of the base model took (from the dequantized cache).
    base_load_s: float


@pytest.fixture(scope="module")
def adapter(llm: TransformersLLM, cache_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Adapter:
    """A LoRA for SmolLM2 whose B matrices are seeded random (PEFT starts them at zero, a no-op)."""
    pytest.importorskip("peft", reason="adapters need peft, in the gpu extra: pip install 'agentkit[gpu]'")
    from agentkit.llm.hf import load_hf_model
    from agentkit.testing import noisy_lora

    start = time.perf_counter()
    fresh = load_hf_model(cache_dir=cache_dir)  # a copy: get_peft_model changes the model it wraps
    base_load_s = time.perf_counter() - start
    with warnings.catch_warnings():  # peft 0.21 calls a method transformers 5 deprecates
        warnings.simplefilter("ignore", FutureWarning)
        model = noisy_lora(fresh.model, ["q_proj", "v_proj"], std=0.05, seed=0)
    folder = tmp_path_factory.mktemp("adapter")
    model.save_pretrained(str(folder))
    return Adapter(folder, base_load_s)


def fake_adapter(folder: Path) -> Path:
    """Enough of a PEFT folder to pass registration (which only checks that it is there)."""
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "adapter_config.json").write_text("{}", encoding="utf-8")
    return folder


# --- without a model --------------------------------------------------------------------


def test_construction_is_cheap_and_names_the_model(tmp_path: Path) -> None:
    model = TransformersLLM("~/models/does-not-exist.gguf")
    assert model.name == "does-not-exist"
    assert TransformersLLM().name == "SmolLM2-135M-Instruct.Q4_1"
    assert TransformersLLM(tmp_path / "my-model").name == "my-model"
    # isinstance() reads every protocol member, context_length included: it must not load.
    assert isinstance(model, LLM) and isinstance(model, AdapterLLM)
    assert TransformersLLM(n_ctx=1234).context_length == 1234
    assert TransformersLLM().context_length == DEFAULT_CONTEXT
    assert "not loaded" in repr(model)


def test_context_length_is_read_without_loading(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FORBID_ENV)
    assert trained_context(bundled_model_path()) == 8192
    assert TransformersLLM().context_length == 8192
    assert TransformersLLM(n_ctx=512).context_length == 512
    assert TransformersLLM(n_ctx=100_000).context_length == 8192  # capped at the trained context
    folder = tmp_path / "hf-model"
    folder.mkdir()
    (folder / "config.json").write_text(json.dumps({"max_position_embeddings": 2048}), encoding="utf-8")
    model = TransformersLLM(folder)
    assert model.context_length == 2048
    assert model._hf is None


def test_guard_forbids_loading_real_models() -> None:
    with pytest.raises(RealModelForbidden, match="real_model"):
        TransformersLLM().warm_up()


def test_missing_model_is_model_not_found(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="llm.model_path"):
        TransformersLLM(tmp_path / "nope.gguf").warm_up()
    with pytest.raises(ModelNotFound, match="config.json"):
        TransformersLLM(tmp_path).warm_up()


def test_missing_adapter_names_the_config_key(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match=r"adapters\.tuned\.path"):
        TransformersLLM(adapters={"tuned": tmp_path / "nope"})
    with pytest.raises(ModelNotFound, match=r"llm\.lora\[0\]\.path"):
        TransformersLLM(lora=[(tmp_path / "nope", 1.0)]).warm_up()
    with pytest.raises(ModelNotFound, match=r"adapters\.tuned\.path"):
        TransformersLLM().add_adapter("tuned", tmp_path)  # a folder, but no adapter_config.json


def test_adapter_names_are_checked(tmp_path: Path) -> None:
    model = TransformersLLM(adapters={"tuned": fake_adapter(tmp_path / "a")})
    assert model.adapter_names == ["tuned"]
    for bad in ("", "lora:0", "a.b", "tuned"):
        with pytest.raises(InputError):
            model.add_adapter(bad, tmp_path / "a")
    # Checked before anything loads (the guard would raise RealModelForbidden otherwise).
    with pytest.raises(InputError, match=r"'nope'.*known: tuned"):
        model.chat(QUESTION, GenerationOptions(adapters={"nope": 1.0}))


def test_missing_torch_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "torch" else real(name, *a))
    with pytest.raises(MissingDependency, match=r"agentkit\[gpu\]"):
        TransformersLLM().warm_up()


def test_peft_is_needed_only_to_attach_an_adapter(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec", lambda name, *a: None if name == "peft" else real(name, *a))
    # Without adapters the load goes past the dependency check (to the unit-test guard here).
    with pytest.raises(RealModelForbidden):
        TransformersLLM().warm_up()
    adapter = fake_adapter(tmp_path / "a")
    with pytest.raises(MissingDependency, match=r"peft.*agentkit\[gpu\]"):
        TransformersLLM()._attach(None, "tuned", adapter, "adapters.tuned.path")  # type: ignore[arg-type]


def test_grammar_and_json_schema_are_refused_not_ignored() -> None:
    model = TransformersLLM()
    for options in (GenerationOptions(grammar='root ::= "yes"'), GenerationOptions(json_schema={"type": "object"})):
        with pytest.raises(NotImplementedError, match="llama_cpp"):
            model.chat(QUESTION, options)
        with pytest.raises(NotImplementedError, match="llama_cpp"):
            model.stream(QUESTION, options)


def test_config_selects_and_validates_the_backend(tmp_path: Path) -> None:
    assert registry().llm("transformers") is TransformersLLM
    tuned = fake_adapter(tmp_path / "tuned")
    config = parse_config(
        f"""
llm:
  backend: transformers
  model_path: {tmp_path / "model.gguf"}
  device: cpu
  dtype: float32
  n_ctx: 2048
  lora: [{{path: {tuned}, scale: 0.5}}]
  cache_dir: {tmp_path / "cache"}
  seed: 7
"""
    )
    model = build_llm(config.llm)
    assert isinstance(model, TransformersLLM)
    assert (model.n_ctx, model.device, model.seed) == (2048, "cpu", 7)
    assert model.lora == [(tuned, 0.5)]
    assert model.cache_dir == tmp_path / "cache"

    with pytest.raises(ConfigError, match=r"unknown key 'n_gpu_layers'.*model_path"):
        parse_config("llm: {backend: transformers, n_gpu_layers: 10}")
    with pytest.raises(ConfigError, match="dtype"):
        parse_config("llm: {backend: transformers, dtype: float8}")


# --- with SmolLM2 -----------------------------------------------------------------------


@pytest.mark.real_model
def test_answers_a_simple_question(llm: TransformersLLM) -> None:
    completion = llm.chat(QUESTION, GenerationOptions(max_tokens=32))
    assert "Paris" in completion.text
    assert completion.finish_reason == "stop"
    assert completion.usage.prompt_tokens == llm.count_message_tokens(QUESTION)
    assert 0 < completion.usage.completion_tokens <= 32
    assert "loaded on" in repr(llm)


@pytest.mark.real_model
def test_counts_the_rendered_prompt(llm: TransformersLLM) -> None:
    assert llm._hf is not None
    messages = [m.to_dict() for m in QUESTION]
    rendered = llm._hf.tokenizer.apply_chat_template(messages, add_generation_prompt=True, return_dict=False)
    assert llm.count_message_tokens(QUESTION) == len(rendered)
    assert llm.count_tokens("") == 0
    assert 0 < llm.count_tokens("Paris is the capital of France.") < 12


@pytest.mark.real_model
def test_stream_yields_the_chat_text(llm: TransformersLLM) -> None:
    options = GenerationOptions(max_tokens=32)
    deltas = list(llm.stream(QUESTION, options))
    completion = llm.chat(QUESTION, options)
    assert "".join(d.text for d in deltas) == completion.text
    assert len(deltas) > 2
    assert all(d.finish_reason is None and d.usage is None for d in deltas[:-1])
    assert deltas[-1].finish_reason == "stop"
    assert deltas[-1].usage == completion.usage


@pytest.mark.real_model
def test_closing_a_stream_stops_generation(llm: TransformersLLM) -> None:
    import torch

    assert llm._hf is not None
    forwards: list[int] = []
    hook = llm._hf.model.register_forward_hook(lambda *_: forwards.append(1))
    try:
        stream = llm.stream(STORY, GenerationOptions(max_tokens=200))
        for _ in range(3):
            next(stream)
            assert not torch.is_inference_mode_enabled()  # the caller's code runs in its own mode
        with pytest.raises(RuntimeError, match="open stream"):
            llm.chat(QUESTION)  # the same thread, while its own stream holds the model
        stream.close()
        assert len(forwards) < 10  # not the 200 the stream was allowed
        assert not llm._generate_lock.locked()
        assert llm.chat(QUESTION, GenerationOptions(max_tokens=2)).usage.completion_tokens == 2
    finally:
        hook.remove()


@pytest.mark.real_model
def test_stop_strings_cut_the_text(llm: TransformersLLM) -> None:
    full = llm.chat(QUESTION, GenerationOptions(max_tokens=12)).text
    for stop in (" is", "ance i"):  # one token, and one that spans tokens
        options = GenerationOptions(max_tokens=12, stop=["never appears", stop])
        completion = llm.chat(QUESTION, options)
        assert completion.text == full[: full.index(stop)]
        assert completion.finish_reason == "stop"
        assert "".join(d.text for d in llm.stream(QUESTION, options)) == completion.text


@pytest.mark.real_model
def test_max_tokens_and_the_context_end_generation(llm: TransformersLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    completion = llm.chat(STORY, GenerationOptions(max_tokens=5))
    assert (completion.finish_reason, completion.usage.completion_tokens) == ("length", 5)
    n_prompt = llm.count_message_tokens(STORY)
    monkeypatch.setattr(llm, "n_ctx", n_prompt + 3)
    completion = llm.chat(STORY, GenerationOptions(max_tokens=50))
    assert (completion.finish_reason, completion.usage.completion_tokens) == ("length", 3)


@pytest.mark.real_model
def test_over_long_prompt_is_prompt_too_long(llm: TransformersLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "n_ctx", 16)
    with pytest.raises(PromptTooLong, match=r"llm\.n_ctx.*trained for up to 8192"):
        llm.chat(QUESTION)
    with pytest.raises(PromptTooLong):
        llm.stream(QUESTION)  # raised at the call, before the first next()


@pytest.mark.real_model
def test_temperature_zero_is_deterministic_and_seeds_are_honoured(llm: TransformersLLM) -> None:
    greedy = GenerationOptions(max_tokens=8, logprobs=0)
    assert llm.chat(STORY, greedy) == llm.chat(STORY, greedy)

    def sample(seed: int) -> str:
        return llm.chat(STORY, GenerationOptions(max_tokens=6, temperature=1.5, seed=seed)).text

    assert sample(7) == sample(7)
    assert len({sample(seed) for seed in range(4)}) > 1


@pytest.mark.real_model
def test_logprobs_join_up_to_the_text(llm: TransformersLLM) -> None:
    completion = llm.chat(QUESTION, GenerationOptions(max_tokens=8, logprobs=3))
    assert completion.logprobs is not None
    assert "".join(t.token for t in completion.logprobs) == completion.text
    for token in completion.logprobs:
        assert token.logprob <= 0.0
        assert len(token.top) == 3
        assert token.logprob == pytest.approx(max(token.top.values()))  # greedy picks the best
    assert llm.chat(QUESTION, GenerationOptions(max_tokens=8)).logprobs is None

    # Each emoji takes several tokens: the pieces still join up, in chat and in stream.
    emojis = [Message("user", "Reply with three cat emojis and nothing else.")]
    options = GenerationOptions(max_tokens=9, logprobs=0)
    completion = llm.chat(emojis, options)
    assert completion.logprobs is not None
    assert "".join(t.token for t in completion.logprobs) == completion.text
    assert "".join(d.text for d in llm.stream(emojis, options)) == completion.text


@pytest.mark.real_model
def test_repeat_penalty_changes_the_choice(llm: TransformersLLM) -> None:
    # The answer repeats the question's words ("The capital of France"); a penalty steers away.
    plain = llm.chat(QUESTION, GenerationOptions(max_tokens=4))
    penalised = llm.chat(QUESTION, GenerationOptions(max_tokens=4, repeat_penalty=1.5))
    assert penalised.text != plain.text


@pytest.mark.real_model
def test_top_k_top_p_and_min_p_narrow_sampling_to_the_likeliest_token(llm: TransformersLLM) -> None:
    greedy = llm.chat(STORY, GenerationOptions(max_tokens=12)).text
    hot = [GenerationOptions(max_tokens=12, temperature=1.5, seed=seed) for seed in (1, 2)]
    assert any(llm.chat(STORY, o).text != greedy for o in hot)
    for narrow in ({"top_k": 1}, {"top_p": 0.0}, {"min_p": 1.0}):
        for options in hot:
            assert llm.chat(STORY, replace(options, **narrow)).text == greedy, narrow


@pytest.mark.real_model
def test_presence_and_frequency_penalties_count_the_generated_tokens(llm: TransformersLLM) -> None:
    greedy = llm.chat(STORY, GenerationOptions(max_tokens=40)).text
    for name in ("presence_penalty", "frequency_penalty"):
        penalised = llm.chat(STORY, GenerationOptions(max_tokens=40, **{name: 2.0})).text
        # Nothing is generated before the first token: the penalty starts once the reply repeats.
        assert penalised != greedy and penalised.split()[0] == greedy.split()[0], name


@pytest.mark.real_model
def test_concurrent_calls_take_turns(llm: TransformersLLM) -> None:
    options = GenerationOptions(max_tokens=4)
    expected = llm.chat(QUESTION, options).text
    results: list[str] = []
    threads = [threading.Thread(target=lambda: results.append(llm.chat(QUESTION, options).text)) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [expected] * 3


# --- adapters ---------------------------------------------------------------------------


def _options(adapters: dict[str, float] | None) -> GenerationOptions:
    return GenerationOptions(max_tokens=6, logprobs=0, adapters=adapters)


def _logprobs(completion: Any) -> list[float]:
    return [t.logprob for t in completion.logprobs]


def _tolerance(llm: TransformersLLM) -> float:
    """For logprobs computed two ways (float32 on a CPU, bfloat16 on a GPU); this adapter moves
    them by 0.02 to 0.1."""
    assert llm._hf is not None
    return 1e-3 if llm._hf.device == "cpu" else 1e-2


@pytest.mark.real_model
def test_adapters_switch_per_call_without_reloading(llm: TransformersLLM, adapter: Adapter) -> None:
    assert llm._hf is not None
    base_model = llm._hf.model
    llm.add_adapter("x", adapter.path)
    assert llm.adapter_names == ["x"]

    base = llm.chat(QUESTION, _options({}))
    tuned = llm.chat(QUESTION, _options({"x": 1.0}))
    assert llm.active_adapters == {"x": 1.0}
    assert _logprobs(tuned) != _logprobs(base)
    assert llm.chat(QUESTION, _options({})) == base  # switching back: the base output, exactly
    assert llm.chat(QUESTION, _options({"x": 0.0})) == base
    assert llm.chat(QUESTION, _options(None)) == base  # no always-on adapters configured
    assert llm.chat(QUESTION, _options({"x": 1.0})) == tuned
    assert "".join(d.text for d in llm.stream(QUESTION, _options({"x": 1.0}))) == tuned.text
    assert llm._hf.model is base_model
    assert llm._peft.get_base_model() is base_model

    switches = []
    for wanted in [(("x", 1.0),), ()] * 10:
        start = time.perf_counter()
        llm._switch(wanted)
        switches.append(time.perf_counter() - start)
    switch_ms = statistics.median(switches) * 1000
    print(
        f"\nadapter switch: median {switch_ms:.2f} ms (max {max(switches) * 1000:.2f} ms); "
        f"base-model load from the dequantized cache: {adapter.base_load_s:.2f} s"
    )
    assert switch_ms < adapter.base_load_s * 1000


@pytest.mark.real_model
def test_several_adapters_add_up_with_their_scales(llm: TransformersLLM, adapter: Adapter) -> None:
    if "x" not in llm.adapter_names:
        llm.add_adapter("x", adapter.path)
    llm.add_adapter("y", adapter.path)  # the same weights under a second name
    double = llm.chat(QUESTION, _options({"x": 2.0}))
    both = llm.chat(QUESTION, _options({"x": 1.0, "y": 1.0}))
    assert _logprobs(both) == pytest.approx(_logprobs(double), abs=_tolerance(llm))
    halves = llm.chat(QUESTION, _options({"x": 0.5, "y": 0.5}))
    one = llm.chat(QUESTION, _options({"x": 1.0}))
    assert _logprobs(halves) == pytest.approx(_logprobs(one), abs=_tolerance(llm))
    assert _logprobs(one) != pytest.approx(_logprobs(double), abs=_tolerance(llm))
    assert llm.active_adapters == {"x": 1.0}


@pytest.mark.real_model
def test_always_on_lora_from_the_config(llm: TransformersLLM, adapter: Adapter, cache_dir: Path) -> None:
    if "x" not in llm.adapter_names:
        llm.add_adapter("x", adapter.path)
    tuned = llm.chat(QUESTION, _options({"x": 1.0}))
    config = parse_config(
        f"llm: {{backend: transformers, cache_dir: {cache_dir}, lora: [{{path: {adapter.path}, scale: 1.0}}]}}"
    )
    model = build_llm(config.llm)
    try:
        # None and {} both mean the always-on adapters alone (GenerationOptions.adapters).
        assert _logprobs(model.chat(QUESTION, _options(None))) == pytest.approx(_logprobs(tuned), abs=_tolerance(llm))
        assert model.chat(QUESTION, _options({})) == model.chat(QUESTION, _options(None))
        assert model.active_adapters == {"lora:0": 1.0}
        assert model.adapter_names == []
    finally:
        model.close()
    assert "not loaded" in repr(model)
