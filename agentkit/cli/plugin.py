"""`agentkit plugins` (what is installed and what it registered) and `agentkit plugin new` (a skeleton).

Also the lookup of commands that plugins add through `register_commands`, used by the `agentkit` group.
"""

from __future__ import annotations

import json
import keyword
import re
from pathlib import Path
from string import Template

import click

#: How each hook is shown.
LABELS = {
    "register_llms": "llms",
    "register_knowledge": "knowledge",
    "register_routers": "routers",
    "register_tools": "tools",
    "register_commands": "commands",
}


def plugin_commands(reserved: set[str] | frozenset[str] = frozenset()) -> dict[str, click.Command]:
    """Commands plugins registered, minus `reserved` (built-in names win). Costs one entry-point
    scan when no plugin is installed; otherwise the plugins are imported."""
    from importlib.metadata import entry_points

    if not entry_points(group="agentkit"):
        return {}
    from agentkit.plugins import registry

    found: dict[str, click.Command] = {}
    reg = registry()
    for name in reg.command_table:
        if name in reserved:
            continue
        try:
            command = reg._resolve(reg.command_table, name, "plugins", "command")
        except Exception:  # noqa: BLE001, S112 - a broken command must not break `agentkit --help`
            continue  # _resolve turns anything a plugin module raises, even SystemExit, into ConfigError
        if isinstance(command, click.Command):
            found[name] = command
    return found


@click.command("plugins")
@click.option("--json", "as_json", is_flag=True, help="Print the list as JSON.")
def plugins_command(as_json: bool) -> None:
    """List installed plugins, their versions, what each registered, and any that failed to load.

    AGENTKIT_PLUGINS=a,b loads only the plugins named (entry-point or package names).
    """
    from agentkit.plugins import registry

    reg = registry()
    if as_json:
        click.echo(json.dumps([p.to_dict() for p in reg.plugins.values()], indent=2))
        return
    for info in reg.plugins.values():
        package = f" ({info.package})" if info.package and info.package != info.name else ""
        click.echo(f"{info.name} {info.version or '?'}{package}")
        for hook, names in info.registered.items():
            click.echo(f"  {LABELS.get(hook, hook)}: {', '.join(names)}")
        if info.error:
            click.secho(f"  failed: {info.error}", fg="red")
    if reg.failures:
        click.secho(f"{len(reg.failures)} plugin(s) failed to load; agentkit works without them", fg="red", err=True)


@click.group("plugin")
def plugin_group() -> None:
    """Write a new plugin skeleton."""


@plugin_group.command("new")
@click.argument("name")
@click.option("--kind", type=click.Choice(["knowledge", "tool", "llm"]), required=True, help="What the plugin registers.")
@click.option("--dir", "directory", type=click.Path(file_okay=False, path_type=Path), default=Path("."),
              show_default=True, help="Where to create the package folder.")
def new_plugin(name: str, kind: str, directory: Path) -> None:
    """Create NAME/ (e.g. agentkit-weather): pyproject.toml, the module, a README and passing tests."""
    from agentkit.errors import InputError

    try:
        root = write_skeleton(name, kind, directory)
    except ValueError as exc:
        raise InputError(str(exc)) from None
    click.echo(f"created {root}")
    click.echo(f"next: pip install -e {root} && python -m pytest {root / 'tests'} && agentkit plugins")


# --- skeletons --------------------------------------------------------------------------------

_NAME = re.compile(r"^[a-z][a-z0-9]*(?:[-_][a-z0-9]+)*$")
#: Longer names make file names (tests/test_NAME_knowledge.py) past what file systems allow,
#: and no one types them.
MAX_NAME = 60
#: Names the generated module imports or defines: a tool function of that name would replace them
#: (and a knowledge source `memory` would define MemorySource over the one it wraps).
_TAKEN = {
    "tool": {"annotations", "hookimpl", "tool", "register_tools", "ToolError"},
    "knowledge": {"memory"},
}


def check_name(name: str, kind: str = "tool") -> str:
    """The plugin's short name (the module, function and registered name) from NAME, or a
    ValueError saying which Python rule NAME breaks and what would do."""
    example = "e.g. agentkit-weather"
    if len(name) > MAX_NAME:
        raise ValueError(f"plugin name {name[:20]!r}... is {len(name)} characters; use at most {MAX_NAME}, {example}")
    if not _NAME.match(name):
        raise ValueError(f"plugin name {name!r}: use lower-case letters, digits and dashes, {example}")
    short = re.sub(r"^agentkit[-_]", "", name).replace("-", "_")
    if not short.isidentifier():
        raise ValueError(f"plugin name {name!r}: {short!r} must start with a letter to be a Python name, "
                         f"e.g. agentkit-nine-lives")
    if keyword.iskeyword(short):
        raise ValueError(f"plugin name {name!r}: {short!r} is a Python keyword; add a word, "
                         f"e.g. agentkit-{short.replace('_', '-')}-plugin")
    if short in _TAKEN.get(kind, ()):
        raise ValueError(f"plugin name {name!r}: the generated {kind} plugin already uses the name {short!r}; "
                         f"add a word, e.g. agentkit-{short.replace('_', '-')}-plugin")
    return short


