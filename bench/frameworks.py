"""Per-question framework overhead: agentkit vs a LangChain chain vs a LlamaIndex query engine.

Run: python bench/frameworks.py [--n 2000] [--block 50]; same questions, fake reply and MemorySource
for all three. Target: agentkit's median at most a tenth of the faster peer's.
"""

from __future__ import annotations

import argparse
import gc
import statistics
import time
from collections.abc import Callable
from typing import Any

from agentkit import Agent, MemorySource, Passage
from agentkit.testing import FakeLLM

CORPUS = [
    ("install", "Install agentkit with pip install -e . from a checkout; the model ships on PyPI."),
    ("config", "Unknown configuration keys are rejected with an error that names the key."),
    ("ingest", "Ingestion chunks documents by tokens with overlap and gives each chunk a stable id."),
    ("route", "The router decides per question whether to retrieve, look up a word, or use the model."),
    ("cite", "Each [n] mark in an answer is mapped to the passage it points at; bad marks are dropped."),
] * 20
QUESTIONS = ["How do I install agentkit?", "What happens to unknown configuration keys?"]
REPLY = "Reasoning: source [1] says so.\nAnswer: Install it with pip [1]."
TOP_K = 5  # agentkit's default agent.top_k; the peers retrieve as many


def build_agentkit(src: MemorySource) -> Callable[[str], Any]:
    llm = FakeLLM(REPLY)
    agent = Agent(llm, [src])

    def ask(question: str) -> Any:
        llm.calls.clear()  # FakeLLM records every call for test assertions; keep that out of the timing
        return agent.ask(question)

    return ask


def build_langchain(src: MemorySource) -> Callable[[str], Any]:
    from langchain_core.language_models.fake_chat_models import FakeListChatModel
    from langchain_core.output_parsers import StrOutputParser
    from langchain_core.prompts import ChatPromptTemplate
    from langchain_core.runnables import RunnablePassthrough

    from agentkit.integrations.langchain import AgentkitRetriever

    def numbered(docs: list[Any]) -> str:
        return "\n\n".join(f"[{i}] {d.metadata.get('title', '')}\n{d.page_content}" for i, d in enumerate(docs, 1))

    prompt = ChatPromptTemplate.from_messages([
        ("system", "Answer from the numbered sources and cite them as [n]."),
        ("human", "Sources:\n{context}\n\nQuestion: {question}"),
    ])
    chain = (
        {"context": AgentkitRetriever(source=src, k=TOP_K) | numbered, "question": RunnablePassthrough()}
        | prompt
        | FakeListChatModel(responses=[REPLY])
        | StrOutputParser()
    )
    return chain.invoke


def build_llama_index(src: MemorySource) -> Callable[[str], Any]:
    from llama_index.core.base.llms.types import CompletionResponse
    from llama_index.core.llms.callbacks import llm_completion_callback
    from llama_index.core.llms.mock import MockLLM
    from llama_index.core.query_engine import RetrieverQueryEngine

    from agentkit.integrations.llama_index import AgentkitLlamaRetriever

    class FixedReplyLLM(MockLLM):
        """MockLLM that returns the same reply as the other two fakes instead of echoing the prompt."""

        @llm_completion_callback()
        def complete(self, prompt: str, formatted: bool = False, **kwargs: Any) -> CompletionResponse:
            return CompletionResponse(text=REPLY)

    engine = RetrieverQueryEngine.from_args(AgentkitLlamaRetriever(src, k=TOP_K), llm=FixedReplyLLM(max_tokens=None))
    return engine.query


def check(name: str, result: Any) -> None:
    """Each framework must really retrieve and answer, or the timing means nothing."""
    text = str(getattr(result, "text", result))
    assert "[1]" in text, f"{name}: unexpected reply {text!r}"
    if name == "agentkit":
        assert result.route.targets == ["docs"] and result.cited_ids, f"agentkit did not retrieve: {result.route}"
    if name == "llama_index":
        assert len(result.source_nodes) == TOP_K, f"llama_index retrieved {len(result.source_nodes)} nodes"


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--n", type=int, default=2000, help="timed questions per framework")
    ap.add_argument("--warmup", type=int, default=200)
    ap.add_argument("--block", type=int, default=50, help="questions in a row per framework, per round")
    args = ap.parse_args()

    src = MemorySource("docs", "agentkit documentation")
    src.add([Passage(f"{k}#{i}", text, k.title()) for i, (k, text) in enumerate(CORPUS)])
    runners = {
        "agentkit": build_agentkit(src),
        "langchain": build_langchain(src),
        "llama_index": build_llama_index(src),
        "retrieval only": lambda q: src.search(q, k=TOP_K),
    }
    for name, run in runners.items():
        if name != "retrieval only":
            check(name, run(QUESTIONS[0]))
        for i in range(args.warmup):
            run(QUESTIONS[i % len(QUESTIONS)])

    # Rounds of short blocks: a noisy neighbour or a frequency change hits every framework alike,
    # while each framework runs a few questions in a row, as an application would.
    samples: dict[str, list[float]] = {name: [] for name in runners}
    gc.collect()
    for start in range(0, args.n, args.block):
        for name, run in runners.items():
            for i in range(start, min(start + args.block, args.n)):
                q = QUESTIONS[i % len(QUESTIONS)]
                t = time.perf_counter()
                run(q)
                samples[name].append((time.perf_counter() - t) * 1e6)

    med = {name: statistics.median(t) for name, t in samples.items()}
    base = med["retrieval only"]
    print(f"{'framework':<16}{'median µs':>11}{'p90 µs':>10}{'minus retrieval µs':>20}{'ratio':>8}")
    for name, times in samples.items():
        times.sort()
        p90 = times[int(len(times) * 0.9)]
        print(f"{name:<16}{med[name]:>11.1f}{p90:>10.1f}{med[name] - base:>20.1f}{med[name] / med['agentkit']:>8.2f}")
    peer = min(med["langchain"], med["llama_index"])
    total = med["agentkit"] / peer
    overhead = (med["agentkit"] - base) / (peer - base)
    verdict = "ok" if total <= 0.1 else "MISSED"
    print(f"agentkit / faster peer: {total:.3f} per question, {overhead:.3f} excluding the shared retrieval"
          f"   target <= 0.100: {verdict}")


if __name__ == "__main__":
    main()
