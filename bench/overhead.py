"""Framework overhead of one `Agent.ask` with FakeLLM and an in-memory source (no model time).

Run: python bench/overhead.py [--n 2000]. Target: median under 1 ms.
"""

from __future__ import annotations

import argparse
import statistics
import time

from agentkit import Agent, MemorySource, Passage
from agentkit.testing import FakeLLM

CORPUS = [
    ("install", "Install agentkit with pip install -e . from a checkout; the model ships on PyPI."),
    ("config", "Unknown configuration keys are rejected with an error that names the key."),
    ("ingest", "Ingestion chunks documents by tokens with overlap and gives each chunk a stable id."),
    ("route", "The router decides per question whether to retrieve, look up a word, or use the model."),
    ("cite", "Each [n] mark in an answer is mapped to the passage it points at; bad marks are dropped."),
] * 20


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000)
    n = ap.parse_args().n
    src = MemorySource("docs", "agentkit documentation")
    src.add([Passage(f"{k}#{i}", text, k.title()) for i, (k, text) in enumerate(CORPUS)])
    llm = FakeLLM("Reasoning: source [1] says so.\nAnswer: Install it with pip [1].")
    agent = Agent(llm, [src])
    questions = ["How do I install agentkit?", "What happens to unknown configuration keys?", "hello"]
    for q in questions * 20:  # warm caches: templates, regexes
        agent.ask(q)
    samples = {q: [] for q in questions}
    for i in range(n):
        q = questions[i % len(questions)]
        t = time.perf_counter()
        agent.ask(q)
        samples[q].append((time.perf_counter() - t) * 1e3)
    llm.calls.clear()
    print(f"{'question':<48}{'route':<12}{'median ms':>10}{'p95 ms':>9}")
    for q, t in samples.items():
        t.sort()
        route = ",".join(agent.ask(q).route.targets)
        print(f"{q:<48}{route:<12}{statistics.median(t):>10.3f}{t[int(len(t) * 0.95)]:>9.3f}")
    every = sorted(x for t in samples.values() for x in t)
    med = statistics.median(every)
    print(f"{'all':<60}{med:>10.3f}{every[int(len(every) * 0.95)]:>9.3f}   target < 1 ms: {'ok' if med < 1 else 'SLOW'}")


if __name__ == "__main__":
    main()
