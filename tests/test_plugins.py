"""The plugin system: hooks, built-ins registered the same way, failing plugins reported by name,
the AGENTKIT_PLUGINS filter, plugin commands, and `agentkit plugins`."""

from __future__ import annotations

import importlib.metadata
import json
import re
from collections.abc import Iterator
from typing import Any

import click
import pytest
from click.testing import CliRunner

from agentkit.agent import Agent
from agentkit.cli import cli
from agentkit.config import parse_config
from agentkit.errors import ConfigError
from agentkit.plugins import build_llm, hookimpl, load_registry, registry
from agentkit.routing.base import Policy, Query, Vote
from agentkit.routing.simple import SimpleRouter
from agentkit.testing import FakeLLM
from agentkit.tools import Tool, tool


class FakeDist:
    def __init__(self, name: str, version: str) -> None:
        self.metadata = {"Name": name}
        self.version = version


class FakeEntryPoint:
    """Stands in for an installed package's `[project.entry-points.agentkit]` line."""

    group = "agentkit"

    def __init__(self, name: str, plugin: Any, package: str = "", version: str = "1.2.3") -> None:
        self.name = name
        self.plugin = plugin
        self.dist = FakeDist(package or f"agentkit-{name}", version)

    def load(self) -> Any:
        if isinstance(self.plugin, BaseException):
            raise self.plugin
        return self.plugin


@tool
def shout(text: str) -> str:
    """Upper-case a text.

    Args:
        text: What to shout.
    """
    return text.upper()


@click.command("hello")
@click.argument("who", default="world")
def hello(who: str) -> None:
    """Say hello from a plugin."""
    click.echo(f"hello {who}")


class EchoLLM(FakeLLM):
    pass


class WeatherPolicy:
    """A third-party routing policy: weather questions go to the configured forecast source."""

    name = "weather"
    calls_model = False

    def __init__(self, target: str = "forecasts") -> None:
        self.target = target

    @classmethod
    def from_config(cls, router_config: Any, llm: Any) -> WeatherPolicy:
        return cls("forecasts")

    def assess(self, query: Query) -> Vote:
        if "rain" in query.question.lower() and self.target in query.sources:
            return Vote([self.target], 0.9, "mentions rain", {"weather:rain": 1.0}, decisive=True)
        return Vote(signals={"weather:rain": 0.0})


class GoodPlugin:
    @hookimpl
    def register_llms(self, register: Any) -> None:
        register("echo", EchoLLM)

    @hookimpl
    def register_knowledge(self, register: Any) -> None:
        register("lazy_memory", "agentkit.knowledge.memory:MemorySource")

    @hookimpl
    def register_routers(self, register: Any) -> None:
        register("weather", WeatherPolicy)

    @hookimpl
    def register_tools(self, register: Any) -> None:
        register(shout)

        def plain(n: int) -> int:
            """Double n."""
            return 2 * n

        register("double", plain)

    @hookimpl
    def register_commands(self, register: Any) -> None:
        register(hello)
        register("sources", hello)  # a built-in name: the built-in wins


class FailsToRegister:
    @hookimpl
    def register_tools(self, register: Any) -> None:
        register(shout)  # staged, then dropped: a half-registered plugin registers nothing
        raise RuntimeError("no licence key")


class NamelessRegister:
    @hookimpl
    def register_tools(self, register: Any) -> None:
        register(object())


@pytest.fixture()
def installed(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[FakeEntryPoint]]:
    """Fake installed plugins; the process-wide registry is rebuilt around each test."""
    eps: list[FakeEntryPoint] = [
        FakeEntryPoint("good", GoodPlugin(), version="2.0.1"),
        FakeEntryPoint("broken", ImportError("No module named 'agentkit_broken'")),
        FakeEntryPoint("grumpy", FailsToRegister()),
    ]

    def entry_points(**params: Any) -> list[FakeEntryPoint]:
        return list(eps) if params.get("group") == "agentkit" else []

    monkeypatch.setattr(importlib.metadata, "entry_points", entry_points)
    monkeypatch.delenv("AGENTKIT_PLUGINS", raising=False)
    registry.cache_clear()
    yield eps
    registry.cache_clear()


