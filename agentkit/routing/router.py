"""The router: policies run as a cascade, or all of them feed a learned combiner.

Cascade: the first decisive vote wins; otherwise the last tentative vote; otherwise every
document source is searched (a needless search is cheap, a missed one is a made-up answer).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from agentkit.knowledge.base import KnowledgeSource
from agentkit.routing.base import Policy, Query, Vote, class_targets
from agentkit.types import PARAMETRIC, Message, RouteDecision

if TYPE_CHECKING:
    from agentkit.routing.learned import LogisticModel

log = logging.getLogger(__name__)


class PolicyRouter:
    def __init__(self, policies: Sequence[Policy], *, model: LogisticModel | None = None, name: str = "auto") -> None:
        for policy in policies:
            # Checked here, not in the cascade: there an AttributeError would read as a failing
            # policy, and the router would quietly fall back on every question.
            if not callable(getattr(policy, "assess", None)):
                raise TypeError(f"routing policy {policy!r} has no assess(query) -> Vote; "
                                "see agentkit.routing.base.Policy")
        self.policies = list(policies)
        self.model = model
        self.name = "learned" if model is not None else name

    def assess_all(self, query: Query, *, stop_early: bool = False) -> tuple[dict[str, float], list[tuple[str, Vote]]]:
        """Signals of every policy, and the votes cast (stops at a decisive one if asked)."""
        signals: dict[str, float] = {}
        votes: list[tuple[str, Vote]] = []
        for policy in self.policies:
            t0 = time.perf_counter()
            try:
                vote = policy.assess(query)
                if not isinstance(vote, Vote):
                    raise TypeError(f"assess() returned {type(vote).__name__}, not a Vote")
            except Exception as exc:  # noqa: BLE001 - one failing policy must not stop routing
                log.warning("routing policy %r failed: %s: %s", policy.name, type(exc).__name__, exc)
                signals[f"{policy.name}:failed"] = 1.0
                continue
            signals.update(vote.signals)
            signals[f"{policy.name}:ms"] = round((time.perf_counter() - t0) * 1000, 3)
            if vote.targets:
                votes.append((policy.name, vote))
                if stop_early and vote.decisive:
                    break
        return signals, votes

    def decide(
        self, question: str, sources: Mapping[str, KnowledgeSource], history: Sequence[Message] = ()
    ) -> RouteDecision:
        if not sources:
            return RouteDecision([PARAMETRIC], 1.0, "no knowledge source is configured", {}, self.name)
        query = Query(question, sources, history)
        if self.model is not None:
            return self._learned(query)
        signals, votes = self.assess_all(query, stop_early=True)
        for name, vote in votes:
            if vote.decisive:
                return RouteDecision(vote.targets, round(vote.confidence, 3), vote.reason, signals, f"{self.name}:{name}")
        if votes:
            name, vote = votes[-1]
            return RouteDecision(vote.targets, round(vote.confidence, 3), vote.reason, signals, f"{self.name}:{name}")
        targets = query.documents or query.dictionaries
        failed = [k.removesuffix(":failed") for k in signals if k.endswith(":failed")]
        why = f" ({', '.join(failed)} failed; see the log)" if failed else ""
        return RouteDecision(targets, 0.4, f"no policy was sure{why}; searching every document source", signals,
                             f"{self.name}:fallback")

    def _learned(self, query: Query) -> RouteDecision:
        from agentkit.routing.learned import feature_vector

        assert self.model is not None
        signals, votes = self.assess_all(query)
        probs = self.model.proba(feature_vector(signals, self.model.features))[0]
        order = probs.argsort()[::-1]
        route = self.model.classes[int(order[0])]
        for c, p in zip(self.model.classes, probs, strict=True):
            signals[f"learned:{c}"] = round(float(p), 4)
        preferred = [t for _, v in votes for t in v.targets if t != PARAMETRIC]
        targets = class_targets(route, query, preferred)
        ranked = ", ".join(f"{self.model.classes[int(i)]} {probs[int(i)]:.2f}" for i in order)
        return RouteDecision(targets, round(float(probs[order[0]]), 3), f"learned combiner: {ranked}", signals,
                             "learned")
