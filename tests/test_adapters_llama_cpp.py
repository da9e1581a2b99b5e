"""Adapters on the real llama.cpp backend: an exported LoRA switched per call (and per route)
without reloading the base model; the cached prompt never leaks across a switch."""

from __future__ import annotations

import importlib.util
from pathlib import Path

import pytest

# Like pytest.importorskip("peft"), without importing peft (and torch) while collecting: ~10 s.
if importlib.util.find_spec("peft") is None:
    pytest.skip("making an adapter needs the tune extra: pip install 'agentkit[tune]'", allow_module_level=True)

from agentkit import Agent, MemorySource, Passage  # noqa: E402
from agentkit.config import AdapterSpec  # noqa: E402
from agentkit.errors import InputError  # noqa: E402
from agentkit.llm.base import GenerationOptions  # noqa: E402
from agentkit.llm.llama_cpp import LlamaCppLLM  # noqa: E402
from agentkit.types import Message  # noqa: E402

pytestmark = pytest.mark.real_model

QUESTION = [Message("user", "Name three colours of the rainbow.")]
GREEDY = GenerationOptions(max_tokens=24, temperature=0.0)


@pytest.fixture(scope="module")
def adapter(tmp_path_factory: pytest.TempPathFactory, hf_cache: Path) -> Path:
    """A LoRA on the bundled model whose random B matrices change what it says, as GGUF."""
    from agentkit.llm.hf import load_hf_model
    from agentkit.testing import noisy_lora
    from agentkit.tune.export import export_gguf_lora

    folder = tmp_path_factory.mktemp("adapter")
    hf = load_hf_model(device="cpu", cache_dir=hf_cache)
    model = noisy_lora(hf.model, ["q_proj", "v_proj", "o_proj"], std=0.08, seed=3)
    model.save_pretrained(str(folder / "peft"), save_embedding_layers=False)
    return export_gguf_lora(folder / "peft", folder / "noisy.gguf")


@pytest.fixture(scope="module")
def llm(adapter: Path) -> LlamaCppLLM:
    model = LlamaCppLLM(n_ctx=1024, seed=0, adapters={"noisy": adapter})
    yield model
    model.close()


def _say(llm: LlamaCppLLM, adapters: dict[str, float] | None) -> str:
    options = GenerationOptions(max_tokens=GREEDY.max_tokens, temperature=0.0, adapters=adapters)
    return llm.chat(QUESTION, options).text


def test_switching_changes_the_output_and_switching_back_restores_it(llm: LlamaCppLLM) -> None:
    base = _say(llm, None)
    loaded = llm._llama
    adapted = _say(llm, {"noisy": 1.0})
    assert adapted != base
    assert llm.active_adapters == {"noisy": 1.0}
    # Back to the base: the same words as before, so no KV computed with the adapter was reused.
    assert _say(llm, {}) == base
    assert llm.active_adapters == {}
    assert _say(llm, {"noisy": 0.0}) == base  # scale 0 is the base model
    assert _say(llm, {"noisy": 1.0}) == adapted
    # One base model throughout: switching re-points the context, it does not reload.
    assert llm._llama is loaded


def test_streaming_uses_the_adapter_too(llm: LlamaCppLLM) -> None:
    options = GenerationOptions(max_tokens=GREEDY.max_tokens, temperature=0.0, adapters={"noisy": 1.0})
    assert "".join(d.text for d in llm.stream(QUESTION, options)) == _say(llm, {"noisy": 1.0})


def test_unknown_adapters_and_missing_files_are_clear_errors(llm: LlamaCppLLM, tmp_path: Path) -> None:
    with pytest.raises(InputError, match="no adapter named 'other'.*known: noisy"):
        _say(llm, {"other": 1.0})
    with pytest.raises(Exception, match=r"missing\.gguf does not exist; fix the path in adapters\.x\.path"):
        llm.add_adapter("x", tmp_path / "missing.gguf")
    junk = tmp_path / "junk.gguf"
    junk.write_bytes(b"GGUF" + b"\0" * 64)
    with pytest.raises(Exception, match="could not be loaded onto .* fix or remove adapters.junk"):
        llm.add_adapter("junk", junk)


def test_the_route_picks_the_adapter_on_the_real_model(llm: LlamaCppLLM) -> None:
    docs = MemorySource("docs", "colour notes")
    docs.add([Passage(id="c1", text="A rainbow shows red, orange, yellow, green, blue, indigo and violet.", title="Rainbow")])
    notes = MemorySource("notes", "other notes")
    notes.add([Passage(id="n1", text="A rainbow shows red, orange, yellow, green, blue, indigo and violet.", title="Rainbow")])
    agent = Agent(llm, [docs, notes], adapters={"noisy": AdapterSpec(path="unused", sources=["docs"])})
    agent.settings.max_tokens = 40
    agent.settings.temperature = 0.0  # greedy: the same words every run, so only the adapter changes them
    agent.settings.refuse_unsupported = False
    agent.settings.reader = "cot"  # the model's own words, not a quote the two runs share
    with_adapter = agent.ask("Which colours does a rainbow show?", route=["docs"])
    assert with_adapter.adapters == {"noisy": 1.0} and llm.active_adapters == {"noisy": 1.0}
    without = agent.ask("Which colours does a rainbow show?", route=["notes"])
    assert without.adapters == {} and llm.active_adapters == {}
    # Same evidence text, same question: only the adapter differs, and the words do.
    assert with_adapter.withheld or with_adapter.text
    assert (with_adapter.text, with_adapter.reasoning) != (without.text, without.reasoning)
