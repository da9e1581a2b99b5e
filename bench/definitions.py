"""Dictionary questions through the agent: the 40 `dictionary` rows of ../shared/data/routing/dev.jsonl.

For each row the question goes through `Agent.ask` (what `agentkit ask` calls) with the router
deciding, and the table says how often the route reached WordNet, the answer cited the WordNet
entry for the row's word, and the answer's text held the content words of the row's gloss (the
first WordNet 3.0 sense). Two set-ups side by side: WordNet read from the dictd files
(configs/dictionary.yaml) and the same WordNet from a real dictd started here on 127.0.0.1.

    python bench/definitions.py            # both set-ups
    python bench/definitions.py --files    # the dictd files only (no dictd binary needed)
"""

from __future__ import annotations

import argparse
import json
import re
import statistics
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
ROWS = ROOT.parent / "shared" / "data" / "routing" / "dev.jsonl"


def content_words(text: str) -> set[str]:
    from agentkit.text import STOPWORDS

    text = re.sub(r"\[(?:syn|ant|also):[^\]]*\]", " ", text.lower())
    return {w for w in re.findall(r"[a-z0-9]+", text) if w not in STOPWORDS and len(w) > 1}


def run(agent, rows: list[dict]) -> dict:
    routed = cited = holds = holds80 = 0
    times, misses = [], []
    for row in rows:
        t0 = time.perf_counter()
        answer = agent.ask(row["question"])
        times.append((time.perf_counter() - t0) * 1000)
        word = row["word"].casefold()
        to_wordnet = "wordnet" in answer.route.sources
        cites = any(c.passage.source == "wordnet" and (c.passage.title or "").casefold().startswith(word)
                    for c in answer.citations)
        gold = content_words(row["gloss"])
        got = content_words(answer.text)
        share = len(gold & got) / len(gold) if gold else 1.0
        routed += to_wordnet
        cited += cites
        holds += share == 1.0
        holds80 += share >= 0.8
        if not (cites and share == 1.0):
            misses.append({"question": row["question"], "route": answer.route.targets, "cites": cites,
                           "gloss_share": round(share, 2), "answer": answer.text[:160]})
    n = len(rows)
    return {"n": n, "routed": routed / n, "cited": cited / n, "gloss_all": holds / n, "gloss_80": holds80 / n,
            "median_ms": statistics.median(times), "misses": misses}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--files", action="store_true", help="only the dictd-files set-up")
    ap.add_argument("--misses", action="store_true", help="print the questions that missed")
    args = ap.parse_args()
    if not ROWS.is_file():
        print(f"skipped: {ROWS} is absent (the shared data checkout)")
        return 0
    rows = [json.loads(line) for line in ROWS.read_text(encoding="utf-8").splitlines() if line.strip()]
    rows = [r for r in rows if r.get("route") == "dictionary"]

    from agentkit.agent import Agent
    from agentkit.config import load_config

    setups: list[tuple[str, dict]] = [("dictd files (configs/dictionary.yaml)", {})]
    server = None
    if not args.files:
        sys.path.insert(0, str(ROOT / "tests"))
        from dictd_server import DictdServer, missing_reason

        why = missing_reason(("wn",))
        if why:
            print(f"dictd set-up skipped: {why}")
        else:
            server = DictdServer(("wn",)).start()
            setups.append((f"real dictd ({server.url})", {"server": server.url, "databases": ["wn"]}))
    results = []
    try:
        with tempfile.TemporaryDirectory() as data:
            for label, dictionary in setups:
                cfg = load_config(ROOT / "configs" / "dictionary.yaml")
                cfg.data_dir = Path(data)
                if dictionary:
                    src = cfg.sources["wordnet"]
                    cfg.sources["wordnet"] = {**src, "files": [], **dictionary}
                agent = Agent.from_config(cfg)
                results.append((label, run(agent, rows)))
    finally:
        if server is not None:
            server.cleanup()
    print(f"\n{len(rows)} dictionary questions of {ROWS.relative_to(ROOT.parent)} through Agent.ask "
          "(bundled SmolLM2-135M, router deciding)\n")
    print(f"{'set-up':44} {'to wordnet':>10} {'cites entry':>11} {'all gloss words':>15} {'>=80% words':>11} {'median ms':>9}")
    for label, r in results:
        print(f"{label:44} {r['routed']:10.3f} {r['cited']:11.3f} {r['gloss_all']:15.3f} {r['gloss_80']:11.3f} {r['median_ms']:9.0f}")
    if args.misses:
        for label, r in results:
            for m in r["misses"]:
                print(label, json.dumps(m))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
