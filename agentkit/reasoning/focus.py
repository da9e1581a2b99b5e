"""Evidence focus: the sentences of the retrieved passages most likely to answer, with neighbours.

A small model reads five whole chunks poorly and slowly (the prompt's length is the wait for the
first token); it reads six sentences well. Sentences are scored by IDF-weighted overlap with the
question, the fit of the expected answer type ("when" wants a date, "how many" a number, "who" a
name) and the rank of their passage; when an encoder is given, by MaxSim over its token vectors
(each question word's best match in the sentence, weighted by the word's rarity), with the word
score as a small part. Every sentence keeps its character offsets in its passage, so a quote can
be traced to the exact span.
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from agentkit.errors import ModelLoadError
from agentkit.text import STOPWORDS, stem, words
from agentkit.types import Passage

# A sentence ends at . ! ? (and closing quotes/brackets) followed by space and a capital, digit
# or opening quote, or at a blank line. Abbreviations and initials ("St.", "e.g.", "J. S.") are
# re-joined below.
_END = re.compile(r"(?<=[.!?])[\"'”’)\]]*\s+(?=[\"'“‘(\[]?[A-Z0-9])|\n\s*\n")
_ABBREV = re.compile(
    r"(?:\b(?:[A-Z]|Mr|Mrs|Ms|Dr|Prof|St|Mt|Jr|Sr|Co|Corp|Inc|Ltd|vs|etc|e\.g|i\.e|cf|al|approx|No|Vol|Fig|ca|c)\.)$"
)
_NUMBER = re.compile(r"\b\d[\d,.]*\b|\b(?:one|two|three|four|five|six|seven|eight|nine|ten|hundred|thousand|million|billion)\b", re.I)
_YEAR = re.compile(r"\b(?:1[0-9]{3}|20[0-9]{2}|[0-9]{1,2}(?:st|nd|rd|th))\b|\b(?:century|centuries|BC|AD|January|February|March|April|May|June|July|August|September|October|November|December)\b")
_NAME = re.compile(r"(?<![.!?]\s)(?<!^)\b[A-Z][a-z]+(?:\s+(?:of\s+|de\s+|von\s+)?[A-Z][a-z]+)*")
#: A markdown heading line ("# Installing agentkit"): a title, never the answer.
_HEADING = re.compile(r"#{1,6}\s")
_FORGED = re.compile(r"\s*(?:question|answer|quote|reasoning|sources?|system|user|assistant)\s*:", re.I)
#: Question words never count as content: they ask, they are not asked about.
_ASKING = frozenset("what which who whom whose when where why how many much long often far old does did do is are was were".split())
#: Words the question shares with every sentence of a topic add little; these add none.
_WEAK = frozenset("also called known name named one two use used many much may might can could would".split())


@dataclass
class Sentence:
    """A sentence of a passage: `passage.text[start:end] == text`."""

    passage: int  # index into the evidence list
    start: int
    end: int
    text: str
    score: float = 0.0


def split_sentences(text: str, max_chars: int = 400) -> list[tuple[int, int]]:
    """(start, end) character spans of the sentences of `text`, whitespace trimmed."""
    spans: list[tuple[int, int]] = []
    pos = 0
    for m in _END.finditer(text):
        if _ABBREV.search(text[pos : m.start()]) and "\n\n" not in m.group(0):
            continue
        spans.append((pos, m.start()))
        pos = m.end()
    spans.append((pos, len(text)))
    # A markdown heading is a line of its own, not the start of the sentence under it.
    cut: list[tuple[int, int]] = []
    for s, e in spans:
        base = s  # the matches' offsets are into text[base:e], whatever `s` has moved on to
        for m in re.finditer(r"(?m)^[ \t]*#{1,6}[ \t][^\n]*$", text[base:e]):
            if base + m.start() > s:
                cut.append((s, base + m.start()))
            cut.append((base + m.start(), base + m.end()))
            s = base + m.end()
        cut.append((s, e))
    spans = cut
    out = []
    for s, e in spans:
        seg = text[s:e]
        lead = len(seg) - len(seg.lstrip())
        seg = seg.strip()
        s += lead
        # Text without full stops (tables, lists, code) would make one huge "sentence": cut at
        # white space so a quote stays a readable size.
        while len(seg) > max_chars:
            cut = seg.rfind(" ", max_chars // 2, max_chars)
            cut = cut if cut > 0 else max_chars
            out.append((s, s + len(seg[:cut].rstrip())))
            rest = seg[cut:]
            s += cut + len(rest) - len(rest.lstrip())
            seg = rest.strip()
        if seg:
            out.append((s, s + len(seg)))
    return out


def sentences(passages: Sequence[Passage]) -> list[Sentence]:
    return [
        Sentence(i, s, e, p.text[s:e])
        for i, p in enumerate(passages)
        for s, e in split_sentences(p.text)
    ]


def question_terms(question: str) -> list[str]:
    return [stem(w) for w in words(question) if w not in STOPWORDS and w not in _ASKING]


def answer_type(question: str) -> str:
    """What kind of span the question asks for: date, number, name or other."""
    q = question.lower()
    if re.search(r"\bwhen\b|\bwhat (?:year|century|date|decade|period|time)\b|\bwhich (?:year|century|date)\b", q):
        return "date"
    if re.search(r"\bhow (?:many|much|long|old|far|large|big|often)\b|\bwhat (?:number|percentage|amount)\b", q):
        return "number"
    if re.search(r"^\W*(?:who|whom|whose)\b|\bwho\b", q) or re.search(r"\bwhat (?:is|was) the name\b", q):
        return "name"
    return "other"


def type_fit(kind: str, text: str, question: str) -> float:
    """1 when the sentence holds a span of the wanted kind that the question does not already hold."""
    if kind == "date":
        found = set(_YEAR.findall(text)) - set(_YEAR.findall(question))
    elif kind == "number":
        found = set(m.lower() for m in _NUMBER.findall(text)) - set(m.lower() for m in _NUMBER.findall(question))
    elif kind == "name":
        asked = {w.lower() for w in words(question)}
        found = {n for n in _NAME.findall(text) if n.split()[0].lower() not in asked}
    else:
        return 0.0
    return 1.0 if found else 0.0


def score_sentences(
    question: str,
    sents: list[Sentence],
    passages: Sequence[Passage],
    embedder: Any | None = None,
    embed_top: int = 12,
) -> list[Sentence]:
    """Score in place and return the sentences best first. With an `embedder` that gives token
    vectors every sentence is re-scored by meaning (`_late_interaction`); with one that does not,
    the `embed_top` lexically best are re-scored with its pooled similarity to the question."""
    if not sents:
        return []
    q_terms = [t for t in dict.fromkeys(question_terms(question)) if t not in _WEAK] or question_terms(question)
    sent_terms = [set(stem(w) for w in words(s.text) if w not in STOPWORDS) for s in sents]
    # Passage terms as well: a sentence's pronoun may lean on its passage's title or neighbours.
    passage_terms = [set(stem(w) for w in words(f"{p.title} {p.text}")) for p in passages]
    n = len(sents)
    df = Counter(t for ts in sent_terms for t in ts)
    idf = {t: _idf(df, n, t) for t in q_terms}
    total = sum(idf.values()) or 1.0
    kind = answer_type(question)
    for i, s in enumerate(sents):
        local = sum(idf[t] for t in q_terms if t in sent_terms[i]) / total
        context = sum(idf[t] for t in q_terms if t in passage_terms[s.passage]) / total
        # A sentence that only repeats the question has no room for the answer.
        new = len(sent_terms[i] - set(q_terms))
        novelty = min(1.0, new / 4)
        score = 0.6 * local + 0.15 * context + 0.15 * type_fit(kind, s.text, question) + 0.05 * novelty
        score += 0.15 / (1 + s.passage)  # the retriever's order counts
        s.score = score
    ranked = sorted(sents, key=lambda s: -s.score)
    # A SentenceEncoder wraps an embedder: token vectors when the wrapped one gives them.
    tokens = embedder is not None and hasattr(getattr(embedder, "embedder", embedder), "embed_tokens")
    if tokens:
        try:
            _late_interaction(question, sents, embedder, df)
        except ModelLoadError:  # an ONNX export that pools its output: no token vectors
            tokens = False
        else:
            ranked.sort(key=lambda s: -s.score)
    if embedder is not None and not tokens:
        # An embedder without token vectors: pooled similarity for the lexically best few
        # (encoding every sentence of five passages would cost more than the model's prompt).
        import numpy as np

        head = ranked[:embed_top]
        q = np.asarray(embedder.embed_query(question), dtype=np.float32)
        sims = np.asarray(embedder.embed_documents([s.text for s in head]), dtype=np.float32) @ q
        # "It was founded in 1712." means little alone: read with the sentence before it (same
        # passage), so a pronoun finds its name, and keep whichever reading is closer.
        before = {id(s): prev.text for prev, s in zip(sents, sents[1:]) if prev.passage == s.passage}
        joined = [(i, f"{before[id(s)]} {s.text}") for i, s in enumerate(head) if id(s) in before]
        if joined:
            with_prev = np.asarray(embedder.embed_documents([t for _, t in joined]), dtype=np.float32) @ q
            for (i, _), sim in zip(joined, with_prev):
                sims[i] = max(sims[i], sim)
        for s, sim in zip(head, sims):
            s.score = 0.25 * s.score + 0.75 * float(sim)
        for s in ranked[embed_top:]:
            s.score = 0.25 * s.score - 1.0  # below every re-scored sentence
        ranked.sort(key=lambda s: -s.score)
    for s in ranked:
        s.score = round(s.score, 6)
    return ranked


def _idf(df: Counter[str], n: int, term: str) -> float:
    """BM25's IDF of a stemmed term over `n` sentences, `df` of which hold it."""
    return math.log(1 + (n - df.get(term, 0) + 0.5) / (df.get(term, 0) + 0.5))


