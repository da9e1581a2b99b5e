"""The retrieval-probe policy: a cheap search of each document source, scored by what it finds.

Signals per source: the top score, the gap to the second, the share of the question's terms the
top passage covers. A source that finds nothing is not worth searching; a source that fails is
not "nothing": it is kept as a target (the agent reports its error) rather than routed around.
"""

from __future__ import annotations

import logging
import math

from agentkit.routing.base import Query, Vote
from agentkit.text import terms
from agentkit.types import PARAMETRIC

log = logging.getLogger(__name__)


class ProbePolicy:
    """Tentative by design: it says which sources have anything at all, and how strongly."""

    name = "probe"
    calls_model = False

    def __init__(self, k: int = 3, min_coverage: float = 0.0) -> None:
        self.k = k
        #: Sources whose top passage covers less of the question than this are left out.
        self.min_coverage = min_coverage

    def assess(self, query: Query) -> Vote:
        q_terms = set(terms(query.question))
        signals: dict[str, float] = {}
        found: list[tuple[float, str]] = []
        failed: list[str] = []
        best_top = best_gap = best_cov = 0.0
        for name in query.documents:
            try:
                hits = query.sources[name].search(query.question, k=self.k)
            except Exception as exc:  # noqa: BLE001 - the agent reports the error on the answer
                log.debug("probe: source %r failed: %s: %s", name, type(exc).__name__, exc)
                failed.append(name)
                signals.update({f"probe:{name}:top": 0.0, f"probe:{name}:gap": 0.0, f"probe:{name}:coverage": 0.0,
                                f"probe:{name}:failed": 1.0})
                continue
            top = hits[0].score if hits else 0.0
            gap = top - hits[1].score if len(hits) > 1 else top
            cov = 0.0
            if hits and q_terms:
                cov = len(q_terms & set(terms(f"{hits[0].title} {hits[0].text}"))) / len(q_terms)
            signals[f"probe:{name}:top"] = round(top, 4)
            signals[f"probe:{name}:gap"] = round(gap, 4)
            signals[f"probe:{name}:coverage"] = round(cov, 3)
            if hits and cov >= self.min_coverage:
                found.append((cov, name))
            if top > best_top:
                best_top, best_gap, best_cov = top, gap, cov
        # Scale-free forms for the learned combiner: BM25 scores grow with query length.
        signals["probe:top"] = round(math.log1p(max(best_top, 0.0)), 4)
        signals["probe:gap"] = round(math.log1p(max(best_gap, 0.0)), 4)
        signals["probe:coverage"] = round(best_cov, 3)
        signals["probe:hits"] = float(len(found))
        signals["probe:failed"] = float(len(failed))
        if not query.documents:
            return Vote(signals=signals)
        broken = f"; could not search {', '.join(failed)}" if failed else ""
        if not found and failed:
            # Unknown is not "no match": answering from memory here would be a made-up answer
            # presented as if the documents had nothing.
            return Vote(failed, 0.3, f"could not search {', '.join(failed)}; not answering from memory "
                        "as if nothing matched", signals)
        if not found:
            return Vote([PARAMETRIC], 0.6, "no document source has a passage matching the question", signals)
        names = [n for _, n in sorted(found, reverse=True)]
        why = ", ".join(f"{n} (covers {signals[f'probe:{n}:coverage']:.0%} of the question)" for n in names)
        return Vote(names, 0.5 + 0.4 * best_cov, f"passages match in {why}{broken}", signals)