def write_skeleton(name: str, kind: str, directory: Path) -> Path:
    """Write a plugin package of `kind` to directory/<dist>/ and return that folder."""
    short = check_name(name, kind)
    dist = f"agentkit-{short.replace('_', '-')}"
    module = dist.replace("-", "_")
    names = {
        "dist": dist,
        "module": module,
        "short": short,
        "cls": "".join(part.title() for part in short.split("_")),
        "kind": kind,
    }
    root = Path(directory) / dist
    if root.exists():
        raise ValueError(f"{root} already exists; choose another name or --dir")
    files = {
        "pyproject.toml": _PYPROJECT,
        "README.md": _README[kind],
        f"{module}/__init__.py": _MODULE[kind],
        f"tests/test_{short}_{kind}.py": _TEST[kind],
    }
    for rel, text in files.items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(Template(text).substitute(names), encoding="utf-8")
    return root


_PYPROJECT = """\
[build-system]
requires = ["setuptools>=68"]
build-backend = "setuptools.build_meta"

[project]
name = "$dist"
version = "0.1.0"
description = "An agentkit plugin ($kind)."
readme = "README.md"
requires-python = ">=3.10"
dependencies = ["agentkit"]

[project.optional-dependencies]
test = ["pytest>=8"]

# agentkit finds plugins through this entry-point group.
[project.entry-points.agentkit]
$short = "$module"

[tool.setuptools]
packages = ["$module"]
"""

_README = {
    "knowledge": """\
# $dist

An agentkit knowledge source, registered as source type `$short`.

```bash
pip install -e .
agentkit plugins            # shows: $short ... knowledge: $short
```

```yaml
sources:
  notes:
    type: $short
    description: What this source knows about.
```

Replace the in-memory index in `$module/__init__.py` with your backend. The tests subclass
agentkit's `WritableSourceContract`: `python -m pytest tests`.
""",
    "tool": """\
# $dist

An agentkit tool, `$short`, that the agent can call through grammar-constrained JSON.

```bash
pip install -e .
agentkit plugins            # shows: $short ... tools: $short
```

```yaml
tools: [$short]
agent: {max_steps: 3}
```

The tool's JSON schema comes from its type hints and docstring (`@tool`). Run the tests with
`python -m pytest tests`.
""",
    "llm": """\
# $dist

An agentkit model backend, `llm: {backend: $short}`. This skeleton echoes the question; replace
`chat` and `stream` in `$module/__init__.py` with calls to your model.

```bash
pip install -e .
agentkit plugins            # shows: $short ... llms: $short
```

Run the tests with `python -m pytest tests`.
""",
}

_MODULE = {
    "knowledge": '''\
"""$dist: a knowledge source for agentkit, registered as source type `$short`."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from agentkit.knowledge.base import Filters
from agentkit.knowledge.memory import MemorySource
from agentkit.plugins import hookimpl
from agentkit.types import Passage


class ${cls}Config(BaseModel):
    """`sources.NAME: {type: $short, description: ...}`"""

    model_config = ConfigDict(extra="forbid")
    type: Literal["$short"] = "$short"
    description: str = ""


class ${cls}Source:
    """A writable source. The in-memory BM25 index stands in for your backend."""

    config_model: ClassVar[type[BaseModel]] = ${cls}Config

    def __init__(self, name: str = "$short", description: str = "") -> None:
        self.name = name
        self.description = description
        self._index = MemorySource(name, description)

    @classmethod
    def from_config(cls, name: str, config: ${cls}Config, data_dir: Any = None) -> ${cls}Source:
        return cls(name, config.description)

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Passage]:
        return self._index.search(query, k=k, filters=filters)

    def add(self, passages: Sequence[Passage]) -> None:
        self._index.add(passages)

    def get(self, ids: Sequence[str]) -> list[Passage]:
        return self._index.get(ids)

    def delete(self, ids: Sequence[str]) -> None:
        self._index.delete(ids)

    def count(self) -> int:
        return self._index.count()


@hookimpl
def register_knowledge(register):
    register("$short", ${cls}Source)
''',
    "tool": '''\
"""$dist: a tool for agentkit's agent, `$short`."""

from __future__ import annotations

from agentkit.plugins import hookimpl
from agentkit.tools import ToolError, tool


@tool
def $short(text: str, unit: str = "words") -> int:
    """Count the words or characters in a text.

    Args:
        text: The text to count.
        unit: "words" or "characters".
    """
    if unit == "words":
        return len(text.split())
    if unit == "characters":
        return len(text)
    raise ToolError(f"unit must be 'words' or 'characters', not {unit!r}")


@hookimpl
def register_tools(register):
    register($short)
''',
    "llm": '''\
"""$dist: a model backend for agentkit, `llm: {backend: $short}`."""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from typing import ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from agentkit.llm.base import Completion, Delta, GenerationOptions
from agentkit.plugins import hookimpl
from agentkit.types import Message, Usage


class ${cls}Config(BaseModel):
    """`llm: {backend: $short}`"""

    model_config = ConfigDict(extra="forbid")
    backend: Literal["$short"] = "$short"
    context_length: int = 4096


class ${cls}LLM:
    """Echoes the last user message; replace `_generate` with a call to your model."""

    name = "$short"
    config_model: ClassVar[type[BaseModel]] = ${cls}Config

    def __init__(self, context_length: int = 4096) -> None:
        self._context_length = context_length

    @classmethod
    def from_config(cls, config: ${cls}Config) -> ${cls}LLM:
        return cls(config.context_length)

    @property
    def context_length(self) -> int:
        return self._context_length

    def _generate(self, messages: Sequence[Message], options: GenerationOptions) -> str:
        if options.grammar is not None or options.json_schema is not None:
            raise NotImplementedError("$short cannot constrain its output to a grammar")
        last = next((m.content for m in reversed(messages) if m.role == "user"), "")
        return " ".join(last.split()[: options.max_tokens])

    def chat(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Completion:
        options = options or GenerationOptions()
        text = self._generate(messages, options)
        return Completion(text, Usage(self.count_message_tokens(messages), self.count_tokens(text)))

    def stream(self, messages: Sequence[Message], options: GenerationOptions | None = None) -> Iterator[Delta]:
        options = options or GenerationOptions()
        words = self._generate(messages, options).split(" ")
        for i, word in enumerate(words):
            yield Delta(word if i == 0 else " " + word)
        yield Delta("", finish_reason="stop", usage=Usage(self.count_message_tokens(messages), len(words)))

    def count_tokens(self, text: str) -> int:
        return len(text.split())

    def count_message_tokens(self, messages: Sequence[Message]) -> int:
        return sum(self.count_tokens(m.content) + 4 for m in messages)


@hookimpl
def register_llms(register):
    register("$short", ${cls}LLM)
''',
}

