"""The model-calling routing policies on the real bundled GGUF model (SmolLM2-135M, Q4_1).

Measured on the 140 labelled questions of ../shared/data/routing/dev.jsonl (`python
tests/test_routing_real_model.py` prints the table), the 135M model cannot route by itself: the
judge names the same target whatever the question, and the confidence policy drafts confident
answers to questions it cannot know. So these tests check what agentkit adds around the model,
and the one decision the model makes right every time: a well-known fact or a sum stays with the
model. Labelled routing accuracy is the cascade's job (tests/test_routing_policies.py).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import pytest

from agentkit.knowledge.memory import MemorySource
from agentkit.llm.llama_cpp import LlamaCppLLM
from agentkit.routing.base import Query, route_class
from agentkit.routing.confidence import ConfidencePolicy
from agentkit.routing.judge import JudgePolicy
from agentkit.types import PARAMETRIC, Passage

pytestmark = pytest.mark.real_model

LABELS = Path(__file__).resolve().parents[2] / "shared" / "data" / "routing" / "dev.jsonl"


class Dictionary(MemorySource):
    kind = "dictionary"


def make_sources(papers: str = "papers", dictionary: str = "wordnet") -> dict[str, MemorySource]:
    docs = MemorySource(papers, "biomedical research papers: drugs, genes, diseases and clinical trials")
    docs.add([Passage("p1", "Aspirin lowers the risk of heart attacks in some adults.", "Aspirin")])
    return {papers: docs, dictionary: Dictionary(dictionary, "an English dictionary: meanings of words")}


@pytest.fixture(scope="module")
def llm() -> LlamaCppLLM:
    return LlamaCppLLM(n_ctx=2048, seed=0)


def test_the_judge_is_held_to_the_targets_of_each_question(llm: LlamaCppLLM) -> None:
    # Names no model would write unprompted: a reply naming one of them shows that the schema built
    # from this question's sources reached llama.cpp's grammar (without it the model writes prose).
    judge = JudgePolicy(llm)
    for names in (("zq_alpha", "xk_beta"), ("kb_7", "lex_9")):
        sources = make_sources(*names)
        for question in ("Does aspirin reduce the risk of heart attacks?", "Hello there!", ""):
            vote = judge.assess(Query(question or "(empty)", sources))
            assert vote.signals["judge:invalid"] == 0.0, vote
            [target] = vote.targets
            assert target in {PARAMETRIC, *names}
            # The vote's kind signal is the kind of the target it names.
            assert vote.signals[f"judge:{route_class([target], sources)}"] == 1.0
            assert vote.decisive


@pytest.mark.parametrize("question", ["What is the capital of France?", "What is the capital of Spain?",
                                      "What is 17 times 3?", "What planet is closest to the Sun?"])
def test_the_confidence_policy_keeps_well_known_facts_with_the_model(llm: LlamaCppLLM, question: str) -> None:
    # Measured mean token log-probability -0.3 to -0.5 for these, against the -1.0 threshold.
    vote = ConfidencePolicy(llm).assess(Query(question, make_sources()))
    s = vote.signals
    assert s["confidence:available"] == 1.0
    assert s["confidence:min"] <= s["confidence:mean"] <= 0.0 and s["confidence:entropy"] >= 0.0
    assert vote.targets == [PARAMETRIC], s


def test_the_confidence_policy_looks_up_below_its_threshold(llm: LlamaCppLLM) -> None:
    # The same real draft on both sides of the threshold: the decision follows the measured mean.
    query = Query("What is the capital of Spain?", make_sources())
    mean = ConfidencePolicy(llm).assess(query).signals["confidence:mean"]
    assert ConfidencePolicy(llm, min_mean_logprob=mean + 0.05).assess(query).targets == ["papers"]
    assert ConfidencePolicy(llm, min_mean_logprob=mean - 0.05).assess(query).targets == [PARAMETRIC]


def measure(labels: Path = LABELS) -> None:
    """Print what the judge and the confidence policy choose on the labelled routing questions."""
    llm = LlamaCppLLM(n_ctx=2048, seed=0)
    rows = [json.loads(line) for line in labels.read_text().splitlines() if line.strip()]
    for policy in (JudgePolicy(llm), ConfidencePolicy(llm)):
        sources = make_sources()
        picks: Counter[tuple[str, str]] = Counter()
        for row in rows:
            vote = policy.assess(Query(row["question"], sources))
            picks[row["route"], route_class(vote.targets, sources) if vote.targets else "abstain"] += 1
        right = sum(n for (want, got), n in picks.items() if want == got)
        print(f"{policy.name}: {right}/{len(rows)} right")
        for want in ("parametric", "retrieve", "dictionary"):
            got = {g: n for (w, g), n in sorted(picks.items()) if w == want}
            print(f"  labelled {want}: chose {got}")


if __name__ == "__main__":
    measure(Path(sys.argv[1]) if len(sys.argv) > 1 else LABELS)