def _late_interaction(question: str, sents: list[Sentence], embedder: Any, df: Counter[str]) -> None:
    """Rescore every sentence in place by MaxSim: for each content token of the question, its
    best match among the sentence's tokens (MiniLM's contextual token vectors), averaged with the
    weight of the token's word (its IDF over these sentences, `df` their stems' document
    frequencies: "Ladner" counts, "problem" little);
    plus a twentieth of the word score, which carries the answer type and the retriever's order.

    One pooled vector per sentence blurs which words matched; token by token, "Who made Ralph
    earl?" finds "Edward the Confessor had set up … Ralph as earl". Of squad2-mini's development
    questions (the 426 outside the `eval qa --sample 200 --seed 0` subset) whose evidence holds
    the answer, the first sentence held it for 0.753 with the pooled 0.25 words + 0.75 cosine mix,
    0.774 with plain MaxSim, 0.817 with IDF weights and 0.812 with the word score added (kept for
    the answer type and the retriever's order); bench/focus.py measures the whole plan.
    """
    import numpy as np

    (q,) = embedder.embed_tokens([question], query=True)
    weights: list[float] = []
    keep: list[int] = []
    asked = [(m.start(), m.end(), m.group(0).lower()) for m in re.finditer(r"\w+", question)]
    for k, (a, _) in enumerate(q.spans):
        word = next((w for s, e, w in asked if s <= a < e), None)
        if word is None or word in STOPWORDS or word in _ASKING:
            continue
        keep.append(k)
        weights.append(_idf(df, len(sents), stem(word)))
    w = np.asarray(weights, dtype=np.float32) if keep and sum(weights) > 0 else None
    tokens = q.tokens[keep] if w is not None else q.tokens
    for s, tv in zip(sents, embedder.embed_tokens([s.text for s in sents])):
        best = (tokens @ tv.tokens.T).max(axis=1) if len(tv.tokens) else np.zeros(len(tokens), np.float32)
        maxsim = float((best * w).sum() / w.sum()) if w is not None else float(best.mean())
        s.score = maxsim + 0.05 * s.score


