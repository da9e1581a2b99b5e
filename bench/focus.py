"""The focus ranker alone, no model: on squad2-mini, does the quote the reader would use hold the answer?

The evidence is what `agentkit eval qa --corpus … --mode always` gives the reader (the embedded
store's top_k passages, fitted to the bundled model's context); then `reader.plan` picks the
quote: the best sentence, or with the span margin a near-tied run of up to three sentences of one
passage, with a neighbour it leans on. Side by side: words only (`agent.focus_embedder: none`),
MiniLM cosine only, the pooled 0.25/0.75 mix of words and cosine (the ranker before MaxSim, and
what an embedder without token vectors gets), IDF-weighted MaxSim with 0.05 of the word score,
and the shipped plan (that with `agent.quote_span_margin` and `agent.ambiguity_margin`). Rows
split the 626 questions into the `eval qa --sample 200 --seed 0` subset and the other 426, on
which the ranker's weights, `agent.focus_min_score` and both margins were chosen. The shipped
row's "answered wrong" is what `eval qa` reports as `supported_but_wrong`, but for the model's
own `Quote: none`.

    python bench/focus.py
"""

from __future__ import annotations

import random
import sys
import tempfile
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "squad2-mini"


def main() -> int:
    if not (DATA / "corpus.jsonl").is_file():
        print(f"skipped: {DATA} is absent (the shared data checkout)")
        return 0
    from agentkit.config import load_config
    from agentkit.eval.corpus import corpus_store
    from agentkit.eval.qa import contains_answer, is_abstention, load_questions
    from agentkit.knowledge.embeddings import OnnxEmbedder
    from agentkit.reasoning import reader
    from agentkit.reasoning.focus import SentenceEncoder

    cfg = load_config(None)
    items = load_questions(DATA / "questions.jsonl")
    sample = set(random.Random(0).sample(range(len(items)), 200))
    encoder = SentenceEncoder(OnnxEmbedder("all-MiniLM-L6-v2"))
    pooled = _Pooled(encoder)  # the same encoder without token vectors: the ranker before MaxSim


    with tempfile.TemporaryDirectory() as tmp:
        cfg.data_dir = Path(tmp)
        store, _ = corpus_store(cfg, DATA / "corpus.jsonl", progress=False)
        retrieved = _evidence(cfg, store, items)
        store.close()

    def judge(name: str, plan_for) -> list[tuple[str, dict]]:
        rows = []
        for split in ("seed-0 sample (200)", "other questions (426)"):
            keep = [i for i in range(len(items)) if (i in sample) == split.startswith("seed")]
            hit = hit_gated = wrong = gold = answered = refused = n_ans = n_un = 0
            for i in keep:
                item, ps = items[i], retrieved[i]
                p = plan_for(item.question, ps)
                best = p.candidates[0] if p.candidates else None
                blocked = best is None or bool(p.gaps) or bool(p.distant) or bool(p.ambiguous)
                if item.answerable:
                    n_ans += 1
                    holds = best is not None and contains_answer(best.text, item.answers)
                    hit += holds
                    if not blocked:
                        answered += 1
                        hit_gated += holds
                        wrong += not holds
                        passage = ps[best.passage]
                        gold += passage.id in item.gold_ids or passage.doc_id in item.gold_ids
                else:
                    n_un += 1
                    refused += blocked
            rows.append((split, {"ranker": name, "holds": hit / n_ans, "after checks": hit_gated / n_ans, "answered wrong": wrong / n_ans,
                                 "gold passage": gold / max(1, answered), "refused unanswerable": refused / n_un}))
        return rows

    a = cfg.agent
    setups = [
        ("words only", lambda q, ps: reader.plan(q, ps, top=2)),
        ("MiniLM cosine only", lambda q, ps: _cosine_plan(reader, q, ps, encoder)),
        ("pooled: 0.25 words + 0.75 cosine",
         lambda q, ps: reader.plan(q, ps, top=2, embedder=pooled, min_score=a.focus_min_score)),
        ("MaxSim (+ 0.05 words), no margins",
         lambda q, ps: reader.plan(q, ps, top=2, embedder=encoder, min_score=a.focus_min_score)),
        ("shipped (+ span and ambiguity margins)",
         lambda q, ps: reader.plan(q, ps, top=2, embedder=encoder, min_score=a.focus_min_score,
                                   span_margin=a.quote_span_margin, ambiguity_margin=a.ambiguity_margin)),
    ]
    table = [row for name, fn in setups for row in judge(name, fn)]
    print(f"\nfocus ranker on {DATA.relative_to(ROOT.parent)}, retrieval top_k={cfg.agent.top_k}, no model\n")
    cols = ["holds", "after checks", "answered wrong", "gold passage", "refused unanswerable"]
    print(f"{'ranker':40} {'questions':22} " + " ".join(f"{c:>20}" for c in cols))
    for split, r in sorted(table, key=lambda x: x[0]):
        print(f"{r['ranker']:40} {split:22} " + " ".join(f"{r[c]:20.3f}" for c in cols))
    print("\nholds: the quote holds a gold answer (answerable questions); after checks: and it passes"
          " the premise, distance and ambiguity checks;\nanswered wrong: it passes them and holds no gold answer (what eval qa's supported_but_wrong counts);\ngold passage: its passage is the gold one (of those answered);"
          " refused unanswerable: the checks refuse (unanswerable questions).")
    return 0


class _Stop(Exception):
    pass


def _evidence(cfg, store, items):
    """The passages the agent's quote reader gets for each question, as `eval qa --mode always`
    builds the agent: retrieval, then the evidence fitted to the model's context (the bundled
    model's tokenizer counts; the model writes nothing). Taken where the agent hands them to
    `reader.plan`, which is stopped there."""
    from agentkit import Agent
    from agentkit.plugins import build_llm
    from agentkit.reasoning import reader
    from agentkit.routing.build import build_router

    llm = build_llm(cfg.llm)
    agent = Agent(llm, {"corpus": store}, router=build_router(cfg, llm), settings=cfg.agent, config=cfg, adapters={})
    seen: list = []

    def capture(question, ranked, **_):
        seen.append(list(ranked))
        raise _Stop

    original, reader.plan = reader.plan, capture
    out = []
    try:
        for it in items:
            seen.clear()
            try:
                agent.ask(it.question, route=["corpus"])
            except _Stop:
                pass
            out.append(seen[0] if seen else [])
    finally:
        reader.plan = original
    return out


class _Pooled:
    """An encoder that gives pooled vectors only, as a user's own embedder may."""

    def __init__(self, encoder):
        self.embed_query, self.embed_documents = encoder.embed_query, encoder.embed_documents


def _cosine_plan(reader, question, passages, encoder):
    """`reader.plan` ranked by MiniLM cosine alone (every sentence encoded)."""
    import numpy as np

    from agentkit.reasoning import focus as F

    def cosine(question, sents, passages, embedder=None, embed_top=12):
        if not sents:
            return []
        q = np.asarray(encoder.embed_query(question), dtype=np.float32)
        sims = np.asarray(encoder.embed_documents([s.text for s in sents]), dtype=np.float32) @ q
        for s, sim in zip(sents, sims):
            s.score = float(sim)
        return sorted(sents, key=lambda s: -s.score)

    original, F.score_sentences = F.score_sentences, cosine
    try:
        return reader.plan(question, passages, top=2)
    finally:
        F.score_sentences = original


if __name__ == "__main__":
    sys.exit(main())
