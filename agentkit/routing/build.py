"""Build the configured router from `router:` in a config."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from agentkit.config import Config


def build_router(cfg: Config, llm: Any = None) -> Any:
    from agentkit.routing.simple import SimpleRouter

    r = cfg.router
    return SimpleRouter(r.parametric_patterns, r.dictionary_patterns, r.description_threshold)