@dataclass
class Focus:
    """What the model is shown: per passage, the windows of sentences around the best ones."""

    ranked: list[Sentence]
    #: passage index -> sorted (start, end) windows of that passage's text.
    windows: dict[int, list[tuple[int, int]]]
    #: The candidate sentences the model may quote, best first.
    candidates: list[Sentence]

    def excerpt(self, passages: Sequence[Passage], index: int) -> str:
        """The text shown for passage `index`: its windows joined by " … "."""
        text = passages[index].text
        return " … ".join(text[s:e] for s, e in self.windows.get(index, []))


def focus(
    question: str,
    passages: Sequence[Passage],
    *,
    top: int = 3,
    neighbours: int = 1,
    embedder: Any | None = None,
    max_candidates: int = 6,
) -> Focus:
    """The `top` best sentences with `neighbours` either side, merged into windows per passage."""
    sents = sentences(passages)
    ranked = score_sentences(question, sents, passages, embedder)
    by_passage: dict[int, list[Sentence]] = {}
    for s in sents:
        by_passage.setdefault(s.passage, []).append(s)
    chosen: dict[int, set[int]] = {}
    for rank, s in enumerate(ranked[:top]):
        siblings = by_passage[s.passage]
        j = next(k for k, x in enumerate(siblings) if x.start == s.start)
        # The best sentence with its neighbours (its pronouns lean on them); the rest alone.
        reach = neighbours if rank == 0 else 0
        for k in range(max(0, j - reach), min(len(siblings), j + reach + 1)):
            chosen.setdefault(s.passage, set()).add(k)
    windows: dict[int, list[tuple[int, int]]] = {}
    for i, ks in chosen.items():
        siblings = by_passage[i]
        spans: list[tuple[int, int]] = []
        for k in sorted(ks):
            start, end = siblings[k].start, siblings[k].end
            if spans and k - 1 in ks:
                spans[-1] = (spans[-1][0], end)
            else:
                spans.append((start, end))
        windows[i] = spans
    # A question in a passage answers nothing, a heading is a title, and a line written in the
    # prompt's own format ("Answer: …") is a forgery: all are shown as context, never offered as
    # a quote.
    shown = [s for s in ranked if any(a <= s.start and s.end <= b for a, b in windows.get(s.passage, []))
             and quotable(s.text)]
    return Focus(ranked, windows, shown[:max_candidates])