def test_builtins_register_through_the_same_hooks() -> None:
    reg = load_registry(entry_points=False)
    assert {"llama_cpp", "fake"} <= set(reg.llms)
    assert {"qdrant", "memory", "dictionary", "elasticsearch"} <= set(reg.knowledge_classes)
    assert set(reg.routers) == {"rules", "dictionary", "semantic", "probe", "confidence", "judge"}
    assert reg.plugins["builtins"].registered["register_routers"][0] == "rules"
    assert reg.failures == {}


def test_every_builtin_router_imports_and_is_a_policy() -> None:
    # `learned` once pointed at a class that did not exist, and `simple` at a whole router.
    reg = load_registry(entry_points=False)
    for name in list(reg.routers):
        cls = reg.router(name)
        assert callable(getattr(cls, "assess", None)), name


def test_every_hook_of_a_plugin_is_collected(installed: list[FakeEntryPoint]) -> None:
    reg = registry()
    assert reg.llm("echo") is EchoLLM
    assert reg.knowledge("lazy_memory").__name__ == "MemorySource"
    assert reg.router("weather") is WeatherPolicy
    assert reg.tool("shout") is shout
    double = reg.tool("double")
    assert isinstance(double, Tool) and double.parameters["properties"]["n"] == {"type": "integer"}
    assert reg.commands() == {"hello": hello, "sources": hello}
    info = reg.plugins["good"]
    assert (info.version, info.package) == ("2.0.1", "agentkit-good")
    assert info.registered["register_tools"] == ["shout", "double"]


def test_failing_plugins_are_reported_by_name_and_agentkit_keeps_working(installed: list[FakeEntryPoint]) -> None:
    reg = registry()
    assert reg.failures["broken"] == "ImportError: No module named 'agentkit_broken'"
    assert reg.failures["grumpy"] == "register_tools: RuntimeError: no licence key"
    assert reg.plugins["grumpy"].registered == {}
    assert "good" not in reg.failures
    llm = build_llm({"backend": "fake"})
    assert Agent(llm).ask("What is 2 and 2?").text


def test_register_needs_a_name() -> None:
    reg = load_registry({"nameless": NamelessRegister()}, entry_points=False)
    assert reg.failures["nameless"].startswith("register_tools: TypeError: register_tools: register(name, target) needs a name")


