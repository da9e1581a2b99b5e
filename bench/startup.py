"""Start-up cost: `import agentkit` and `agentkit --help`, beside langchain_core and llama_index.core.

Run: python bench/startup.py [--runs 7]. Prints one table of medians (fresh interpreter per run).
"""

from __future__ import annotations

import argparse
import shutil
import statistics
import subprocess
import sys
import time

TARGETS = {"import agentkit": 150.0, "agentkit --help": 300.0}


def timed(cmd: list[str], runs: int) -> list[float] | None:
    out = []
    for _ in range(runs):
        t = time.perf_counter()
        proc = subprocess.run(cmd, capture_output=True)
        out.append((time.perf_counter() - t) * 1000)
        if proc.returncode != 0:
            return None
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=7)
    runs = ap.parse_args().runs
    py = sys.executable
    agentkit_bin = shutil.which("agentkit") or ""
    rows = [
        ("python (empty)", [py, "-c", "pass"]),
        ("import agentkit", [py, "-c", "import agentkit"]),
        ("agentkit --help", [agentkit_bin, "--help"] if agentkit_bin else [py, "-m", "agentkit.cli", "--help"]),
        ("import langchain_core", [py, "-c", "import langchain_core.runnables"]),
        ("import llama_index.core", [py, "-c", "import llama_index.core"]),
    ]
    print(f"{'what':<26}{'median ms':>11}{'min ms':>9}{'target':>10}  verdict")
    for name, cmd in rows:
        t = timed(cmd, runs)
        if t is None:
            print(f"{name:<26}{'n/a (not installed)':>30}")
            continue
        med = statistics.median(t)
        target = TARGETS.get(name)
        verdict = "" if target is None else ("ok" if med < target else "SLOW")
        print(f"{name:<26}{med:>11.1f}{min(t):>9.1f}{(f'<{target:.0f}' if target else ''):>10}  {verdict}")


if __name__ == "__main__":
    main()