def quotable(text: str) -> bool:
    """Whether a sentence may be a quote: not a question, a heading or a prompt-format line."""
    return not text.rstrip("\"'”’) ").endswith("?") and not _FORGED.match(text) and not _HEADING.match(text)


class SentenceEncoder:
    """An embedder with an in-process cache of sentence vectors: the same passages come back
    question after question, and a sentence is encoded once. Pooled vectors are cached up to
    `size` texts; token vectors (about 60 KB a sentence) up to `token_bytes`, oldest out first.
    Questions are encoded anew each time."""

    def __init__(self, embedder: Any, size: int = 20_000, token_bytes: int = 64 << 20) -> None:
        self.embedder = embedder
        self.size = size
        self.token_bytes = token_bytes
        self._cache: dict[str, Any] = {}
        self._tokens: dict[str, Any] = {}
        self._token_total = 0

    def embed_query(self, text: str) -> Any:
        return self.embedder.embed_query(text)

    def embed_tokens(self, texts: Sequence[str], *, query: bool = False) -> list[Any]:
        """Token vectors (the embedder's `embed_tokens`); a sentence's are cached."""
        if query:
            return list(self.embedder.embed_tokens(list(texts), query=True))
        todo = list(dict.fromkeys(t for t in texts if t not in self._tokens))
        fresh = dict(zip(todo, self.embedder.embed_tokens(todo))) if todo else {}
        out = [fresh[t] if t in fresh else self._tokens[t] for t in texts]
        for t, tv in fresh.items():
            self._tokens[t] = tv
            self._token_total += tv.tokens.nbytes
        while self._token_total > self.token_bytes and self._tokens:
            oldest = next(iter(self._tokens))
            self._token_total -= self._tokens.pop(oldest).tokens.nbytes
        return out

    def embed_documents(self, texts: Sequence[str]) -> Any:
        import numpy as np

        todo = list(dict.fromkeys(t for t in texts if t not in self._cache))
        if todo:
            if len(self._cache) + len(todo) > self.size:
                self._cache.clear()
            for t, v in zip(todo, np.asarray(self.embedder.embed_documents(todo), dtype=np.float32)):
                self._cache[t] = v
        return np.stack([self._cache[t] for t in texts]) if texts else np.zeros((0, 1), np.float32)
