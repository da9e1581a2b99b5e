"""Plugins: pluggy hook specs, the `agentkit` entry-point group, and the registry they fill.

Built-in backends register through the same hooks as third-party packages do.
"""

from __future__ import annotations

import importlib
import logging
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from agentkit.errors import ConfigError

log = logging.getLogger(__name__)

hookspec = pluggy.HookspecMarker("agentkit")
hookimpl = pluggy.HookimplMarker("agentkit")

#: `register(name, target)`, or `register(target)` when the target has a `name` (a Tool, a click
#: command) or a `__name__` (a function); a "module:attr" string is imported only when used.
Register = Callable[..., None]

#: Every hook, and the Registry table it fills.
HOOKS = {
    "register_llms": "llms",
    "register_knowledge": "knowledge_classes",
    "register_routers": "routers",
    "register_tools": "tools",
    "register_commands": "command_table",
    "register_verifiers": "verifiers",
    "register_loaders": "loaders",
}


class HookSpecs:
    @hookspec
    def register_llms(self, register: Register) -> None:
        """Register model backends: classes with `config_model` and `from_config(config)`; a
        `from_config` with a `config_dir` keyword also gets the config file's folder."""

    @hookspec
    def register_knowledge(self, register: Register) -> None:
        """Register knowledge-source types: classes with `config_model` and
        `from_config(name, config, data_dir)`; one with a `config_dir` keyword also gets the config
        file's folder, so a relative path in its settings means the same from any working folder."""

    @hookspec
    def register_routers(self, register: Register) -> None:
        """Register routing policies, named in `router.policies` (the cascade, and the learned
        combiner's inputs). A policy implements `agentkit.routing.base.Policy`: a `name`,
        `calls_model: bool` and `assess(query: Query) -> Vote`; a decisive vote ends the cascade,
        a tentative one is kept as the fallback, empty `targets` abstains. The class is built by
        `from_config(router_config, llm)` when it has one, else `cls()`. (`router.policy: simple`
        is a whole router, not a policy, and is not registered here.)"""

    @hookspec
    def register_tools(self, register: Register) -> None:
        """Register tools the agent can call: `@agentkit.tools.tool` functions (or plain typed ones)."""

    @hookspec
    def register_commands(self, register: Register) -> None:
        """Register click commands, run as `agentkit NAME`; built-in command names win."""

    @hookspec
    def register_verifiers(self, register: Register) -> None:
        """Register citation verifiers, chosen by `agent.verify: NAME`: classes with
        `support(claim, evidence) -> float` (0-1), built by `from_llm(llm)` when they have one."""

    @hookspec
    def register_loaders(self, register: Register) -> None:
        """Register file loaders for `agentkit ingest`, by file suffix: `register(".pdf", load)`.
        `load(data: bytes, path: Path) -> agentkit.ingest.loaders.Loaded` (or a str of text) turns
        one file's bytes into text; raise to skip the file (the error is shown with its name). A
        plugin may replace a built-in suffix."""


class _BuiltIns:
    @hookimpl
    def register_llms(self, register: Register) -> None:
        register("llama_cpp", "agentkit.llm.llama_cpp:LlamaCppLLM")
        register("fake", "agentkit.testing:FakeLLM")
        register("openai_compat", "agentkit.llm.openai_compat:OpenAICompatLLM")
        register("transformers", "agentkit.llm.transformers:TransformersLLM")

    @hookimpl
    def register_knowledge(self, register: Register) -> None:
        register("qdrant", "agentkit.knowledge.qdrant:QdrantSource")
        register("memory", "agentkit.knowledge.memory:MemorySource")
        register("dictionary", "agentkit.knowledge.dictionary:DictionarySource")
        register("elasticsearch", "agentkit.knowledge.elasticsearch:ElasticsearchSource")

    @hookimpl
    def register_routers(self, register: Register) -> None:
        # agentkit.routing.build constructs these from `router:` settings; they are registered so
        # that the names are known (config validation, `agentkit plugins`) and can be replaced.
        register("rules", "agentkit.routing.rules:RulesPolicy")
        register("dictionary", "agentkit.routing.dictionary:DictionaryPolicy")
        register("semantic", "agentkit.routing.semantic:SemanticPolicy")
        register("probe", "agentkit.routing.probe:ProbePolicy")
        register("confidence", "agentkit.routing.confidence:ConfidencePolicy")
        register("judge", "agentkit.routing.judge:JudgePolicy")

    @hookimpl
    def register_verifiers(self, register: Register) -> None:
        register("lexical", "agentkit.reasoning.verify:LexicalVerifier")
        register("judge", "agentkit.reasoning.verify:JudgeVerifier")

    @hookimpl
    def register_loaders(self, register: Register) -> None:
        register(".txt", "agentkit.ingest.loaders:load_text")
        register(".md", "agentkit.ingest.loaders:load_markdown")
        register(".markdown", "agentkit.ingest.loaders:load_markdown")
        register(".html", "agentkit.ingest.loaders:load_html")
        register(".htm", "agentkit.ingest.loaders:load_html")
        register(".pdf", "agentkit.ingest.documents:load_pdf")
        register(".docx", "agentkit.ingest.documents:load_docx")


