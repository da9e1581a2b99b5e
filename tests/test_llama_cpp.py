"""Tests of the llama.cpp backend: errors and config without a model, behaviour with SmolLM2.

Tests marked `real_model` share one loaded SmolLM2-135M (module fixture `llm`) to stay fast.
"""

from __future__ import annotations

import json
import re
import struct
import threading
import time
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from pydantic import ValidationError

from agentkit.errors import (
    ConfigError,
    InputError,
    ModelLoadError,
    ModelNotFound,
    PromptTooLong,
    RealModelForbidden,
)
from agentkit.llm.base import LLM, GenerationOptions
from agentkit.llm.llama_cpp import LlamaCppConfig, LlamaCppLLM, LoraConfig
from agentkit.llm.models import FORBID_ENV, bundled_model_path, resolve_model_path
from agentkit.types import Message

QUESTION = [Message("user", "What is the capital of France? Answer in one sentence.")]
STORY = [Message("user", "Write a long story about a cat who learns to sail.")]


@pytest.fixture(scope="module")
def llm() -> LlamaCppLLM:
    model = LlamaCppLLM(seed=1234)
    # Module fixtures are set up before the per-test guard fixture, so lift the guard here.
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv(FORBID_ENV, raising=False)
        model.warm_up()
    return model


# --- without a model --------------------------------------------------------------------


def test_construction_is_cheap_and_names_the_file() -> None:
    model = LlamaCppLLM("~/models/does-not-exist.gguf")
    assert model.name == "does-not-exist"
    assert LlamaCppLLM().name == "SmolLM2-135M-Instruct.Q4_1"
    # isinstance() reads every protocol member, context_length included: it must not load.
    assert isinstance(model, LLM)
    assert LlamaCppLLM(n_ctx=1234).context_length == 1234
    assert "not loaded" in repr(model)


def test_bundled_model_is_found() -> None:
    path = bundled_model_path()
    assert path.is_file() and path.suffix == ".gguf"
    assert resolve_model_path(None) == path


def test_missing_path_raises_model_not_found_naming_it(tmp_path: Path) -> None:
    missing = tmp_path / "nope.gguf"
    with pytest.raises(ModelNotFound, match=r"nope\.gguf does not exist; pass --model PATH"):
        resolve_model_path(missing)
    with pytest.raises(ModelNotFound, match=re.escape(str(missing))):
        LlamaCppLLM(missing).warm_up()
    with pytest.raises(ModelNotFound, match="is a directory"):
        resolve_model_path(tmp_path)


def test_tilde_is_expanded(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("HOME", str(tmp_path))
    (tmp_path / "m.gguf").write_bytes(b"GGUF")
    assert resolve_model_path("~/m.gguf") == tmp_path / "m.gguf"


def test_guard_forbids_loading_real_models() -> None:
    # conftest sets AGENTKIT_FORBID_REAL_MODELS=1 for every test not marked real_model.
    model = LlamaCppLLM()
    with pytest.raises(RealModelForbidden, match=r"use agentkit\.testing\.FakeLLM"):
        model.warm_up()
    with pytest.raises(RealModelForbidden):
        model.chat(QUESTION)
    with pytest.raises(RealModelForbidden):
        model.count_tokens("hello")


def test_garbage_file_raises_model_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FORBID_ENV)  # no real model is loaded here, only a broken file
    bad = tmp_path / "x.gguf"
    bad.write_bytes(b"this is not a model" * 50)
    with pytest.raises(ModelLoadError) as info:
        LlamaCppLLM(bad).warm_up()
    message = str(info.value)
    assert str(bad) in message and "not a GGUF file" in message and "--model PATH" in message


def test_empty_file_raises_model_load_error(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FORBID_ENV)
    empty = tmp_path / "empty.gguf"
    empty.write_bytes(b"")
    with pytest.raises(ModelLoadError, match="the file is empty"):
        LlamaCppLLM(empty).warm_up()


