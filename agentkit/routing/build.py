"""Build the configured router from `router:` in a config, and find its learned model file."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentkit.errors import ConfigError

if TYPE_CHECKING:
    from agentkit.config import Config, RouterConfig


def build_policy(name: str, r: RouterConfig, llm: Any) -> Any:
    """A routing policy by name: the built-ins, or one a plugin registered (`register_routers`)."""
    if name == "rules":
        from agentkit.routing.rules import RulesPolicy

        return RulesPolicy({t: rs.model_dump() for t, rs in r.rules.items()})
    if name == "dictionary":
        from agentkit.routing.dictionary import DictionaryPolicy

        return DictionaryPolicy()
    if name == "semantic":
        from agentkit.routing.semantic import SemanticPolicy

        s = r.semantic
        return SemanticPolicy(s.embedder, examples=r.examples, threshold=s.threshold, parametric_margin=s.parametric_margin,
                              content_threshold=s.content_threshold)
    if name == "probe":
        from agentkit.routing.probe import ProbePolicy

        return ProbePolicy(k=r.probe_k)
    if name in ("confidence", "judge") and llm is None:
        raise ConfigError(f"router.policies: {name!r} needs the model; build the router with an LLM")
    if name == "confidence":
        from agentkit.routing.confidence import ConfidencePolicy

        c = r.confidence
        return ConfidencePolicy(llm, max_tokens=c.max_tokens, min_mean_logprob=c.min_mean_logprob)
    if name == "judge":
        from agentkit.routing.judge import JudgePolicy

        return JudgePolicy(llm)
    from agentkit.plugins import registry

    reg = registry()
    resolve = getattr(reg, "router", None)
    if resolve is None:
        raise ConfigError(f"router.policies: unknown policy {name!r}")
    cls = resolve(name, where="router.policies")
    return cls.from_config(r, llm) if hasattr(cls, "from_config") else cls()


def model_path(cfg: Config) -> Path:
    """Where the learned combiner lives: router.model, relative to the config file's folder
    (the data_dir for the packaged default config)."""
    return cfg.resolve_path(cfg.router.model)


def build_router(cfg: Config, llm: Any = None, *, policies: list[str] | None = None) -> Any:
    r = cfg.router
    if r.policy == "simple":
        from agentkit.routing.simple import SimpleRouter

        return SimpleRouter(r.parametric_patterns, r.dictionary_patterns, r.description_threshold)
    from agentkit.routing.router import PolicyRouter

    model = None
    names = policies or r.policies
    if r.policy == "learned":
        from agentkit.routing.learned import LogisticModel

        model = LogisticModel.load(model_path(cfg))
        names = model.meta.get("policies") or names
    return PolicyRouter([build_policy(n, r, llm) for n in names], model=model)
