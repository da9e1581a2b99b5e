"""Plugins: pluggy hook specs, the `agentkit` entry-point group, and the registry they fill.

Built-in backends register through the same hooks as third-party packages do.
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any

import pluggy

from agentkit.errors import ConfigError

hookspec = pluggy.HookspecMarker("agentkit")
hookimpl = pluggy.HookimplMarker("agentkit")

#: `register(name, cls_or_"module:attr")`: a string is imported only when the name is used.
Register = Callable[[str, Any], None]


class HookSpecs:
    @hookspec
    def register_llms(self, register: Register) -> None:
        """Register model backends: classes with `config_model` and `from_config(config)`."""

    @hookspec
    def register_knowledge(self, register: Register) -> None:
        """Register knowledge-source types: classes with `config_model` and
        `from_config(name, config, data_dir)`."""


class _BuiltIns:
    @hookimpl
    def register_llms(self, register: Register) -> None:
        register("llama_cpp", "agentkit.llm.llama_cpp:LlamaCppLLM")
        register("fake", "agentkit.testing:FakeLLM")

    @hookimpl
    def register_knowledge(self, register: Register) -> None:
        register("qdrant", "agentkit.knowledge.qdrant:QdrantSource")
        register("memory", "agentkit.knowledge.memory:MemorySource")
        register("dictionary", "agentkit.knowledge.dictionary:DictionarySource")
        register("elasticsearch", "agentkit.knowledge.elasticsearch:ElasticsearchSource")


@dataclass
class Registry:
    llms: dict[str, Any] = field(default_factory=dict)
    knowledge_classes: dict[str, Any] = field(default_factory=dict)
    #: Plugins that failed to load, name -> error; agentkit keeps working without them.
    failures: dict[str, str] = field(default_factory=dict)

    def llm(self, name: str, *, origin: str = "config") -> Any:
        return self._resolve(self.llms, name, origin, "llm.backend")

    def knowledge(self, name: str, *, origin: str = "config", where: str = "type") -> Any:
        return self._resolve(self.knowledge_classes, name, origin, where)

    def knowledge_types(self) -> list[str]:
        return sorted(self.knowledge_classes)

    @staticmethod
    def _resolve(table: dict[str, Any], name: str, origin: str, where: str) -> Any:
        if name not in table:
            raise ConfigError(f"{origin}: {where}: unknown value {name!r}; one of: {', '.join(sorted(table))}")
        target = table[name]
        if isinstance(target, str):
            module, _, attr = target.partition(":")
            target = getattr(importlib.import_module(module), attr)
            table[name] = target
        return target


@lru_cache(maxsize=1)
def registry() -> Registry:
    """Load built-ins and entry-point plugins once per process."""
    pm = pluggy.PluginManager("agentkit")
    pm.add_hookspecs(HookSpecs)
    pm.register(_BuiltIns(), name="builtins")
    reg = Registry()
    allowed = os.environ.get("AGENTKIT_PLUGINS")
    wanted = None if allowed is None else {p.strip() for p in allowed.split(",") if p.strip()}
    from importlib.metadata import entry_points

    for ep in entry_points(group="agentkit"):
        if wanted is not None and ep.name not in wanted:
            continue
        try:
            pm.register(ep.load(), name=ep.name)
        except Exception as exc:  # a broken plugin must not break agentkit
            reg.failures[ep.name] = f"{type(exc).__name__}: {exc}"
    for hook, table in (("register_llms", reg.llms), ("register_knowledge", reg.knowledge_classes)):
        for impl in getattr(pm.hook, hook).get_hookimpls():
            try:
                impl.function(register=table.__setitem__)
            except Exception as exc:
                reg.failures[impl.plugin_name] = f"{type(exc).__name__}: {exc}"
    return reg


def build_llm(llm_config: dict[str, Any]) -> Any:
    """Instantiate the configured model backend (cheap: backends load lazily)."""
    cls = registry().llm(str(llm_config.get("backend", "llama_cpp")))
    return cls.from_config(cls.config_model.model_validate(llm_config))


def build_source(name: str, spec: dict[str, Any], data_dir: Any) -> Any:
    cls = registry().knowledge(str(spec["type"]), where=f"sources.{name}.type")
    return cls.from_config(name, cls.config_model.model_validate(spec), data_dir)
