"""The citation check: does each cited passage support the sentence that cites it?

Lexical by default (the sentence's content words and numbers must be in the passage); any
entailment model can stand in through the `Verifier` protocol.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Protocol

from agentkit.text import terms
from agentkit.types import Citation

_NUMBER = re.compile(r"\d+(?:[.,]\d+)*")


class Verifier(Protocol):
    name: str

    def support(self, claim: str, evidence: str) -> float:
        """0 (unrelated or contradicted) to 1 (the evidence states the claim)."""
        ...


class LexicalVerifier:
    """Share of the claim's content words found in the passage; a number the passage lacks
    counts double, because a wrong figure is the commonest unsupported detail."""

    name = "lexical"

    def support(self, claim: str, evidence: str) -> float:
        words = set(terms(claim))
        if not words:
            return 1.0  # nothing to check ("Yes." cites its source)
        have = set(terms(evidence))
        nums = set(_NUMBER.findall(claim))
        missing_nums = {n for n in nums if n not in evidence}
        found = len(words & have)
        total = len(words) + len(missing_nums)
        return round(max(0.0, found - len(missing_nums)) / total, 4) if total else 1.0


@dataclass
class Check:
    supported: list[Citation] = field(default_factory=list)
    unsupported: list[Citation] = field(default_factory=list)
    #: Supported only in part: a clause holds up, the whole sentence does not.
    partial: list[Citation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """At least one citation holds up, and none is contradicted outright."""
        return bool(self.supported)


def check_citations(citations: Sequence[Citation], verifier: Verifier, threshold: float) -> Check:
    """Score every citation (sets `support` and `supported` on it).

    A sentence counts as supported when it, or one of its substantial clauses, is: small models
    tack invented asides onto a sourced statement. Such a sentence lands in `partial` too, so the
    caller can flag the unsupported rest.
    """
    from agentkit.reasoning.citations import claims

    result = Check()
    for c in citations:
        evidence = f"{c.passage.title}\n{c.passage.text}"
        whole = verifier.support(c.sentence or "", evidence)
        best = max([whole, *(verifier.support(part, evidence) for part in claims(c.sentence or "")[1:])])
        c.support = round(best, 4)
        c.supported = best >= threshold
        (result.supported if c.supported else result.unsupported).append(c)
        if c.supported and whole < threshold:
            result.partial.append(c)
    return result
