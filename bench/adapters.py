"""Adapter switch time: agentkit's per-call LoRA switch beside reloading the model with the adapter
(llama-cpp-python's own way: `Llama(model_path, lora_path=...)`), on the bundled SmolLM2-135M.

Run: python bench/adapters.py [--runs 20]. Needs the tune extra (it makes two random LoRAs with
PEFT and exports them to GGUF in a temporary folder). Prints one table of medians; with torch
and peft, the transformers backend's PEFT switch is measured too.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

QUESTION = "Name three colours of the rainbow."


def make_adapters(folder: Path) -> tuple[list[Path], list[Path]]:
    """Two PEFT LoRAs with random B matrices (so they change outputs), and their GGUF exports."""
    from agentkit.llm.hf import load_hf_model
    from agentkit.testing import noisy_lora
    from agentkit.tune.export import export_gguf_lora

    peft_dirs, ggufs = [], []
    for i in range(2):
        hf = load_hf_model(device="cpu", cache_dir=folder / "hf-cache")
        model = noisy_lora(hf.model, ["q_proj", "k_proj", "v_proj", "o_proj"], std=0.05, seed=i)
        model.save_pretrained(str(folder / f"peft{i}"), save_embedding_layers=False)
        peft_dirs.append(folder / f"peft{i}")
        ggufs.append(export_gguf_lora(folder / f"peft{i}", folder / f"lora{i}.gguf"))
    return peft_dirs, ggufs


def ms(seconds: float) -> str:
    return f"{seconds * 1000:,.2f}"


def first_tokens(llm: Any, runs: int) -> tuple[float, float]:
    """Median seconds to a first token: asking again with adapter a, then switching to b."""
    from agentkit.llm.base import GenerationOptions
    from agentkit.types import Message

    msgs = [Message("user", QUESTION)]
    same, switched = [], []
    for _ in range(runs):
        llm.chat(msgs, GenerationOptions(max_tokens=1, temperature=0.0, adapters={"a": 1.0}))
        for name, out in (("a", same), ("b", switched)):
            t = time.perf_counter()
            llm.chat(msgs, GenerationOptions(max_tokens=1, temperature=0.0, adapters={name: 1.0}))
            out.append(time.perf_counter() - t)
    return statistics.median(same), statistics.median(switched)


def bench_llama_cpp(ggufs: list[Path], runs: int) -> list[tuple[str, float]]:
    from llama_cpp import Llama

    from agentkit.llm.llama_cpp import LlamaCppLLM
    from agentkit.llm.models import bundled_model_path

    rows: list[tuple[str, float]] = []
    t = time.perf_counter()
    llm = LlamaCppLLM(n_ctx=1024, seed=0, adapters={"a": ggufs[0], "b": ggufs[1]})
    llm.warm_up()
    rows.append(("llama.cpp: load base + 2 adapters", time.perf_counter() - t))
    loaded = llm._llama
    switch = []
    for i in range(runs):
        wanted = (("a", 1.0),) if i % 2 == 0 else (("b", 1.0),)
        t = time.perf_counter()
        with llm._generate_lock:
            llm._switch(loaded, wanted)
        switch.append(time.perf_counter() - t)
    rows.append(("llama.cpp: switch adapter (agentkit)", statistics.median(switch)))

    same, switched = first_tokens(llm, runs)
    rows.append(("llama.cpp: first token, same adapter", same))
    rows.append(("llama.cpp: first token, after a switch", switched))
    assert llm._llama is loaded, "the base model was reloaded"
    llm.close()

    reload = []
    for i in range(min(runs, 5)):
        t = time.perf_counter()
        model = Llama(str(bundled_model_path()), n_ctx=1024, lora_path=str(ggufs[i % 2]), verbose=False)
        model.create_chat_completion([{"role": "user", "content": QUESTION}], max_tokens=1, temperature=0.0)
        reload.append(time.perf_counter() - t)
        model.close()
    rows.append(("llama-cpp-python: reload with lora_path", statistics.median(reload)))
    return rows


def bench_transformers(peft_dirs: list[Path], folder: Path, runs: int) -> list[tuple[str, float]]:
    from agentkit.llm.base import GenerationOptions
    from agentkit.llm.transformers import TransformersLLM
    from agentkit.types import Message

    rows: list[tuple[str, float]] = []
    t = time.perf_counter()
    llm = TransformersLLM(cache_dir=str(folder / "hf-cache"), device="cpu")
    llm.add_adapter("a", peft_dirs[0])
    llm.add_adapter("b", peft_dirs[1])
    llm.chat([Message("user", QUESTION)], GenerationOptions(max_tokens=1, temperature=0.0))
    rows.append(("transformers: load base + 2 adapters (cached)", time.perf_counter() - t))
    same, switched = first_tokens(llm, max(3, runs // 4))
    rows.append(("transformers: first token, same adapter", same))
    rows.append(("transformers: first token, after a switch", switched))
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=20)
    runs = ap.parse_args().runs
    if importlib.util.find_spec("peft") is None:
        print("adapters: skipped (needs the tune extra to make adapters: pip install 'agentkit[tune]')")
        return
    os.environ.setdefault("TRANSFORMERS_VERBOSITY", "error")
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        peft_dirs, ggufs = make_adapters(folder)
        rows = bench_llama_cpp(ggufs, runs)
        try:
            rows += bench_transformers(peft_dirs, folder, runs)
        except Exception as exc:  # noqa: BLE001 - the llama.cpp table still stands
            print(f"(transformers backend not measured: {type(exc).__name__}: {exc})")
    print(f"\n{'adapter switching, SmolLM2-135M Q4_1, CPU':<48}{'median ms':>14}")
    for name, seconds in rows:
        print(f"{name:<48}{ms(seconds):>14}")


if __name__ == "__main__":
    main()
