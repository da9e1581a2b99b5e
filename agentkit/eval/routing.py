"""Routing evaluation and fitting on a labelled file: what `agentkit eval routing` and
`agentkit router fit` run. A label row is JSON with `question` and `route` (parametric|retrieve|dictionary).
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentkit.errors import InputError
from agentkit.knowledge.base import KnowledgeSource
from agentkit.routing.base import ROUTE_CLASSES, Query, route_class


@dataclass
class Label:
    question: str
    route: str
    id: str = ""


def load_labels(path: str | Path) -> list[Label]:
    from agentkit.eval.metrics import read_jsonl

    def parse(row: dict[str, Any]) -> Label:
        label = Label(str(row["question"]), str(row["route"]), str(row.get("_id", row.get("id", row["_line"]))))
        if label.route not in ROUTE_CLASSES:
            raise InputError(f"route {label.route!r} is not one of {', '.join(ROUTE_CLASSES)}")
        return label

    expected = f'a routing label: JSON with "question" and "route" (one of {", ".join(ROUTE_CLASSES)})'
    return read_jsonl(path, parse, expected)


@dataclass
class RoutingReport:
    accuracy: float
    per_route: dict[str, dict[str, float]]
    retrieval_rate: float
    median_ms: float
    n: int
    policy: str = ""
    confusion: dict[str, dict[str, int]] = field(default_factory=dict)
    errors: list[dict[str, str]] = field(default_factory=list)

    def to_dict(self) -> dict[str, Any]:
        return {
            "accuracy": round(self.accuracy, 4),
            "per_route": self.per_route,
            "retrieval_rate": round(self.retrieval_rate, 4),
            "median_ms": round(self.median_ms, 3),
            "n": self.n,
            "policy": self.policy,
            "confusion": self.confusion,
            "errors": self.errors,
        }


def evaluate_routing(router: Any, sources: Mapping[str, KnowledgeSource], labels: Sequence[Label],
                     progress: bool = False) -> RoutingReport:
    router.decide("warm-up question", sources)  # loads encoders and indexes outside the timing
    predicted: list[str] = []
    times: list[float] = []
    errors = []
    iterator: Any = labels
    if progress:
        from tqdm import tqdm

        iterator = tqdm(labels, desc="routing", unit="q")
    for label in iterator:
        t0 = time.perf_counter()
        decision = router.decide(label.question, sources)
        times.append((time.perf_counter() - t0) * 1000)
        got = route_class(decision.targets, sources)
        predicted.append(got)
        if got != label.route:
            errors.append({"id": label.id, "question": label.question, "label": label.route, "got": got,
                           "reason": decision.reason})
    gold = [label.route for label in labels]
    classes = [c for c in ROUTE_CLASSES if c in gold or c in predicted]
    confusion = {g: {p: 0 for p in classes} for g in classes}
    for g, p in zip(gold, predicted, strict=True):
        confusion[g][p] += 1
    per_route = {}
    for c in classes:
        tp = confusion[c][c]
        sent = sum(confusion[g][c] for g in classes)
        actual = sum(confusion[c].values())
        per_route[c] = {
            "precision": round(tp / sent, 4) if sent else 0.0,
            "recall": round(tp / actual, 4) if actual else 0.0,
            "n": actual,
        }
    return RoutingReport(
        accuracy=sum(g == p for g, p in zip(gold, predicted, strict=True)) / len(gold),
        per_route=per_route,
        retrieval_rate=sum(p == "retrieve" for p in predicted) / len(predicted),
        median_ms=statistics.median(times),
        n=len(gold),
        policy=getattr(router, "name", type(router).__name__),
        confusion=confusion,
        errors=errors,
    )


def collect_signals(router: Any, sources: Mapping[str, KnowledgeSource], labels: Sequence[Label]) -> list[dict[str, float]]:
    """Every policy's signals for every question (no cascade short-cut): the combiner's inputs."""
    return [router.assess_all(Query(label.question, sources))[0] for label in labels]


def fit_router(router: Any, sources: Mapping[str, KnowledgeSource], labels: Sequence[Label],
               folds: int = 5) -> tuple[Any, float]:
    """Fit a `LogisticModel` on the router's policies; returns it and its cross-validated accuracy."""
    import numpy as np

    from agentkit.routing.learned import (
        FEATURES,
        LogisticModel,
        cross_validate,
        feature_vector,
    )

    signals = collect_signals(router, sources, labels)
    x = np.stack([feature_vector(s) for s in signals])
    y = [label.route for label in labels]
    cv = cross_validate(x, y, folds=folds) if len(labels) >= 2 * folds else float("nan")
    model = LogisticModel.fit(x, y, features=FEATURES)
    model.meta = {
        "policies": [p.name for p in router.policies],
        "n": len(labels),
        "cv_accuracy": round(cv, 4),
        "train_accuracy": round(float(np.mean([a == b for a, b in zip(model.predict(x), y, strict=True)])), 4),
        "labels": {c: y.count(c) for c in sorted(set(y))},
    }
    return model, cv
