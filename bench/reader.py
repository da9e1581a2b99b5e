"""Time to first token of the answer step: the quote reader (focused sentences) beside the
chain-of-thought reader (whole passages) and beside raw llama.cpp evaluating the very same prompt.

Run: python bench/reader.py [--questions 20]. Needs ../shared/data/squad2-mini. Both readers answer
the same sample of questions over the same embedded store, on the bundled SmolLM2-135M; the peer row
is llama-cpp-python's own `create_chat_completion(max_tokens=1)` on the quote reader's prompts, so
the difference between the first and last rows is what agentkit adds before the first token.
"""

from __future__ import annotations

import argparse
import json
import random
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

DATA = Path(__file__).resolve().parents[2] / "shared" / "data" / "squad2-mini"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--questions", type=int, default=20)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not (DATA / "questions.jsonl").is_file():
        sys.exit(f"needs {DATA} (the shared evaluation data)")

    from agentkit.agent import Agent
    from agentkit.config import load_config
    from agentkit.eval.corpus import corpus_store
    from agentkit.plugins import build_llm

    cfg = load_config(None)
    store, _ = corpus_store(cfg, DATA / "corpus.jsonl", 200, progress=False)
    llm = build_llm(cfg.llm)
    rows = [json.loads(line) for line in (DATA / "questions.jsonl").open()]
    questions = [r["question"] for r in random.Random(args.seed).sample([r for r in rows if r["answerable"]], args.questions)]

    prompts: list[list[dict[str, str]]] = []
    original_stream = llm.stream

    def recording(messages, options=None):  # type: ignore[no-untyped-def]
        prompts.append([m.to_dict() for m in messages])
        return original_stream(messages, options)

    results = {}
    for reader in ("quote", "cot"):
        settings = cfg.agent.model_copy(update={"reader": reader, "check_premises": False})
        agent = Agent(llm, {"corpus": store}, settings=settings, config=cfg)
        llm.stream = recording if reader == "quote" else original_stream  # type: ignore[method-assign]
        agent.ask("warm-up: what is this about?", route=["corpus"])
        if reader == "quote":
            prompts.clear()
        ttft, tokens, total, focus = [], [], [], []
        for q in questions:
            t = time.perf_counter()
            answer = agent.ask(q, route=["corpus"])
            total.append((time.perf_counter() - t) * 1000)
            if "ttft_ms" in answer.timings:
                ttft.append(answer.timings["ttft_ms"])
            tokens.append(answer.usage.prompt_tokens)
            if "focus_ms" in answer.timings:
                focus.append(answer.timings["focus_ms"])
        results[reader] = (ttft, tokens, total, focus)
    llm.stream = original_stream  # type: ignore[method-assign]

    # The peer: llama.cpp itself on the same prompts (its prefix cache on, as agentkit's is).
    raw = llm._model()  # noqa: SLF001 - the loaded llama_cpp.Llama
    peer = []
    raw.create_chat_completion(prompts[0], max_tokens=1)
    for messages in prompts:
        t = time.perf_counter()
        raw.create_chat_completion(messages, max_tokens=1, temperature=0.0)
        peer.append((time.perf_counter() - t) * 1000)

    print(f"answer step on {len(questions)} answerable squad2-mini questions, bundled SmolLM2-135M")
    print(f"{'':44} {'median TTFT ms':>15} {'prompt tokens':>14} {'median total ms':>16} {'median focus ms':>16}")
    for reader, label in (("quote", "agentkit, quote reader (focused sentences)"), ("cot", "agentkit, cot reader (whole passages)")):
        ttft, tokens, total, focus = results[reader]
        spent = f"{statistics.median(focus):,.0f}" if focus else "–"
        print(f"{label:44} {statistics.median(ttft):>15,.0f} {statistics.median(tokens):>14,.0f} "
              f"{statistics.median(total):>16,.0f} {spent:>16}")
    print(f"{'llama.cpp, same prompts as the quote reader':44} {statistics.median(peer):>15,.0f} {'':>14} {'':>16} {'':>16}")
    print("focus ms: sentence splitting and ranking (MiniLM token vectors for sentences not seen before), "
          "included in TTFT")


if __name__ == "__main__":
    main()