def test_agentkit_plugins_env_limits_what_loads(installed: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_PLUGINS", "good")
    reg = load_registry()
    assert set(reg.plugins) == {"builtins", "good"} and reg.failures == {}
    monkeypatch.setenv("AGENTKIT_PLUGINS", "agentkit-broken")  # a package name works too
    assert set(load_registry().failures) == {"broken"}
    monkeypatch.setenv("AGENTKIT_PLUGINS", "")
    reg = load_registry()
    assert set(reg.plugins) == {"builtins"} and "llama_cpp" in reg.llms


def test_unknown_names_are_config_errors_naming_the_key_and_the_choices(installed: list[FakeEntryPoint]) -> None:
    reg = registry()
    with pytest.raises(ConfigError, match=r"my\.yaml: tools\[1\]: unknown value 'shuot'; one of: double, shout"):
        reg.tool("shuot", origin="my.yaml", where="tools[1]")
    with pytest.raises(ConfigError, match=r"router\.policy: unknown value 'nope'; one of: confidence, dictionary, judge, probe, rules, semantic, weather"):
        reg.router("nope")


def test_lazy_targets_that_cannot_import_say_so() -> None:
    class Bad:
        @hookimpl
        def register_routers(self, register: Any) -> None:
            register("ghost", "agentkit.routing.no_such_module:Ghost")

    reg = load_registry({"bad": Bad()}, entry_points=False)
    with pytest.raises(ConfigError, match=r"'ghost' is registered as 'agentkit\.routing\.no_such_module:Ghost', which cannot be imported"):
        reg.router("ghost")


def test_from_config_resolves_tools_through_the_registry(installed: list[FakeEntryPoint]) -> None:
    cfg = parse_config("llm: {backend: fake}\ntools: [shout, double]\n", origin="t.yaml")
    agent = Agent.from_config(cfg)
    assert list(agent.tools) == ["shout", "double"]
    bad = parse_config("llm: {backend: fake}\ntools: [shout, shuot]\n", origin="t.yaml")
    with pytest.raises(ConfigError, match=r"t\.yaml: tools\[1\]: unknown value 'shuot'"):
        Agent.from_config(bad)


def test_agentkit_plugins_lists_versions_registrations_and_failures(installed: list[FakeEntryPoint]) -> None:
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0, result.output
    out = result.output
    assert "builtins 0.1.0" in out and "routers: rules, dictionary" in out
    assert "good 2.0.1 (agentkit-good)" in out
    assert "tools: shout, double" in out and "commands: hello, sources" in out
    assert "broken 1.2.3 (agentkit-broken)" in out
    assert "failed: ImportError: No module named 'agentkit_broken'" in out
    assert "failed: register_tools: RuntimeError: no licence key" in out

    data = json.loads(CliRunner().invoke(cli, ["plugins", "--json"]).stdout)
    by_name = {p["name"]: p for p in data}
    assert by_name["good"]["registered"]["register_llms"] == ["echo"]
    assert by_name["broken"]["error"].startswith("ImportError")


def test_plugin_commands_run_and_are_listed_but_builtins_win(installed: list[FakeEntryPoint]) -> None:
    runner = CliRunner()
    result = runner.invoke(cli, ["hello", "plugins"])
    assert result.exit_code == 0 and result.output == "hello plugins\n"
    assert "Say hello from a plugin." in runner.invoke(cli, ["--help"]).output
    assert "hello" not in runner.invoke(cli, ["sources", "--help"]).output


def test_help_does_not_load_plugins_when_none_are_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(importlib.metadata, "entry_points", lambda **params: [])
    registry.cache_clear()
    try:
        result = CliRunner().invoke(cli, ["--help"])
        assert result.exit_code == 0 and "plugins" in result.output
        assert registry.cache_info().currsize == 0
    finally:
        registry.cache_clear()


# --- routers from plugins, end to end ------------------------------------------------------------

ROUTED = """\
llm: {backend: fake}
sources:
  forecasts: {type: memory, description: Weather forecasts.}
  manual: {type: memory, description: The product manual.}
router:
  policies: [weather, rules]
"""


def test_a_plugin_router_decides_routes_through_its_entry_point(installed: list[FakeEntryPoint]) -> None:
    cfg = parse_config(ROUTED, origin="routed.yaml")
    agent = Agent.from_config(cfg)
    assert isinstance(agent.router.policies[0], Policy)
    answer = agent.ask("Will it rain in Leeds tomorrow?")
    assert answer.route is not None
    assert answer.route.policy == "auto:weather" and answer.route.targets == ["forecasts"]
    assert answer.route.signals["weather:rain"] == 1.0
    # Not about rain: the plugin abstains and the cascade goes on (its signal still counts).
    other = agent.router.decide("How do I reset the device?", agent.sources)
    assert other.policy != "auto:weather" and other.signals["weather:rain"] == 0.0


class DecideOnly:
    """A whole router (decide) registered as a policy: it used to fail inside the cascade on
    every question, swallowed, so routing silently fell back to searching everything."""

    @hookimpl
    def register_routers(self, register: Any) -> None:
        register("whole", SimpleRouter)
        register("typo", "agentkit.routing.rules:NoSuchPolicy")


def test_a_router_without_assess_is_a_config_error_not_a_silent_fallback(
    installed: list[FakeEntryPoint],
) -> None:
    installed.append(FakeEntryPoint("whole", DecideOnly()))
    registry.cache_clear()
    cfg = parse_config(ROUTED.replace("[weather, rules]", "[whole]"), origin="routed.yaml")
    with pytest.raises(ConfigError, match=r"router\.policies: 'whole' \(agentkit\.routing\.simple\.SimpleRouter\) "
                                          r"has no assess\(query\) -> Vote.*It has decide\(\)"):
        Agent.from_config(cfg)
    cfg = parse_config(ROUTED.replace("[weather, rules]", "[typo]"), origin="routed.yaml")
    with pytest.raises(ConfigError, match=r"'typo' is registered as 'agentkit\.routing\.rules:NoSuchPolicy', which cannot be imported"):
        Agent.from_config(cfg)
    with pytest.raises(ConfigError, match=r"routed\.yaml: router\.policies: unknown policy 'wether'; one of: .*weather"):
        parse_config(ROUTED.replace("[weather, rules]", "[wether]"), origin="routed.yaml")


def test_a_policy_router_refuses_objects_without_assess() -> None:
    from agentkit.routing.router import PolicyRouter

    with pytest.raises(TypeError, match="has no assess"):
        PolicyRouter([SimpleRouter()])


# --- plugins that misbehave while loading -------------------------------------------------------


def test_a_plugin_calling_sys_exit_on_import_is_reported_and_agentkit_goes_on(
    installed: list[FakeEntryPoint], caplog: pytest.LogCaptureFixture,
) -> None:
    installed.append(FakeEntryPoint("nine", SystemExit(3)))
    registry.cache_clear()
    reg = registry()  # before: SystemExit escaped and agentkit exited with status 3, saying nothing
    assert reg.failures["nine"] == "SystemExit: the plugin called sys.exit(3)"
    assert reg.llm("echo") is EchoLLM
    assert "plugin 'nine' failed to load (SystemExit: the plugin called sys.exit(3))" in caplog.text
    result = CliRunner().invoke(cli, ["plugins"])
    assert result.exit_code == 0 and "failed: SystemExit: the plugin called sys.exit(3)" in result.output


def test_a_lazy_target_whose_module_raises_is_a_one_line_error(
    installed: list[FakeEntryPoint], tmp_path: Any, monkeypatch: pytest.MonkeyPatch,
) -> None:
    (tmp_path / "agentkit_explodes.py").write_text("raise RuntimeError('no licence key')\n")
    (tmp_path / "agentkit_quits.py").write_text("import sys\nsys.exit(4)\n")
    monkeypatch.syspath_prepend(str(tmp_path))

    class Lazy:
        @hookimpl
        def register_knowledge(self, register: Any) -> None:
            register("boom", "agentkit_explodes:Source")
            register("quits", "agentkit_quits:Source")

    installed.append(FakeEntryPoint("lazy", Lazy()))
    registry.cache_clear()
    for kind, why in (("boom", "RuntimeError: no licence key"), ("quits", r"SystemExit: the plugin called sys\.exit\(4\)")):
        config = tmp_path / f"{kind}.yaml"
        config.write_text(f"llm: {{backend: fake}}\nsources:\n  notes: {{type: {kind}}}\n")
        result = CliRunner().invoke(cli, ["--config", str(config), "sources"])
        assert result.exit_code == 2, result.output
        assert result.exception is None or isinstance(result.exception, SystemExit)
        assert "Traceback" not in result.output
        assert re.search(rf"error: .*sources\.notes\.type: '{kind}' is registered as 'agentkit_\w+:Source', "
                         rf"which cannot be imported \({why}\)", result.output), result.output


def test_agentkit_plugins_naming_an_unknown_plugin_says_so(
    installed: list[FakeEntryPoint], monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture,
) -> None:
    monkeypatch.setenv("AGENTKIT_PLUGINS", "good,goood")
    reg = load_registry()  # before: "goood" was silently ignored
    assert "good" not in reg.failures
    assert reg.failures["goood"] == ("not installed, yet AGENTKIT_PLUGINS names it; "
                                     "installed plugins: good, broken, grumpy")
    assert "plugin 'goood': not installed" in caplog.text


class RstLoader:
    """A third-party loader package: reStructuredText, title from the over/underlined first line."""

    @hookimpl
    def register_loaders(self, register: Any) -> None:
        def load_rst(raw: bytes, path: Any) -> Any:
            from agentkit.ingest.loaders import Loaded

            lines = raw.decode("utf-8").splitlines()
            return Loaded("\n".join(lines[2:]).strip(), title=lines[0], format="rst")

        register(".RST", load_rst)  # suffixes are matched case-insensitively


def test_a_loader_registered_by_an_entry_point_is_used_by_ingest(
    installed: list[FakeEntryPoint], tmp_path: Any
) -> None:
    from agentkit.ingest.loaders import find_files
    from agentkit.ingest.pipeline import ingest
    from agentkit.knowledge.memory import MemorySource

    installed.append(FakeEntryPoint("rst", RstLoader()))
    (tmp_path / "tides.rst").write_text("Tides\n=====\n\nThe moon pulls the oceans.", encoding="utf-8")
    (tmp_path / "notes.txt").write_text("Built-in loaders still apply.", encoding="utf-8")

    assert registry().plugins["rst"].registered == {"register_loaders": [".rst"]}
    assert [f.name for f in find_files(tmp_path).files] == ["notes.txt", "tides.rst"]
    source = MemorySource("docs")
    report = ingest([tmp_path], source, progress=False)

    assert report.failures == [] and report.unsupported_files == 0 and report.documents == 2
    (p,) = source.search("moon oceans", k=1)
    assert (p.doc_id, p.title, p.metadata["format"]) == ("tides.rst", "Tides", "rst")


def test_builtin_loaders_register_through_the_hook() -> None:
    reg = load_registry(entry_points=False)
    assert {".txt", ".md", ".html", ".pdf", ".docx"} <= set(reg.loaders)
    assert reg.plugins["builtins"].registered["register_loaders"][:1] == [".txt"]


def test_a_loader_registered_without_a_suffix_is_refused() -> None:
    class Bad:
        @hookimpl
        def register_loaders(self, register: Any) -> None:
            register("pdf", lambda raw, path: "")

    reg = load_registry({"bad": Bad()}, entry_points=False)
    assert "'.pdf'" in reg.failures["bad"] and reg.loaders[".pdf"] == "agentkit.ingest.documents:load_pdf"


class TermsFileSource:
    """A plugin source whose settings name a file, relative to the config file."""

    from pydantic import BaseModel as _Base

    class config_model(_Base):  # noqa: N801 - the attribute name agentkit looks for
        type: str = "termsfile"
        description: str = ""
        file: str

    def __init__(self, name: str, path: Any) -> None:
        self.name, self.description, self.path = name, "terms", path
        self.terms = path.read_text(encoding="utf-8").split()

    @classmethod
    def from_config(cls, name: str, config: Any, data_dir: Any, *, config_dir: Any = None) -> TermsFileSource:
        return cls(name, config_dir / config.file)

    def search(self, query: str, k: int = 5, filters: Any = None) -> list[Any]:
        return []


class TermsPlugin:
    @hookimpl
    def register_knowledge(self, register: Any) -> None:
        register("termsfile", TermsFileSource)


def test_a_plugin_source_gets_the_config_files_folder(
    installed: list[FakeEntryPoint], tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    installed.append(FakeEntryPoint("terms", TermsPlugin()))
    conf = tmp_path / "project"
    conf.mkdir()
    (conf / "terms.txt").write_text("tide moon", encoding="utf-8")
    (conf / "agentkit.yaml").write_text(
        f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\nsources:\n  t: {{type: termsfile, file: terms.txt}}\n",
        encoding="utf-8",
    )
    elsewhere = tmp_path / "elsewhere"
    elsewhere.mkdir()
    monkeypatch.chdir(elsewhere)  # the relative path must not depend on where agentkit runs

    agent = Agent.from_config(conf / "agentkit.yaml")

    assert agent.sources["t"].path == conf / "terms.txt" and agent.sources["t"].terms == ["tide", "moon"]
