"""The learned combiner: multinomial logistic regression over the policies' signals.

Fitted on a labelled file with `agentkit router fit --labels FILE` and saved as JSON beside the
config; numpy only, so it trains in a second and loads in a millisecond.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from agentkit.errors import ConfigError
from agentkit.routing.base import ROUTE_CLASSES

#: Signals every policy reports in a source-independent form; a missing one counts as 0.
FEATURES = (
    "rules:parametric", "rules:source",
    "dictionary:shape", "dictionary:hit",
    "semantic:parametric", "semantic:documents", "semantic:dictionary", "semantic:margin",
    "probe:top", "probe:gap", "probe:coverage", "probe:hits",
    "confidence:mean", "confidence:min", "confidence:entropy",
    "judge:parametric", "judge:retrieve", "judge:dictionary",
)


def feature_vector(signals: Mapping[str, float], names: Sequence[str] = FEATURES) -> np.ndarray:
    return np.array([float(signals.get(n, 0.0)) for n in names], dtype=np.float64)


@dataclass
class LogisticModel:
    """Softmax regression with L2, on standardised features."""

    features: list[str]
    classes: list[str]
    mean: np.ndarray
    scale: np.ndarray
    weights: np.ndarray  # (n_features, n_classes)
    bias: np.ndarray  # (n_classes,)
    meta: dict[str, Any] = field(default_factory=dict)

    @classmethod
    def fit(
        cls,
        x: np.ndarray,
        y: Sequence[str],
        *,
        features: Sequence[str] = FEATURES,
        classes: Sequence[str] = ROUTE_CLASSES,
        l2: float = 1e-2,
        iterations: int = 3000,
        learning_rate: float = 0.5,
    ) -> LogisticModel:
        classes = [c for c in classes if c in set(y)] or list(classes)
        index = {c: i for i, c in enumerate(classes)}
        unknown = sorted(set(y) - set(index))
        if unknown:
            raise ConfigError(f"labels {unknown} are not routes; a label is one of {', '.join(classes)}")
        mean = x.mean(axis=0)
        scale = x.std(axis=0)
        scale[scale < 1e-9] = 1.0
        z = (x - mean) / scale
        onehot = np.zeros((len(y), len(classes)))
        onehot[np.arange(len(y)), [index[c] for c in y]] = 1.0
        w = np.zeros((z.shape[1], len(classes)))
        b = np.zeros(len(classes))
        n = len(y)
        for _ in range(iterations):  # full-batch gradient descent: convex, small, deterministic
            p = _softmax(z @ w + b)
            grad = p - onehot
            w -= learning_rate * (z.T @ grad / n + l2 * w)
            b -= learning_rate * grad.mean(axis=0)
        return cls(list(features), classes, mean, scale, w, b)

    def proba(self, x: np.ndarray) -> np.ndarray:
        z = (np.atleast_2d(x) - self.mean) / self.scale
        return _softmax(z @ self.weights + self.bias)

    def predict(self, x: np.ndarray) -> list[str]:
        return [self.classes[i] for i in self.proba(x).argmax(axis=1)]

    def to_dict(self) -> dict[str, Any]:
        return {
            "format": "agentkit-router/1",
            "features": self.features,
            "classes": self.classes,
            "mean": self.mean.tolist(),
            "scale": self.scale.tolist(),
            "weights": self.weights.tolist(),
            "bias": self.bias.tolist(),
            "meta": self.meta,
        }

    def save(self, path: str | Path) -> None:
        Path(path).write_text(json.dumps(self.to_dict(), indent=1) + "\n", encoding="utf-8")

    @classmethod
    def load(cls, path: str | Path) -> LogisticModel:
        p = Path(path)
        if not p.is_file():
            raise ConfigError(
                f"router model {p} does not exist; create it with `agentkit router fit --labels FILE` "
                f"or set router.policy: auto"
            )
        try:
            d = json.loads(p.read_text(encoding="utf-8"))
            if d.get("format") != "agentkit-router/1":
                raise ValueError(f"format {d.get('format')!r}")
            return cls(
                d["features"], d["classes"], np.array(d["mean"]), np.array(d["scale"]),
                np.array(d["weights"]), np.array(d["bias"]), d.get("meta", {}),
            )
        except (ValueError, KeyError, TypeError) as exc:
            raise ConfigError(f"router model {p} is not a router fitted by agentkit ({exc}); fit it again") from None


def cross_validate(x: np.ndarray, y: Sequence[str], folds: int = 5, seed: int = 0, **fit: Any) -> float:
    """Accuracy of k-fold cross-validation (stratified by label, fixed seed)."""
    y = np.asarray(y)
    rng = np.random.default_rng(seed)
    fold_of = np.zeros(len(y), dtype=int)
    for label in np.unique(y):
        idx = np.flatnonzero(y == label)
        rng.shuffle(idx)
        fold_of[idx] = np.arange(len(idx)) % folds
    correct = 0
    for f in range(folds):
        test = fold_of == f
        if not test.any() or test.all():
            continue
        model = LogisticModel.fit(x[~test], list(y[~test]), **fit)
        correct += int(sum(a == b for a, b in zip(model.predict(x[test]), y[test], strict=True)))
    return correct / len(y)


def _softmax(a: np.ndarray) -> np.ndarray:
    a = a - a.max(axis=1, keepdims=True)
    e = np.exp(a)
    return e / e.sum(axis=1, keepdims=True)
