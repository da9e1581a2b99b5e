"""The rules policy: regular expressions and keywords per target, read from YAML.

Packaged rules (rules.yaml) send small talk, arithmetic and writing tasks to the model alone.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from functools import lru_cache
from pathlib import Path
from typing import Any

from agentkit.errors import ConfigError
from agentkit.routing.base import Query, Vote
from agentkit.text import terms
from agentkit.types import PARAMETRIC

RULES_FILE = Path(__file__).with_name("rules.yaml")


@lru_cache(maxsize=4)
def packaged_rules(path: Path = RULES_FILE) -> dict[str, dict[str, str]]:
    import yaml

    data = yaml.safe_load(path.read_text(encoding="utf-8")) or {}
    return {target: dict(rules or {}) for target, rules in data.items()}


class RulesPolicy:
    """First matching rule wins; `parametric` rules are tried before source rules.

    `rules` maps a target (a source name or "parametric") to patterns (label -> regex) and
    keywords (words whose stems must all occur in the question).
    """

    name = "rules"
    calls_model = False

    def __init__(
        self,
        rules: Mapping[str, Mapping[str, Any]] | None = None,
        *,
        use_packaged: bool = True,
        origin: str = "router.rules",
    ) -> None:
        merged: dict[str, dict[str, Any]] = {}
        if use_packaged:
            for target, patterns in packaged_rules().items():
                merged[target] = {"patterns": dict(patterns), "keywords": []}
        for target, spec in (rules or {}).items():
            entry = merged.setdefault(target, {"patterns": {}, "keywords": []})
            patterns = spec.get("patterns") or {}
            if isinstance(patterns, (list, tuple)):
                patterns = {p: p for p in patterns}
            entry["patterns"].update(patterns)
            entry["keywords"] += list(spec.get("keywords") or [])
        self._rules: list[tuple[str, str, re.Pattern[str]]] = []
        self._keywords: list[tuple[str, str, set[str]]] = []
        for target in sorted(merged, key=lambda t: t != PARAMETRIC):
            for label, pattern in merged[target]["patterns"].items():
                try:
                    self._rules.append((target, label, re.compile(pattern, re.IGNORECASE)))
                except re.error as exc:
                    raise ConfigError(f"{origin}.{target}: pattern {pattern!r} is not a valid regex: {exc}") from None
            for keyword in merged[target]["keywords"]:
                stems = set(terms(keyword))
                if stems:
                    self._keywords.append((target, f"keyword {keyword!r}", stems))

    @property
    def targets(self) -> list[str]:
        return list(dict.fromkeys([t for t, _, _ in self._rules] + [t for t, _, _ in self._keywords]))

    def assess(self, query: Query) -> Vote:
        question = query.question
        known = {PARAMETRIC, *query.sources}
        q_terms = set(terms(question))
        hit: tuple[str, str] | None = None
        for target, label, pattern in self._rules:
            if target in known and pattern.search(question):
                hit = (target, label)
                break
        if hit is None:
            for target, label, stems in self._keywords:
                if target in known and stems <= q_terms:
                    hit = (target, label)
                    break
        if hit is None:
            return Vote(signals={"rules:parametric": 0.0, "rules:source": 0.0})
        target, label = hit
        if target == PARAMETRIC:
            return Vote([PARAMETRIC], 0.9, f"{label}: the model can answer this alone",
                        {"rules:parametric": 1.0, "rules:source": 0.0}, decisive=True)
        return Vote([target], 0.9, f"a rule for {target!r} matched ({label})",
                    {"rules:parametric": 0.0, "rules:source": 1.0, f"rules:{target}": 1.0}, decisive=True)

