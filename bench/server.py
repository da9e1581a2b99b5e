"""Throughput and tail latency of `agentkit serve` with FakeLLM (no model time): HTTP + agent overhead.

Run: python bench/server.py [--clients 8] [--seconds 5]. The server runs in its own process.
"""

from __future__ import annotations

import argparse
import asyncio
import multiprocessing
import statistics
import time

import httpx

from agentkit.server.background import free_port

QUESTIONS = ["How do I install agentkit?", "What happens to unknown configuration keys?", "What does the router do?"]
SCENARIOS = [
    ("agent, JSON", "agentkit", False),
    ("agent, SSE stream", "agentkit", True),
    ("bare model, JSON", "agentkit/raw", False),
]


def serve(port: int, clients: int) -> None:
    import sys

    sys.path.insert(0, "bench")
    from overhead import CORPUS

    from agentkit import Agent, MemorySource, Passage
    from agentkit.server.app import create_app
    from agentkit.server.background import ServerThread
    from agentkit.testing import FakeLLM

    src = MemorySource("docs", "agentkit documentation")
    src.add([Passage(f"{k}#{i}", text, k.title()) for i, (k, text) in enumerate(CORPUS)])
    app = create_app(Agent(FakeLLM(), [src]), max_concurrency=clients)
    with ServerThread(app, port=port, log_level="error"):
        while True:
            time.sleep(3600)


async def one(client: httpx.AsyncClient, model: str, stream: bool, i: int) -> tuple[float, float]:
    """(total ms, first-token ms) of one request."""
    body = {"model": model, "messages": [{"role": "user", "content": QUESTIONS[i % len(QUESTIONS)]}], "stream": stream}
    t = time.perf_counter()
    first = 0.0
    if not stream:
        response = await client.post("/v1/chat/completions", json=body)
        response.raise_for_status()
    else:
        async with client.stream("POST", "/v1/chat/completions", json=body) as response:
            response.raise_for_status()
            async for line in response.aiter_lines():
                if not first and '"content": "' in line and '"content": ""' not in line:
                    first = (time.perf_counter() - t) * 1e3
                if line == "data: [DONE]":
                    break
    return (time.perf_counter() - t) * 1e3, first


async def scenario(url: str, model: str, stream: bool, clients: int, seconds: float) -> tuple[int, float, list[float], list[float]]:
    samples: list[float] = []
    firsts: list[float] = []
    limits = httpx.Limits(max_connections=clients, max_keepalive_connections=clients)
    async with httpx.AsyncClient(base_url=url, limits=limits, timeout=30) as client:
        for i in range(clients * 3):  # warm up: connections, templates
            await one(client, model, stream, i)
        stop = time.perf_counter() + seconds

        async def worker(w: int) -> None:
            i = w
            while time.perf_counter() < stop:
                total, first = await one(client, model, stream, i)
                samples.append(total)
                if first:
                    firsts.append(first)
                i += clients

        t = time.perf_counter()
        await asyncio.gather(*(worker(w) for w in range(clients)))
        elapsed = time.perf_counter() - t
    return len(samples), len(samples) / elapsed, sorted(samples), sorted(firsts)


def pct(values: list[float], p: float) -> float:
    return values[min(len(values) - 1, int(len(values) * p))] if values else float("nan")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--clients", type=int, default=8)
    ap.add_argument("--seconds", type=float, default=5.0)
    args = ap.parse_args()
    port = free_port()
    proc = multiprocessing.get_context("spawn").Process(target=serve, args=(port, args.clients), daemon=True)
    proc.start()
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if httpx.get(url + "/health", timeout=1).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            if time.monotonic() > deadline or not proc.is_alive():
                raise SystemExit("the benchmark server did not start")
            time.sleep(0.1)
        print(f"{args.clients} concurrent clients, {args.seconds:g} s per row, FakeLLM + MemorySource (no model time)")
        print(f"{'scenario':<22}{'requests':>9}{'req/s':>9}{'p50 ms':>9}{'p99 ms':>9}{'first token p50':>17}")
        for label, model, stream in SCENARIOS:
            n, rps, samples, firsts = asyncio.run(scenario(url, model, stream, args.clients, args.seconds))
            first = f"{statistics.median(firsts):.1f} ms" if firsts else "-"
            print(f"{label:<22}{n:>9}{rps:>9.0f}{pct(samples, 0.5):>9.1f}{pct(samples, 0.99):>9.1f}{first:>17}")
    finally:
        proc.terminate()
        proc.join(5)
        if proc.is_alive():
            proc.kill()


if __name__ == "__main__":
    main()