@dataclass
class PluginInfo:
    """What `agentkit plugins` shows for one plugin."""

    name: str
    version: str = ""
    #: The distribution that ships it ("" for objects registered from code).
    package: str = ""
    #: hook name -> the names it registered.
    registered: dict[str, list[str]] = field(default_factory=dict)
    error: str = ""

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "version": self.version, "package": self.package,
                "registered": self.registered, "error": self.error}


@dataclass
class Registry:
    llms: dict[str, Any] = field(default_factory=dict)
    knowledge_classes: dict[str, Any] = field(default_factory=dict)
    routers: dict[str, Any] = field(default_factory=dict)
    tools: dict[str, Any] = field(default_factory=dict)
    command_table: dict[str, Any] = field(default_factory=dict)
    verifiers: dict[str, Any] = field(default_factory=dict)
    #: File suffix (".pdf") -> loader; see `HookSpecs.register_loaders`.
    loaders: dict[str, Any] = field(default_factory=dict)
    #: Plugins that failed to load, name -> error; agentkit keeps working without them.
    failures: dict[str, str] = field(default_factory=dict)
    #: Every plugin seen, built-ins first, in load order.
    plugins: dict[str, PluginInfo] = field(default_factory=dict)

    def llm(self, name: str, *, origin: str = "config") -> Any:
        return self._resolve(self.llms, name, origin, "llm.backend")

    def knowledge(self, name: str, *, origin: str = "config", where: str = "type") -> Any:
        return self._resolve(self.knowledge_classes, name, origin, where)

    def knowledge_types(self) -> list[str]:
        return sorted(self.knowledge_classes)

    def router(self, name: str, *, origin: str = "config", where: str = "router.policy") -> Any:
        return self._resolve(self.routers, name, origin, where)

    def tool(self, name: str, *, origin: str = "config", where: str = "tools") -> Any:
        """The registered tool as an `agentkit.tools.Tool` (a plain function is wrapped by `@tool`)."""
        from agentkit.tools import Tool, tool

        target = self._resolve(self.tools, name, origin, where)
        if not isinstance(target, Tool):
            target = tool(target, name=name)
            self.tools[name] = target
        return target

    def verifier(self, name: str, *, origin: str = "config", where: str = "agent.verify") -> Any:
        return self._resolve(self.verifiers, name, origin, where)

    def loader(self, suffix: str) -> Any:
        """The loader registered for a file suffix (".pdf"), imported now."""
        return self._resolve(self.loaders, suffix.lower(), "ingest", "file type")

    def loader_suffixes(self) -> list[str]:
        return sorted(self.loaders)

    def commands(self) -> dict[str, Any]:
        """Plugin click commands, name -> command (imported now)."""
        return {name: self._resolve(self.command_table, name, "plugins", "command") for name in self.command_table}

    @staticmethod
    def _resolve(table: dict[str, Any], name: str, origin: str, where: str) -> Any:
        if name not in table:
            known = ", ".join(sorted(table)) or "(none registered)"
            raise ConfigError(f"{origin}: {where}: unknown value {name!r}; one of: {known}")
        target = table[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            try:
                target = getattr(importlib.import_module(module), attr)
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a plugin module may raise anything, even SystemExit
                raise ConfigError(f"{origin}: {where}: {name!r} is registered as {table[name]!r}, "
                                  f"which cannot be imported ({_describe_failure(exc)}); fix or uninstall "
                                  f"the plugin that registers it (see `agentkit plugins`)") from None
            table[name] = target
        return target


def _wanted() -> set[str] | None:
    """`AGENTKIT_PLUGINS=a,b` loads only those plugins (entry-point or package names); "" loads none."""
    allowed = os.environ.get("AGENTKIT_PLUGINS")
    return None if allowed is None else {p.strip() for p in allowed.split(",") if p.strip()}


def load_registry(extra: Mapping[str, object] | None = None, *, entry_points: bool = True) -> Registry:
    """Built-ins, then entry-point plugins, then `extra` (name -> plugin object, for tests)."""
    from importlib.metadata import entry_points as find_entry_points

    from agentkit import __version__

    pm = pluggy.PluginManager("agentkit")
    pm.add_hookspecs(HookSpecs)
    reg = Registry()
    pm.register(_BuiltIns(), name="builtins")
    reg.plugins["builtins"] = PluginInfo("builtins", __version__, "agentkit")

    wanted = _wanted()
    installed: list[str] = []
    matched: set[str] = set()
    for ep in find_entry_points(group="agentkit") if entry_points else ():
        dist = getattr(ep, "dist", None)
        package = dist.metadata["Name"] if dist is not None else ""
        installed.append(ep.name)
        if wanted is not None and ep.name not in wanted and package not in wanted:
            continue
        matched.update((ep.name, package))
        info = reg.plugins[ep.name] = PluginInfo(ep.name, dist.version if dist is not None else "", package or "")
        try:
            pm.register(ep.load(), name=ep.name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001 - a broken plugin (even one calling sys.exit) must not break agentkit
            info.error = reg.failures[ep.name] = _describe_failure(exc)
            log.warning("plugin %r failed to load (%s); agentkit continues without it (see `agentkit plugins`)",
                        ep.name, info.error)
    for name in sorted((wanted or set()) - matched) if entry_points else ():
        # A typo in AGENTKIT_PLUGINS would otherwise silently run without the plugin meant.
        error = (f"not installed, yet AGENTKIT_PLUGINS names it; installed plugins: "
                 f"{', '.join(installed) or 'none'}")
        reg.plugins[name] = PluginInfo(name, error=error)
        reg.failures[name] = error
        log.warning("plugin %r: %s", name, error)
    for name, plugin in (extra or {}).items():
        reg.plugins[name] = PluginInfo(name)
        try:
            pm.register(plugin, name=name)
        except KeyboardInterrupt:
            raise
        except BaseException as exc:  # noqa: BLE001
            reg.plugins[name].error = reg.failures[name] = _describe_failure(exc)

    for hook, attr in HOOKS.items():
        table: dict[str, Any] = getattr(reg, attr)
        # Registration order: built-ins first, so a plugin may replace a built-in by name.
        for impl in getattr(pm.hook, hook).get_hookimpls():
            if impl.plugin_name in reg.failures:
                continue
            staged: dict[str, Any] = {}
            try:
                impl.function(register=_registrar(staged, hook))
            except KeyboardInterrupt:
                raise
            except BaseException as exc:  # noqa: BLE001 - a half-registered plugin registers nothing
                info = reg.plugins.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
                info.error = reg.failures[impl.plugin_name] = f"{hook}: {_describe_failure(exc)}"
                log.warning("plugin %r failed in %s (%s); agentkit continues without it", impl.plugin_name, hook,
                            _describe_failure(exc))
                continue
            table.update(staged)
            if staged:
                info = reg.plugins.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
                info.registered.setdefault(hook, []).extend(staged)
    return reg


_MISSING = object()


def _describe_failure(exc: BaseException) -> str:
    """One line for a plugin's failure; SystemExit is named as the call that raised it."""
    if isinstance(exc, SystemExit):
        return f"SystemExit: the plugin called sys.exit({exc.code!r})"
    return f"{type(exc).__name__}: {exc}"


def _registrar(table: dict[str, Any], hook: str) -> Register:
    def register(name: Any, target: Any = _MISSING) -> None:
        if target is _MISSING:
            name, target = getattr(name, "name", None) or getattr(name, "__name__", None), name
        if not isinstance(name, str) or not name:
            raise TypeError(f"{hook}: register(name, target) needs a name; got {target!r} without one")
        if hook == "register_loaders":
            if not name.startswith(".") or len(name) < 2:
                raise ValueError(f"register_loaders: register({name!r}, ...) needs a file suffix such as '.pdf'")
            name = name.lower()  # suffixes are matched case-insensitively (REPORT.PDF)
        table[name] = target

    return register


@lru_cache(maxsize=1)
def registry() -> Registry:
    """Load built-ins and entry-point plugins once per process."""
    return load_registry()


def build_llm(llm_config: dict[str, Any], *, config_dir: Any = None) -> Any:
    """Instantiate the configured model backend (cheap: backends load lazily)."""
    cls = registry().llm(str(llm_config.get("backend", "llama_cpp")))
    return cls.from_config(cls.config_model.model_validate(llm_config), **_config_dir(cls, config_dir))


def build_source(name: str, spec: dict[str, Any], data_dir: Any, *, config_dir: Any = None) -> Any:
    """Instantiate a configured source; `config_dir` (the config file's folder, see
    `Config.base_dir`) goes to a `from_config` that takes it, for its relative paths."""
    cls = registry().knowledge(str(spec["type"]), where=f"sources.{name}.type")
    return cls.from_config(name, cls.config_model.model_validate(spec), data_dir, **_config_dir(cls, config_dir))


def _config_dir(cls: Any, config_dir: Any) -> dict[str, Any]:
    """`{"config_dir": ...}` when `cls.from_config` accepts it: older plugins keep their signature."""
    if config_dir is None:
        return {}
    import inspect

    try:
        params = inspect.signature(cls.from_config).parameters.values()
    except (TypeError, ValueError):
        return {}
    if any(p.name == "config_dir" or p.kind is p.VAR_KEYWORD for p in params):
        return {"config_dir": config_dir}
    return {}


def build_tools(names: Iterable[str], *, origin: str = "config") -> list[Any]:
    """The `tools:` of a config as `Tool`s; an unknown name is a ConfigError naming the known ones."""
    return [registry().tool(name, origin=origin, where=f"tools[{i}]") for i, name in enumerate(names)]
