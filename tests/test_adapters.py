"""LoRA adapters bound to sources and route classes: config, agent selection, backend switching."""

from __future__ import annotations

from pathlib import Path

import pytest

from agentkit import Agent, MemorySource, Passage
from agentkit.config import AdapterSpec, parse_config
from agentkit.errors import ConfigError, InputError
from agentkit.knowledge.dictionary import DictionarySource
from agentkit.llm.base import GenerationOptions
from agentkit.testing import FakeLLM
from agentkit.types import Message


@pytest.fixture
def sources(tmp_path: Path) -> dict[str, object]:
    docs = MemorySource("docs", "agentkit documentation")
    docs.add([Passage(id="d1", text="agentkit stores passages in Qdrant by default.", title="Storage")])
    notes = MemorySource("notes", "meeting notes")
    notes.add([Passage(id="n1", text="The review meeting moved to Thursday.", title="Meeting")])
    terms = tmp_path / "terms.csv"
    terms.write_text("term,definition\nlambaste,to beat with a cane\n", encoding="utf-8")
    return {"docs": docs, "notes": notes, "glossary": DictionarySource("glossary", glossaries=[terms])}


def _agent(sources: dict[str, object], adapters: dict[str, AdapterSpec]) -> tuple[Agent, FakeLLM]:
    llm = FakeLLM()
    for name in adapters:
        llm.add_adapter(name, f"/adapters/{name}.gguf")
    return Agent(llm, sources, adapters=adapters), llm  # type: ignore[arg-type]


BINDINGS = {
    "docs-style": AdapterSpec(path="docs.gguf", sources=["docs"], scale=0.8),
    "definitions": AdapterSpec(path="defs.gguf", routes=["dictionary"]),
    "chat": AdapterSpec(path="chat.gguf", default=True),
}


@pytest.mark.parametrize(
    ("route", "expected"),
    [
        (["docs"], {"docs-style": 0.8}),          # bound to the source
        (["docs", "notes"], {"docs-style": 0.8}),  # one of the routed sources is bound
        (["glossary"], {"definitions": 1.0}),     # bound to the route class
        (["notes"], {"chat": 1.0}),               # nothing bound: the default
        (["parametric"], {"chat": 1.0}),
    ],
)
def test_the_route_selects_the_adapter_for_generation(sources, route, expected) -> None:
    agent, llm = _agent(sources, BINDINGS)
    answer = agent.ask("What is lambaste in the docs?", route=route)
    assert answer.adapters == expected
    # The answer's generation call (the last one) carried exactly that selection.
    assert llm.calls[-1][1].adapters == expected


def test_no_binding_and_no_default_means_the_base_model(sources) -> None:
    agent, llm = _agent(sources, {"docs-style": AdapterSpec(path="a.gguf", sources=["docs"])})
    answer = agent.ask("When is the review meeting?", route=["notes"])
    assert answer.adapters == {}
    assert llm.calls[-1][1].adapters is None
    assert agent.ask("Where are passages stored?", route=["docs"]).adapters == {"docs-style": 1.0}


def test_the_router_decision_selects_the_adapter(sources) -> None:
    # No forced route: the router sends a definition request to the dictionary.
    agent, _ = _agent(sources, BINDINGS)
    answer = agent.ask("Define the word lambaste.")
    assert answer.route is not None and answer.route.targets == ["glossary"]
    assert answer.adapters == {"definitions": 1.0}
    assert answer.to_dict()["adapters"] == {"definitions": 1.0}


def test_adapters_bound_to_unknown_sources_or_unregistered_are_errors(sources) -> None:
    with pytest.raises(ConfigError, match="adapters.x.sources: no source named 'wiki'"):
        _agent(sources, {"x": AdapterSpec(path="x.gguf", sources=["wiki"])})
    with pytest.raises(ConfigError, match="bound but the model has no such adapter"):
        Agent(FakeLLM(), sources, adapters={"x": AdapterSpec(path="x.gguf")})  # type: ignore[arg-type]


def test_backends_refuse_unknown_adapter_names() -> None:
    llm = FakeLLM("hi")
    with pytest.raises(InputError, match="no adapter named 'nope'"):
        llm.chat([Message("user", "hi")], GenerationOptions(adapters={"nope": 1.0}))


CONFIG = """
llm: {backend: fake}
sources:
  docs: {type: memory, description: docs}
adapters:
  docs-style: {path: adapters/docs.gguf, sources: [docs]}
  defs: {path: /abs/defs.gguf, routes: [dictionary], scale: 0.5}
"""


def test_config_adapters_section(tmp_path: Path) -> None:
    file = tmp_path / "agentkit.yaml"
    file.write_text(CONFIG, encoding="utf-8")
    cfg = parse_config(CONFIG, origin=str(file))
    assert cfg.adapters["defs"].scale == 0.5 and cfg.adapters["defs"].routes == ["dictionary"]
    # Relative adapter paths are read from the config file's folder.
    assert cfg.resolve_path(cfg.adapters["docs-style"].path) == tmp_path / "adapters/docs.gguf"
    agent = Agent.from_config(cfg)
    assert agent.llm.adapter_names == ["docs-style", "defs"]  # type: ignore[attr-defined]
    assert agent.llm.adapters["docs-style"] == str(tmp_path / "adapters/docs.gguf")  # type: ignore[attr-defined]
    assert agent.ask("anything?", route=["docs"]).adapters == {"docs-style": 1.0}


@pytest.mark.parametrize(
    ("snippet", "message"),
    [
        ("adapters: {a: {path: a.gguf, sources: [wiki]}}", "adapters.a.sources: no source named 'wiki'"),
        ("adapters: {a: {path: a.gguf, routes: [search]}}", "adapters.a.routes.0"),
        ("adapters: {a: {path: a.gguf, weight: 2}}", "unknown key 'weight'"),
        ("adapters: {a: {sources: [docs]}}", "adapters.a.path: Field required"),
    ],
)
def test_bad_adapter_config_names_the_key(snippet: str, message: str) -> None:
    text = "llm: {backend: fake}\nsources:\n  docs: {type: memory}\n" + snippet
    with pytest.raises(ConfigError, match=message.replace(".", r"\.")):
        parse_config(text, origin="x.yaml")


def test_a_backend_that_cannot_switch_adapters_is_a_config_error(tmp_path: Path) -> None:
    text = "llm: {backend: openai_compat, base_url: 'http://127.0.0.1:9/v1', model: m}\nadapters: {a: {path: a.gguf}}\n"
    with pytest.raises(ConfigError, match="cannot switch LoRA adapters"):
        Agent.from_config(parse_config(text, origin="x.yaml"))
