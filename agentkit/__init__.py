"""agentkit: LLM agents whose knowledge is pluggable: a local model for language, sources for facts.

Names are re-exported lazily so that `import agentkit` loads no model, client or pydantic.
"""

from __future__ import annotations

from importlib import import_module
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Agent": "agentkit.agent",
    "Config": "agentkit.config",
    "AgentSettings": "agentkit.config",
    "load_config": "agentkit.config",
    "Message": "agentkit.types",
    "Document": "agentkit.types",
    "Passage": "agentkit.types",
    "Citation": "agentkit.types",
    "RouteDecision": "agentkit.types",
    "Answer": "agentkit.types",
    "Usage": "agentkit.types",
    "PARAMETRIC": "agentkit.types",
    "LLM": "agentkit.llm.base",
    "GenerationOptions": "agentkit.llm.base",
    "AdapterLLM": "agentkit.llm.base",
    "AdapterSpec": "agentkit.config",
    "KnowledgeSource": "agentkit.knowledge.base",
    "WritableSource": "agentkit.knowledge.base",
    "MemorySource": "agentkit.knowledge.memory",
    "AgentkitError": "agentkit.errors",
}

__all__ = ["__version__", *_EXPORTS]

if TYPE_CHECKING:
    from agentkit.agent import Agent
    from agentkit.config import AdapterSpec, AgentSettings, Config, load_config
    from agentkit.errors import AgentkitError
    from agentkit.knowledge.base import KnowledgeSource, WritableSource
    from agentkit.knowledge.memory import MemorySource
    from agentkit.llm.base import LLM, AdapterLLM, GenerationOptions
    from agentkit.types import PARAMETRIC, Answer, Citation, Document, Message, Passage, RouteDecision, Usage


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'agentkit' has no attribute {name!r}")
    value = getattr(import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(__all__)
