"""Tokens per second through `Agent.stream` versus raw `Llama.create_chat_completion(stream=True)`.

Same GGUF, same messages (captured from the agent), same sampling settings, alternating runs, each
starting from an empty KV cache. Run: python bench/stream_throughput.py [--model PATH] [--runs 5].
"""

from __future__ import annotations

import argparse
import statistics
import time
from typing import Any

from agentkit import Agent, MemorySource, Passage
from agentkit.config import AgentSettings
from agentkit.llm.llama_cpp import LlamaCppLLM
from agentkit.llm.models import resolve_model_path
from agentkit.types import AnswerEvent, TokenEvent

PASSAGES = [
    ("tides", "Tides", "Tides are caused mainly by the gravitational pull of the Moon on the oceans, "
     "with a smaller contribution from the Sun. Most coasts see two high tides a day."),
    ("volcano", "Volcanoes", "A volcano is an opening in the Earth's crust through which lava, ash and "
     "gases escape. Volcanoes often form where tectonic plates meet."),
    ("rust", "Rust", "Rust is a systems programming language focused on memory safety without a "
     "garbage collector; its borrow checker enforces ownership rules at compile time."),
]
QUESTION = "What causes tides, and how many high tides does a coast usually see each day?"


class Recording:
    """Wraps the agent's model to capture the exact messages it sends."""

    def __init__(self, llm: LlamaCppLLM) -> None:
        self.llm, self.messages = llm, None

    def __getattr__(self, name: str) -> Any:
        return getattr(self.llm, name)

    def stream(self, messages, options=None):  # noqa: ANN001
        self.messages = [m.to_dict() for m in messages]
        return self.llm.stream(messages, options)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--model", default=None, help="GGUF file (default: bundled SmolLM2-135M)")
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--max-tokens", type=int, default=200)
    ap.add_argument("--threads", type=int, default=2)
    args = ap.parse_args()

    import llama_cpp

    path = resolve_model_path(args.model)
    src = MemorySource("docs", "science notes")
    src.add([Passage(pid, text, title) for pid, title, text in PASSAGES])
    llm = LlamaCppLLM(path, n_ctx=2048, n_threads=args.threads, seed=0)
    rec = Recording(llm)
    agent = Agent(rec, [src], settings=AgentSettings(max_tokens=args.max_tokens, temperature=0.0))  # type: ignore[arg-type]
    raw = llama_cpp.Llama(str(path), n_ctx=2048, n_threads=args.threads, seed=0, verbose=False)

    agent.ask(QUESTION)  # warm-up, and capture the prompt
    messages = rec.messages

    def run_agent() -> tuple[int, float, float]:
        llm._llama.reset()  # cold KV cache, as for raw
        t0 = time.perf_counter()
        first = None
        n = 0
        for ev in agent.stream(QUESTION):
            if isinstance(ev, TokenEvent) and first is None:
                first = time.perf_counter()
            if isinstance(ev, AnswerEvent):
                n = ev.answer.usage.completion_tokens
        end = time.perf_counter()
        return n, end - t0, end - (first or t0)

    def run_raw() -> tuple[int, float, float]:
        raw.reset()
        t0 = time.perf_counter()
        first = None
        n = 0
        for chunk in raw.create_chat_completion(messages, stream=True, max_tokens=args.max_tokens, temperature=0.0, stop=[], seed=0,
                                         repeat_penalty=agent.settings.repeat_penalty):
            if chunk["choices"][0]["delta"].get("content"):
                first = first or time.perf_counter()
                n += 1
        end = time.perf_counter()
        return n, end - t0, end - (first or t0)

    run_raw()
    results: dict[str, list[tuple[int, float, float]]] = {"raw llama_cpp": [], "agentkit Agent.stream": []}
    for _ in range(args.runs):
        results["raw llama_cpp"].append(run_raw())
        results["agentkit Agent.stream"].append(run_agent())

    print(f"model: {path.name}; prompt {llm.count_message_tokens([__import__('agentkit').Message(**m) for m in messages])} tokens; "
          f"max_tokens {args.max_tokens}; threads {args.threads}; runs {args.runs}")
    print(f"{'path':<24}{'tokens':>8}{'tok/s (total)':>15}{'tok/s (decode)':>16}")
    medians = {}
    for name, rows in results.items():
        n = statistics.median(r[0] for r in rows)
        total = statistics.median(r[0] / r[1] for r in rows)
        decode = statistics.median((r[0] - 1) / r[2] for r in rows if r[2] > 0)
        medians[name] = total
        print(f"{name:<24}{n:>8.0f}{total:>15.1f}{decode:>16.1f}")
    ratio = medians["agentkit Agent.stream"] / medians["raw llama_cpp"]
    print(f"agentkit / raw = {ratio:.3f}  (target >= 0.95: {'ok' if ratio >= 0.95 else 'BELOW'})")


if __name__ == "__main__":
    main()