def test_unknown_chat_format_is_a_config_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv(FORBID_ENV)  # rejected before any weights are read
    with pytest.raises(ConfigError, match=r"llm\.chat_format"):
        LlamaCppLLM(chat_format="no-such-format").warm_up()


def test_config_forbids_unknown_keys() -> None:
    with pytest.raises(ValidationError, match="n_ctxx"):
        LlamaCppConfig.model_validate({"backend": "llama_cpp", "n_ctxx": 10})
    with pytest.raises(ValidationError):
        LlamaCppConfig.model_validate({"backend": "transformers"})
    assert LlamaCppLLM.config_model is LlamaCppConfig


def test_from_config_resolves_relative_paths(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = LlamaCppConfig.model_validate(
        {"model_path": "models/m.gguf", "n_ctx": 1024, "seed": 3, "lora": [{"path": "a.gguf", "scale": 0.5}]}
    )
    model = LlamaCppLLM.from_config(config)
    assert Path(model.model_path) == tmp_path / "models" / "m.gguf"  # type: ignore[arg-type]
    assert model.n_ctx == 1024 and model.seed == 3
    assert [(Path(p), s) for p, s in model.lora] == [(tmp_path / "a.gguf", 0.5)]
    assert LlamaCppLLM.from_config(LlamaCppConfig()).model_path is None


def test_lora_accepts_pairs_and_objects() -> None:
    model = LlamaCppLLM(lora=[("a.gguf", 1), LoraConfig(path="b.gguf", scale=0.25)])
    assert model.lora == [("a.gguf", 1.0), ("b.gguf", 0.25)]


# --- the shared local-model base and the one GGUF reader ----------------------------------


def _gguf_header_only(path: Path, arch: str, context_length: int) -> Path:
    """A GGUF v3 file with a header and no tensors: llama.cpp cannot load it, its header reads."""

    def s(text: str) -> bytes:
        return struct.pack("<Q", len(text)) + text.encode()

    body = s("general.architecture") + struct.pack("<I", 8) + s(arch)
    body += s(f"{arch}.context_length") + struct.pack("<II", 4, context_length)
    path.write_bytes(b"GGUF" + struct.pack("<IQQ", 3, 0, 2) + body)
    return path


def test_both_local_backends_share_one_base() -> None:
    from agentkit.llm.local import LocalLLM
    from agentkit.llm.transformers import TransformersLLM

    for backend in (LlamaCppLLM, TransformersLLM):
        assert issubclass(backend, LocalLLM)
        # Locking, re-entry, adapter bookkeeping and the PromptTooLong text live in the base only.
        for member in ("add_adapter", "_generating", "_refuse_reentry", "_too_long", "close", "warm_up", "_register"):
            assert member not in vars(backend), f"{backend.__name__} redefines {member}"


def test_trained_context_comes_from_the_gguf_header(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    # Read by agentkit.llm.gguf, not by a vocab-only llama.cpp load (which refuses this file).
    monkeypatch.delenv(FORBID_ENV)
    model = _gguf_header_only(tmp_path / "tiny.gguf", "qwen2", 2048)
    assert LlamaCppLLM(model, n_ctx=100_000).context_length == 2048
    assert LlamaCppLLM(model, n_ctx=0).context_length == 2048
    assert LlamaCppLLM(model, n_ctx=512).context_length == 512


def test_an_adapter_that_fails_to_load_is_not_registered(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from agentkit.llm import llama_cpp

    def refuse(llama: Any, path: Path, key: str) -> Any:
        raise ModelLoadError(f"LoRA adapter {path} could not be loaded; fix or remove {key}")

    monkeypatch.setattr(llama_cpp, "init_lora", refuse)
    adapter = tmp_path / "other-model.gguf"
    adapter.write_bytes(b"GGUF")
    model = LlamaCppLLM()
    model._loaded = object()  # stands in for a loaded model: add_adapter attaches at once
    with pytest.raises(ModelLoadError, match="other-model.gguf"):
        model.add_adapter("tuned", adapter)
    assert model.adapter_names == []  # before the shared base, "tuned" stayed registered
    with pytest.raises(InputError, match="reserved"):
        model.add_adapter("lora:0", adapter)


def test_local_base_loads_once_refuses_reentry_and_reloads_after_close() -> None:
    from agentkit.llm.local import LocalLLM

    class Toy(LocalLLM):
        loads = 0

        def _source(self) -> Path:
            return Path("toy")

        def _load(self) -> Any:
            time.sleep(0.05)  # wide enough for the other threads to arrive while it loads
            Toy.loads += 1
            return {"n_ctx": 64}

        def _unload(self) -> None:
            self._loaded = None

        def _existing_adapter(self, path: Any, key: str) -> Path:
            return Path(path)

        def _attach(self, loaded: Any, name: str, path: Path, key: str) -> None:
            pass

        def _switch(self, wanted: Any) -> None:
            self._active = wanted

        def _trained_context(self, source: Path) -> int | None:
            return 128

        def _planned_context(self, trained: int | None) -> int:
            return min(64, trained or 64)

        def _loaded_context(self) -> int:
            return int(self._loaded["n_ctx"])

    toy = Toy(None, name="toy", lora=[("a.gguf", 0.5)], seed=None)
    threads = [threading.Thread(target=toy.warm_up) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert Toy.loads == 1 and toy.context_length == 64
    with toy._generating(toy._wanted(GenerationOptions())):
        assert toy.active_adapters == {"lora:0": 0.5}
        with pytest.raises(RuntimeError, match="open stream in this thread"):
            toy.close()
    assert isinstance(toy._too_long(100, 64, 128), PromptTooLong)
    assert "trained for up to 128" in str(toy._too_long(100, 64, 128))
    toy.close()
    assert toy._loaded is None
    toy.warm_up()
    assert Toy.loads == 2



def test_concurrent_requests_share_the_grammar_cache_safely(monkeypatch: pytest.MonkeyPatch) -> None:
    # Requests build their grammar before taking the model, so two server threads meet in the LRU
    # cache. Fault injection: between one thread's lookup of a cached grammar and its move to the
    # recent end, another thread compiles enough new grammars to evict it.
    import collections
    import sys
    import types

    from agentkit.llm import llama_cpp as backend

    fake = types.ModuleType("llama_cpp.llama_grammar")
    fake.LlamaGrammar = types.SimpleNamespace(from_string=lambda gbnf, verbose=False: gbnf)  # type: ignore[attr-defined]
    fake.json_schema_to_gbnf = lambda schema: f"root ::= {schema!r}"  # type: ignore[attr-defined]
    monkeypatch.setitem(sys.modules, "llama_cpp", types.ModuleType("llama_cpp"))
    monkeypatch.setitem(sys.modules, "llama_cpp.llama_grammar", fake)
    monkeypatch.setattr(backend, "_check_grammar", lambda llama, gbnf, what: None)
    llm = backend.LlamaCppLLM()
    hot = GenerationOptions(grammar='root ::= "hot"')
    llm._grammar(None, hot)
    errors: list[BaseException] = []
    others: list[threading.Thread] = []

    def flood() -> None:
        try:
            for i in range(backend.GRAMMAR_CACHE_SIZE + 1):
                llm._grammar(None, GenerationOptions(grammar=f'root ::= "{i}"'))
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    class Interleaved(collections.OrderedDict):  # type: ignore[type-arg]
        def get(self, key: Any, default: Any = None) -> Any:
            found = super().get(key, default)
            if key == 'gbnf:root ::= "hot"' and not others:
                others.append(threading.Thread(target=flood))
                others[0].start()
                others[0].join(0.5)  # with the cache locked it waits for this call to finish
            return found

    llm._grammars = Interleaved(llm._grammars)
    assert llm._grammar(None, hot) == 'root ::= "hot"'  # before the lock: KeyError in move_to_end
    others[0].join(5)
    assert errors == [] and len(llm._grammars) <= backend.GRAMMAR_CACHE_SIZE

# --- with SmolLM2 ------------------------------------------------------------------------


@pytest.mark.real_model
def test_chat_returns_text_and_usage(llm: LlamaCppLLM) -> None:
    out = llm.chat(QUESTION, GenerationOptions(max_tokens=40))
    assert out.text.strip()
    assert out.usage.prompt_tokens == llm.count_message_tokens(QUESTION)
    assert 0 < out.usage.completion_tokens <= 40
    assert out.finish_reason in ("stop", "length")
    assert out.logprobs is None
    assert llm.context_length == 4096


@pytest.mark.real_model
def test_max_tokens_and_stop(llm: LlamaCppLLM) -> None:
    short = llm.chat(STORY, GenerationOptions(max_tokens=5))
    assert short.finish_reason == "length" and short.usage.completion_tokens == 5
    full = llm.chat(STORY, GenerationOptions(max_tokens=60))
    cut = full.text.split(" ")[3]
    stopped = llm.chat(STORY, GenerationOptions(max_tokens=60, stop=[cut]))
    assert stopped.finish_reason == "stop" and cut not in stopped.text
    assert full.text.startswith(stopped.text)


@pytest.mark.real_model
def test_stream_matches_chat(llm: LlamaCppLLM) -> None:
    options = GenerationOptions(max_tokens=60, seed=7)
    chat = llm.chat(STORY, options)
    deltas = list(llm.stream(STORY, options))
    assert len(deltas) > 2
    assert "".join(d.text for d in deltas) == chat.text
    assert all(d.finish_reason is None and d.usage is None for d in deltas[:-1])
    assert deltas[-1].finish_reason == chat.finish_reason
    assert deltas[-1].usage == chat.usage


@pytest.mark.real_model
def test_sampling_is_reproducible_with_a_seed(llm: LlamaCppLLM) -> None:
    options = GenerationOptions(max_tokens=30, temperature=0.9, seed=42)
    first = llm.chat(STORY, options).text
    assert llm.chat(STORY, options).text == first
    assert "".join(d.text for d in llm.stream(STORY, options)) == first


@pytest.mark.real_model
def test_top_k_top_p_and_min_p_reach_the_sampler(llm: LlamaCppLLM) -> None:
    # Each of top_k=1, top_p=0 and min_p=1 leaves only the likeliest token, so hot sampling with
    # any seed gives the greedy text; without them the same seeds wander off it.
    # (llama-cpp-python reads a new prompt in one batch but replays a cached one's last token alone:
    # the tiny difference in the logits can flip a near-tie, so the compared calls all come after one.)
    llm.chat(STORY, GenerationOptions(max_tokens=4))
    greedy = llm.chat(STORY, GenerationOptions(max_tokens=30)).text
    hot = [GenerationOptions(max_tokens=30, temperature=1.5, seed=seed) for seed in (1, 2)]
    assert any(llm.chat(STORY, o).text != greedy for o in hot)
    for narrow in ({"top_k": 1}, {"top_p": 0.0}, {"min_p": 1.0}):
        for options in hot:
            assert llm.chat(STORY, replace(options, **narrow)).text == greedy, narrow
    assert "".join(d.text for d in llm.stream(STORY, replace(hot[0], top_k=1))) == greedy


@pytest.mark.real_model
def test_presence_and_frequency_penalties_change_the_greedy_text(llm: LlamaCppLLM) -> None:
    llm.chat(STORY, GenerationOptions(max_tokens=4))  # see test_top_k_top_p_and_min_p_reach_the_sampler
    greedy = llm.chat(STORY, GenerationOptions(max_tokens=60)).text
    for name in ("presence_penalty", "frequency_penalty"):
        assert llm.chat(STORY, GenerationOptions(max_tokens=60, **{name: 2.0})).text != greedy, name


@pytest.mark.real_model
def test_closing_a_stream_midway_leaves_the_model_usable(llm: LlamaCppLLM) -> None:
    options = GenerationOptions(max_tokens=40)
    expected = llm.chat(QUESTION, options).text
    stream = llm.stream(STORY, GenerationOptions(max_tokens=200))
    got = [next(stream).text for _ in range(3)]
    assert all(got)
    stream.close()
    assert llm.chat(QUESTION, options).text == expected
    # An abandoned-then-closed stream must not block a following stream either.
    assert "".join(d.text for d in llm.stream(QUESTION, options)) == expected
    # Ctrl-C while the consumer is inside the stream.
    stream = llm.stream(STORY, GenerationOptions(max_tokens=200))
    next(stream)
    with pytest.raises(KeyboardInterrupt):
        stream.throw(KeyboardInterrupt)
    assert llm.chat(QUESTION, options).text == expected


@pytest.mark.real_model
def test_a_second_generation_while_a_stream_is_open_is_refused(llm: LlamaCppLLM) -> None:
    stream = llm.stream(STORY, GenerationOptions(max_tokens=50))
    next(stream)
    with pytest.raises(RuntimeError, match="close"):
        llm.chat(QUESTION)
    stream.close()
    assert llm.chat(QUESTION, GenerationOptions(max_tokens=5)).text


@pytest.mark.real_model
def test_grammar_constrains_output(llm: LlamaCppLLM) -> None:
    options = GenerationOptions(grammar='root ::= "yes" | "no"', max_tokens=10)
    for question in ("Is the sky blue?", "Can fish fly?", "Is Paris in France?", "Write a poem."):
        assert llm.chat([Message("user", question)], options).text in ("yes", "no")


@pytest.mark.real_model
def test_invalid_constraints_raise_typed_errors(llm: LlamaCppLLM) -> None:
    with pytest.raises(InputError, match="Undefined rule identifier 'maybe'"):
        llm.chat(QUESTION, GenerationOptions(grammar="root ::= maybe"))
    with pytest.raises(InputError, match="json_schema"):
        llm.chat(QUESTION, GenerationOptions(json_schema={"$ref": "#/definitions/missing"}))
    with pytest.raises(NotImplementedError):
        llm.chat(QUESTION, GenerationOptions(grammar='root ::= "a"', json_schema={"type": "string"}))


SHORT = {"type": "string", "maxLength": 40}
SCHEMA_CASES: list[tuple[str, dict[str, Any]]] = [
    (
        "Describe a person named Alice who is 30.",
        {
            "type": "object",
            "properties": {"name": SHORT, "age": {"type": "integer"}},
            "required": ["name", "age"],
        },
    ),
    (
        "Is water wet?",
        {"type": "object", "properties": {"answer": {"type": "boolean"}}, "required": ["answer"]},
    ),
    (
        "Pick the colour of the sky.",
        {
            "type": "object",
            "properties": {"color": {"enum": ["red", "green", "blue"]}},
            "required": ["color"],
        },
    ),
    (
        "List three fruits.",
        {
            "type": "object",
            "properties": {"fruits": {"type": "array", "items": SHORT, "minItems": 1, "maxItems": 3}},
            "required": ["fruits"],
        },
    ),
    (
        "What is 2 + 2?",
        {"type": "object", "properties": {"result": {"type": "number"}}, "required": ["result"]},
    ),
    (
        "Which sources answer 'who wrote Hamlet': parametric or wiki?",
        {
            "type": "object",
            "properties": {
                "targets": {"type": "array", "items": {"enum": ["parametric", "wiki"]}, "maxItems": 2},
                "confidence": {"type": "number"},
            },
            "required": ["targets", "confidence"],
        },
    ),
    (
        "Give a city and its country.",
        {"type": "object", "properties": {"city": SHORT, "country": SHORT}, "required": ["city", "country"]},
    ),
    (
        "Rate the movie Titanic from 1 to 5.",
        {
            "type": "object",
            "properties": {"rating": {"type": "integer", "minimum": 1, "maximum": 5}},
            "required": ["rating"],
        },
    ),
    ("Name a planet.", {"type": "string", "maxLength": 30}),
    (
        "Give an address.",
        {
            "type": "object",
            "properties": {
                "address": {
                    "type": "object",
                    "properties": {"street": SHORT, "number": {"type": "integer"}},
                    "required": ["street", "number"],
                }
            },
            "required": ["address"],
        },
    ),
]


def _validate(value: Any, schema: dict[str, Any]) -> None:
    """The subset of JSON Schema that SCHEMA_CASES uses (agentkit does not depend on jsonschema)."""
    if "enum" in schema:
        assert value in schema["enum"]
        return
    kind = schema["type"]
    if kind == "object":
        assert isinstance(value, dict)
        assert set(schema.get("required", [])) <= set(value)
        for key, sub in schema.get("properties", {}).items():
            if key in value:
                _validate(value[key], sub)
    elif kind == "array":
        assert isinstance(value, list)
        assert schema.get("minItems", 0) <= len(value) <= schema.get("maxItems", len(value))
        for item in value:
            _validate(item, schema["items"])
    elif kind == "string":
        assert isinstance(value, str) and len(value) <= schema.get("maxLength", len(value))
    elif kind == "integer":
        assert isinstance(value, int) and not isinstance(value, bool)
        assert schema.get("minimum", value) <= value <= schema.get("maximum", value)
    elif kind == "number":
        assert isinstance(value, (int, float)) and not isinstance(value, bool)
    elif kind == "boolean":
        assert isinstance(value, bool)


@pytest.mark.real_model
def test_json_schema_output_parses_and_validates(llm: LlamaCppLLM) -> None:
    for question, schema in SCHEMA_CASES:
        out = llm.chat([Message("user", question)], GenerationOptions(json_schema=schema, max_tokens=200))
        assert out.finish_reason == "stop", (question, out.text)
        _validate(json.loads(out.text), schema)


@pytest.mark.real_model
def test_count_tokens(llm: LlamaCppLLM) -> None:
    assert llm.count_tokens("") == 0
    short, longer = llm.count_tokens("The cat sat."), llm.count_tokens("The cat sat on the mat all day long.")
    assert 0 < short < longer
    assert llm.count_tokens("word " * 100) > llm.count_tokens("word " * 10)
    one = llm.count_message_tokens([Message("user", "hi")])
    two = llm.count_message_tokens(
        [Message("user", "hi"), Message("assistant", "hello"), Message("user", "bye")]
    )
    assert one > llm.count_tokens("hi")  # the template's tokens are counted too
    assert two > one


@pytest.mark.real_model
def test_prompt_too_long_is_a_typed_error(llm: LlamaCppLLM) -> None:
    huge = [Message("user", "word " * 5000)]
    with pytest.raises(PromptTooLong, match=r"the prompt has \d+ tokens .* holds 4096.*llm.n_ctx") as info:
        llm.chat(huge)
    assert isinstance(info.value, InputError)
    with pytest.raises(PromptTooLong):
        llm.stream(huge)  # raised at the call, before the first delta
    assert llm.chat(QUESTION, GenerationOptions(max_tokens=5)).text


@pytest.mark.real_model
def test_logprobs(llm: LlamaCppLLM) -> None:
    out = llm.chat(QUESTION, GenerationOptions(max_tokens=20, logprobs=3))
    assert out.logprobs is not None and len(out.logprobs) == out.usage.completion_tokens
    assert "".join(t.token for t in out.logprobs) == out.text
    for item in out.logprobs:
        assert item.logprob <= 0 and len(item.top) <= 3
        # Greedy decoding picks the most likely token.
        assert item.logprob == pytest.approx(max(item.top.values()))
    chosen_only = llm.chat(QUESTION, GenerationOptions(max_tokens=20, logprobs=0))
    assert chosen_only.logprobs is not None and all(t.top == {} for t in chosen_only.logprobs)
    assert [t.logprob for t in chosen_only.logprobs] == [t.logprob for t in out.logprobs]


@pytest.mark.real_model
def test_logprobs_by_default_when_configured(llm: LlamaCppLLM, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(llm, "logprobs", True)
    out = llm.chat(QUESTION, GenerationOptions(max_tokens=8))
    assert out.logprobs and all(t.top == {} for t in out.logprobs)


@pytest.mark.real_model
def test_concurrent_calls_load_once_and_agree(monkeypatch: pytest.MonkeyPatch) -> None:
    model = LlamaCppLLM(n_ctx=512)
    loads: list[int] = []
    real_load = model._load

    def counting_load() -> Any:
        loads.append(1)
        return real_load()

    monkeypatch.setattr(model, "_load", counting_load)
    options = GenerationOptions(max_tokens=12)
    results: list[str] = []

    def ask() -> None:
        results.append(model.chat(QUESTION, options).text)

    threads = [threading.Thread(target=ask) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(loads) == 1
    assert len(results) == 3 and len(set(results)) == 1
    assert model.context_length == 512


@pytest.mark.real_model
def test_n_ctx_is_capped_at_the_trained_context() -> None:
    model = LlamaCppLLM(n_ctx=100_000)
    assert model.context_length == 8192  # read from the GGUF header, before loading
    model.warm_up()
    assert model.context_length == 8192
    assert LlamaCppLLM(n_ctx=0).context_length == 8192


def _write_lora(path: Path, scale_b: float, seed: int) -> Path:
    """A rank-4 GGUF LoRA on every attn_output of SmolLM2-135M (576 wide, 30 layers)."""
    import numpy as np

    rng = np.random.default_rng(seed)
    tensors = {}
    for layer in range(30):
        # GGUF lists dimensions innermost first, the reverse of numpy's shape.
        tensors[f"blk.{layer}.attn_output.weight.lora_a"] = rng.normal(size=(4, 576))
        tensors[f"blk.{layer}.attn_output.weight.lora_b"] = scale_b * rng.normal(size=(576, 4))

    def text(value: str) -> bytes:
        return struct.pack("<Q", len(value.encode())) + value.encode()

    string, float32 = 8, 6
    kvs = [
        ("general.architecture", string, text("llama")),
        ("general.type", string, text("adapter")),
        ("adapter.type", string, text("lora")),
        ("adapter.lora.alpha", float32, struct.pack("<f", 4.0)),
    ]
    head = bytearray(b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kvs)))
    for key, kind, value in kvs:
        head += text(key) + struct.pack("<I", kind) + value
    data = bytearray()
    for name, array in tensors.items():
        head += text(name) + struct.pack("<I", array.ndim)
        head += b"".join(struct.pack("<Q", d) for d in reversed(array.shape))
        head += struct.pack("<IQ", 0, len(data))  # type F32, offset into the data section
        data += array.astype("<f4").tobytes()
        data += b"\0" * (-len(data) % 32)
    head += b"\0" * (-len(head) % 32)
    path.write_bytes(bytes(head + data))
    return path


@pytest.mark.real_model
def test_several_lora_adapters(llm: LlamaCppLLM, tmp_path: Path) -> None:
    options = GenerationOptions(max_tokens=15)
    base = llm.chat(QUESTION, options).text
    inert = _write_lora(tmp_path / "inert.gguf", scale_b=0.0, seed=1)
    noisy = _write_lora(tmp_path / "noisy.gguf", scale_b=1.0, seed=2)
    assert LlamaCppLLM(lora=[(inert, 1.0), (noisy, 0.0)]).chat(QUESTION, options).text == base
    assert LlamaCppLLM(lora=[(inert, 1.0), (noisy, 1.0)]).chat(QUESTION, options).text != base


@pytest.mark.real_model
def test_bad_lora_adapters(tmp_path: Path) -> None:
    with pytest.raises(ModelNotFound, match="LoRA adapter"):
        LlamaCppLLM(lora=[(tmp_path / "missing.gguf", 1.0)]).warm_up()
    bad = tmp_path / "bad.gguf"
    bad.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(ModelLoadError, match=r"bad\.gguf"):
        LlamaCppLLM(lora=[(bad, 1.0)]).warm_up()