_TEST = {
    "knowledge": '''\
"""The source passes agentkit's contract suite, and registers through the plugin hook."""

import pytest

import $module
from agentkit.plugins import load_registry
from agentkit.testing import WritableSourceContract


class Test${cls}Source(WritableSourceContract):
    @pytest.fixture()
    def source(self):
        return $module.${cls}Source("$short")


def test_registers_as_a_knowledge_type():
    registry = load_registry({"$short": $module}, entry_points=False)
    assert registry.knowledge("$short") is $module.${cls}Source
''',
    "tool": '''\
"""The tool answers, reports bad input as an observation, and the agent can call it."""

from agentkit import Agent
from agentkit.config import AgentSettings
from agentkit.plugins import load_registry
from agentkit.testing import FakeLLM
from agentkit.tools import run

import $module


def test_counts():
    assert $module.$short("one two three") == 3
    assert run($module.$short, {"text": "abc", "unit": "characters"}) == "3"


def test_errors_become_observations():
    assert run($module.$short, {"text": "abc", "unit": "lines"}).startswith("error:")
    assert run($module.$short, {}).startswith("error: missing required argument 'text'")


def test_registers_as_a_tool():
    registry = load_registry({"$short": $module}, entry_points=False)
    assert registry.tool("$short").name == "$short"


def test_the_agent_calls_it():
    llm = FakeLLM([
        {"action": "call", "tool": "$short", "arguments": {"text": "to be or not to be"}},
        {"action": "answer"},
        "Reasoning: the tool counted.\\nAnswer: Six words [1].",
    ])
    answer = Agent(llm, tools=[$module.$short], settings=AgentSettings(max_steps=3)).ask("How many words?")
    assert [s.action for s in answer.steps] == ["call", "answer"]
    assert answer.steps[0].observation == "6"
    assert answer.citations[0].passage.source == "tool:$short"
''',
    "llm": '''\
"""The backend implements agentkit's LLM protocol, chat and stream agree, and it registers."""

import pytest

import $module
from agentkit import Agent
from agentkit.llm.base import LLM, GenerationOptions
from agentkit.plugins import load_registry
from agentkit.types import Message

MESSAGES = [Message("system", "Be brief."), Message("user", "hello plugin world")]


def test_is_an_llm():
    assert isinstance($module.${cls}LLM(), LLM)


def test_chat_and_stream_agree():
    model = $module.${cls}LLM()
    reply = model.chat(MESSAGES)
    assert reply.text == "hello plugin world"
    assert reply.usage.completion_tokens == 3
    deltas = list(model.stream(MESSAGES))
    assert "".join(d.text for d in deltas) == reply.text
    assert deltas[-1].finish_reason == "stop" and deltas[-1].usage is not None


def test_max_tokens_and_constraints():
    model = $module.${cls}LLM()
    assert model.chat(MESSAGES, GenerationOptions(max_tokens=1)).text == "hello"
    with pytest.raises(NotImplementedError):
        model.chat(MESSAGES, GenerationOptions(json_schema={"type": "object"}))


def test_an_agent_can_use_it():
    answer = Agent($module.${cls}LLM()).ask("What is a plugin?")
    assert answer.text


def test_registers_as_a_backend():
    registry = load_registry({"$short": $module}, entry_points=False)
    assert registry.llm("$short") is $module.${cls}LLM
''',
}
