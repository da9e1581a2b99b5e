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

    cls = registry().router(name, where="router.policies")
    try:
        policy = cls.from_config(r, llm) if hasattr(cls, "from_config") else cls()
    except KeyboardInterrupt:
        raise
    except BaseException as exc:  # noqa: BLE001 - a plugin's constructor may raise anything
        raise ConfigError(f"router.policies: building policy {name!r} ({_qualname(cls)}) failed: "
                          f"{type(exc).__name__}: {exc}") from None
    return check_policy(policy, name)


def check_policy(policy: Any, name: str) -> Any:
    """`policy` if it implements `agentkit.routing.base.Policy`, else a ConfigError saying what
    is missing; a missing `name` or `calls_model` is filled in (the registered name, False)."""
    if not callable(getattr(policy, "assess", None)):
        hint = (" It has decide(): that is a whole router; a policy returns a Vote from assess(query)."
                if callable(getattr(policy, "decide", None)) else "")
        raise ConfigError(
            f"router.policies: {name!r} ({_qualname(type(policy))}) has no assess(query) -> Vote, so it cannot "
            f"take part in routing.{hint} Implement agentkit.routing.base.Policy (see the register_routers "
            f"hook), or remove {name!r} from router.policies"
        )
    for attr, default in (("name", name), ("calls_model", False)):
        if not hasattr(policy, attr):
            setattr(policy, attr, default)
    return policy


def _qualname(cls: Any) -> str:
    return f"{getattr(cls, '__module__', '?')}.{getattr(cls, '__qualname__', repr(cls))}"


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
