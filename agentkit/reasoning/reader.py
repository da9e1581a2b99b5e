"""The grounded reader: quote a source sentence, answer from the quote, or say the sources do not answer.

The model is shown the focused sentences (reasoning/focus.py) fenced as data. With a backend that
takes grammars (llama.cpp) the reply is forced into `Quote: [n] "<a shown sentence, verbatim>"`
then `Answer: <short text>`, so every quote is real by construction; other backends are asked for
the same format and their quotes are located in the passages (a quote not found is dropped). The
agent then checks the short answer against its quote and falls back to showing the quote itself.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

from agentkit.reasoning.focus import Sentence
from agentkit.text import STOPWORDS, stem, words
from agentkit.types import Citation, Passage

# --- the fence: what the model sees of a passage ------------------------------------------------

_TAG = re.compile(r"</?\s*sources?\s*>", re.I)
_LABEL = re.compile(r"\b(question|answer|quote|reasoning|sources?|system|user|assistant)\s*:", re.I)
_MARK = re.compile(r"\[(\d+)\]")


def fence(text: str) -> str:
    """Passage text as inert data: one line (no line of it can start like a prompt line), no
    `<sources>` tags to close the fence early, no `[n]` marks, no `Answer:`-style labels."""
    text = _TAG.sub(" ", text)
    text = _MARK.sub(r"(\1)", text)
    text = _LABEL.sub(lambda m: f"{m.group(1)} -", text)
    return " ".join(text.split())


# --- the question's premises --------------------------------------------------------------------

_NEGATION = re.compile(r"\b(?:not|no|never|cannot|none|nobody|nothing|neither|nor|without)\b|n't\b", re.I)
#: Words that set degree, order or scope: a question that turns "most" into "least", "first" into
#: "last" or adds "only" asks about something the sentence does not state.
_QUALIFIER = re.compile(
    r"\b(least|most|fewest|largest|smallest|highest|lowest|first|last|earliest|latest|only|every|always|"
    r"before|after|best|worst|biggest|greatest|longest|shortest|oldest|newest|youngest|more|less|fewer)\b",
    re.I,
)
_FIXED = re.compile(r"\bhow (?:many|much|long|old|far)\b|\bat (?:least|most)\b|\bmore or less\b", re.I)
#: Names and figures: a capitalised word after the first, or a token with a digit.
_PROPER = re.compile(r"(?<!^)(?<![.!?]\s)\b[A-Z][\w-]*|\b\w*\d\w*\b")


def unmet_premises(question: str, sentence: str, context: str) -> list[str]:
    """What the question takes for granted that the evidence does not state, as readable reasons.

    A question can share almost every word with a sentence and still not be answered by it: it
    negates what the sentence affirms, names a person, place or figure the sources never mention,
    or asks for the least where the sentence gives the most. `sentence` is the best candidate
    answer, `context` the text around it (its passage) for names.
    """
    reasons = []
    q = question.strip()
    if _NEGATION.search(q) and not _NEGATION.search(sentence):
        reasons.append("the question is negated and the best-matching source sentence is not")
    lowered = context.lower()
    missing = [t for t in _PROPER.findall(q) if t.lower() not in lowered and t.lower() not in STOPWORDS]
    if missing:
        reasons.append("the sources do not mention " + ", ".join(repr(t) for t in dict.fromkeys(missing)))
    for word in _QUALIFIER.findall(_FIXED.sub(" ", q.lower())):
        if not re.search(rf"\b{word}\b", sentence.lower()):
            reasons.append(f"the question asks about {word!r}, which the best-matching source sentence does not say")
            break
    return reasons


def restates(answer: str, question: str) -> bool:
    """True when the answer adds no content word to the question (it answers nothing)."""
    asked = {stem(w) for w in words(question)}
    own = [stem(w) for w in words(answer) if w not in STOPWORDS]
    return not any(t not in asked for t in own)


# --- the grammar and the reply ------------------------------------------------------------------


def _literal(text: str) -> str:
    """A GBNF string literal."""
    return '"' + text.replace("\\", "\\\\").replace('"', '\\"').replace("\n", "\\n") + '"'


def offered(marker: int, text: str) -> str:
    """A quote as the grammar offers it after `Quote: `: `[n] "<sentence as shown>"`."""
    return f'[{marker}] "{text}"'


def quote_grammar(shown: Sequence[tuple[int, str]], answer_chars: int = 80) -> str:
    """GBNF: `Quote: [n] "<one of the shown sentences, verbatim>"` then `Answer: <short text>`, or
    `Quote: none`. `shown` holds (marker, sentence as displayed)."""
    alternatives = " | ".join(_literal(offered(n, text)) for n, text in shown) or '"none"'
    return "\n".join([
        'root ::= "Quote: " (quoted "\\nAnswer: " answer | "none")',
        f"quoted ::= {alternatives}",
        f"answer ::= [^\\n\\[\\]] [^\\n\\[\\]]{{0,{answer_chars - 1}}}",
    ]) + "\n"


@dataclass
class QuotedReply:
    #: The candidate the quote matched (None: "none", or a quote that is in no passage).
    candidate: Sentence | None
    marker: int | None
    answer: str
    #: The model wrote "Quote: none": nothing in the sources answers.
    abstained: bool = False
    warnings: list[str] = field(default_factory=list)


_QUOTE = re.compile(r"^\s*\**quote\**\s*:\s*(?P<body>.*?)\s*$", re.I | re.M)
_ANSWER = re.compile(r"^\s*\**answer\**\s*:\s*(?P<body>.*?)\s*$", re.I | re.M | re.S)
_QUOTED = re.compile(r"^\[(?P<n>\d+)\]\s*[\"“']?(?P<text>.*?)[\"”']?$", re.S)


def parse_quoted(
    reply: str, candidates: Sequence[Sentence], markers: dict[int, int], passages_text: Sequence[str],
) -> QuotedReply:
    """Read `Quote: [n] "…"` / `Answer: …`. `markers` maps passage index -> [n] as shown;
    `passages_text` are the passages' full texts, where a quote not among the candidates is
    looked for (word for word, whitespace aside) before it is dropped."""
    q = _QUOTE.search(reply)
    a = _ANSWER.search(reply)
    answer = a.group("body").strip() if a else ""
    answer = _MARK.sub("", answer).strip()
    if q is None:
        return QuotedReply(None, None, answer, warnings=["the model wrote no quote"])
    body = q.group("body").strip()
    if body.lower().strip(" .\"'") in {"none", "no quote", ""}:
        return QuotedReply(None, None, answer, abstained=True)
    m = _QUOTED.match(body)
    text = (m.group("text") if m else body).strip()
    marker = int(m.group("n")) if m else None
    norm = _squash(text)
    for c in candidates:
        # The grammar forces the fenced copy the model was shown; a sentence the fence changed
        # (a "[2]" mark, an "Answer:" label) is still that sentence.
        if norm in (_squash(c.text), _squash(fence(c.text))) and (marker is None or markers.get(c.passage) == marker):
            return QuotedReply(c, markers.get(c.passage), answer)
    # Not one of the shown sentences: accept a verbatim piece of a shown passage.
    for index, n in markers.items():
        if marker is not None and n != marker:
            continue
        span = locate(text, passages_text[index])
        if span is not None and len(norm) >= 12:
            start, end = span
            source = passages_text[index]
            if end < len(source) and source[end].isalnum() and source[end - 1].isalnum():
                # Cut off inside a word (a reply stopped at max_tokens): "in 17" of "in 1712" is
                # not what the source says; the quote ends at its last whole word.
                end = start + len(re.sub(r"\s*\S*$", "", source[start:end]))
            if end > start:
                return QuotedReply(Sentence(index, start, end, source[start:end]), n, answer)
    return QuotedReply(None, marker, answer, warnings=[
        f"the model's quote {_short(text)!r} is not in source {f'[{marker}]' if marker else 'any source'}; it was dropped"
    ])


def locate(quote: str, text: str) -> tuple[int, int] | None:
    """(start, end) of `quote` in `text`, ignoring differences in whitespace and quote marks."""
    quote = quote.strip()
    if not quote:
        return None
    i = text.find(quote)
    if i >= 0:
        return i, i + len(quote)
    tokens = [re.escape(t).replace('"', '["“”]').replace("'", "['‘’]") for t in quote.split()]
    pattern = r"\s+".join(tokens)
    m = re.search(pattern, text)
    return (m.start(), m.end()) if m else None


def _locate_words(claim: str, quote: str) -> tuple[int, int] | None:
    """`locate`, ignoring case and the punctuation around words."""
    clean = [re.escape(w.strip(".,;:!?\"'()“”‘’")) for w in claim.split()]
    clean = [w for w in clean if w]
    if not clean:
        return None
    m = re.search(r"(?<!\w)" + r"\W+".join(clean) + r"(?!\w)", quote, re.I)
    return (m.start(), m.end()) if m else None


def _squash(text: str) -> str:
    return " ".join(text.replace("“", '"').replace("”", '"').split()).strip(" \"'").lower()


def _short(text: str, n: int = 60) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


# --- one reading: what the model is shown, and what its reply becomes ----------------------------


@dataclass
class ReadingPlan:
    """The focused evidence for one question. `ranked` are the retrieved passages best first;
    `markers` maps an index of `ranked` to the [n] it is shown under; `passages` are the shown
    passages in [n] order (what `Answer.passages` holds) and `shown` their fenced excerpts."""

    question: str
    ranked: list[Passage]
    markers: dict[int, int]
    passages: list[Passage]
    shown: list[Passage]
    candidates: list[Sentence]
    #: Why the best sentence does not answer the question (empty = it may).
    gaps: list[str]
    #: Why no sentence is close enough to the question to be read ("" = one is).
    distant: str = ""
    #: Why the sources do not settle the answer: two passages' sentences match about equally
    #: well and say different things ("" = they do not).
    ambiguous: str = ""

    def grammar(self, choices: int = 1) -> str:
        return quote_grammar([(self.markers[c.passage], fence(c.text)) for c in self.candidates[:choices]])

    def citation(self, sentence: Sentence, claim: str, support: float) -> Citation:
        passage = self.ranked[sentence.passage]
        return Citation(
            self.markers[sentence.passage], passage, claim, inferred=False, support=round(support, 4),
            supported=True, quote=passage.text[sentence.start : sentence.end], start=sentence.start, end=sentence.end,
        )


def plan(question: str, ranked: Sequence[Passage], *, top: int = 3, embedder: Any | None = None,
         min_score: float = 0.0, span_margin: float = 0.0, ambiguity_margin: float = 0.0) -> ReadingPlan:
    """Focus on `ranked`. With an `embedder` (the margins are in its scores): `min_score` is the
    least the best sentence must score to be read at all; a runner-up in the same passage, with at
    most one sentence between them and within `span_margin` of the best, joins the quote; a
    neighbour the quote leans on, or that leans on it, joins it too (`_whole`); a runner-up left
    outside the quote within `ambiguity_margin` that says something else makes the plan ambiguous."""
    from agentkit.reasoning.focus import focus

    ranked = list(ranked)
    f = focus(question, ranked, top=top, embedder=embedder)
    order: list[int] = []
    for s in f.ranked:
        if s.passage in f.windows and s.passage not in order:
            order.append(s.passage)
    markers = {i: n for n, i in enumerate(order, 1)}
    passages = [ranked[i] for i in order]
    shown = [replace(ranked[i], text=fence(f.excerpt(ranked, i))) for i in order]
    candidates = list(f.candidates)
    gaps: list[str] = []
    distant = ambiguous = ""
    if candidates:
        best = candidates[0]
        gaps = unmet_premises(question, best.text, ranked[best.passage].title + " " + ranked[best.passage].text)
        # min_score 0 turns the check off: a best score below 0 (a negative cosine) is still read.
        if embedder is not None and min_score > 0 and best.score < min_score:
            distant = (f"no source sentence is close to the question (best {best.score:.2f}, "
                       f"below agent.focus_min_score {min_score:.2f})")
        if embedder is not None and len(candidates) > 1:
            second = candidates[1]
            if second.passage == best.passage and best.score - second.score < span_margin:
                candidates[0] = _span(ranked[best.passage].text, best, second) or best
        candidates[0] = _whole(ranked[best.passage].text, candidates[0])
        if embedder is not None and len(candidates) > 1:
            second, quote = candidates[1], candidates[0]
            inside = second.passage == quote.passage and quote.start <= second.start and second.end <= quote.end
            if not inside and best.score - second.score < ambiguity_margin and not _same_claim(best.text, second.text):
                ambiguous = (f"source sentences in [{markers.get(best.passage)}] and [{markers.get(second.passage)}] "
                             f"match the question about equally well (within agent.ambiguity_margin "
                             f"{ambiguity_margin:.2f}) and say different things; the sources do not settle it")
    return ReadingPlan(question, ranked, markers, passages, shown, candidates, gaps, distant, ambiguous)


def _span(text: str, a: Sentence, b: Sentence) -> Sentence | None:
    """One quote from `a` to `b` (sentences of the same passage text), or None when more than one
    sentence lies between them, or the one between may not be quoted (a heading, a question)."""
    from agentkit.reasoning.focus import quotable, split_sentences

    spans = split_sentences(text)
    starts = [s for s, _ in spans]
    try:
        i, j = starts.index(a.start), starts.index(b.start)
    except ValueError:
        return None
    if abs(i - j) > 2 or not all(quotable(text[s:e]) for s, e in spans[min(i, j) : max(i, j) + 1]):
        return None
    start, end = min(a.start, b.start), max(a.end, b.end)
    return Sentence(a.passage, start, end, text[start:end], a.score)


#: Words that open a sentence which leans on the one before it: "Such problems are called
#: NP-intermediate." means little without the sentence that defines them.
_LEANS = re.compile(
    r"^[\"'“‘(]?(?:this|these|those|such|it|its|he|she|they|his|her|their|thus|hence|therefore|but|however|"
    r"then|both|the latter|the former|as a result|consequently|instead|yet)\b",
    re.I,
)


def _whole(text: str, quote: Sentence, most: int = 3) -> Sentence:
    """The quote with the sentences it cannot be read without: the one before when the quote's
    first sentence leans on it (opens with "It", "Such", "However"…), the one after when that one
    leans on the quote. At most `most` sentences in all; only quotable ones join."""
    from agentkit.reasoning.focus import quotable, split_sentences

    spans = split_sentences(text)
    inside = [k for k, (s, e) in enumerate(spans) if quote.start <= s and e <= quote.end]
    if not inside:
        return quote
    sentence = [text[s:e] for s, e in spans]
    first, last = inside[0], inside[-1]
    if last - first < most - 1 and first > 0 and _LEANS.match(sentence[first]) and quotable(sentence[first - 1]):
        first -= 1
    if last - first < most - 1 and last + 1 < len(spans) and _LEANS.match(sentence[last + 1]) \
            and quotable(sentence[last + 1]):
        last += 1
    start, end = min(quote.start, spans[first][0]), max(quote.end, spans[last][1])
    if (start, end) == (quote.start, quote.end):
        return quote
    return Sentence(quote.passage, start, end, text[start:end], quote.score)


def _same_claim(a: str, b: str) -> bool:
    """Two sentences that share most of their content words say the same thing (a copy, a
    second source for it): no ambiguity between them."""
    wa = {stem(w) for w in words(a) if w not in STOPWORDS}
    wb = {stem(w) for w in words(b) if w not in STOPWORDS}
    return bool(wa and wb) and len(wa & wb) / len(wa | wb) >= 0.6


@dataclass
class Reading:
    text: str
    kind: str
    citations: list[Citation]
    warnings: list[str]
    #: The model's own answer when it did not hold up (the quote is shown instead).
    withheld: str = ""


def interpret(reply: str, plan: ReadingPlan, support: Callable[[str, str], float] | None, threshold: float) -> Reading:
    """Turn the model's `Quote:`/`Answer:` reply into the answer: the quote (`The sources say:
    “…” [n]`), followed by the model's short answer when the quote supports it (` In short: …`);
    or a refusal."""
    from agentkit.reasoning.citations import REFUSAL
    from agentkit.reasoning.focus import type_fit, answer_type
    from agentkit.reasoning.verify import is_refusal

    parsed = parse_quoted(reply, plan.candidates, plan.markers, [p.text for p in plan.ranked])
    notes = list(parsed.warnings)
    if parsed.abstained:
        return Reading(REFUSAL, "refusal", [], notes + ["the model found no source sentence that answers the question"],
                       withheld=parsed.answer)
    if not plan.candidates:
        return Reading(REFUSAL, "refusal", [], notes + ["no source sentence matches the question"], withheld=parsed.answer)
    best = plan.candidates[0]
    chosen = parsed.candidate or best
    if chosen is not best and unmet_premises(plan.question, chosen.text, plan.ranked[chosen.passage].text):
        notes.append("the model quoted a sentence that does not meet the question's premises; the best-matching one is used")
        chosen = best
    quote = plan.ranked[chosen.passage].text[chosen.start : chosen.end]
    claim = parsed.answer
    problem = ""
    if not claim:
        problem = "the model gave no short answer"
    elif is_refusal(claim):
        problem = f"the model's answer {_short(claim)!r} says it does not know although it quoted a source"
    elif restates(claim, plan.question):
        problem = f"the model's answer {_short(claim)!r} only restates the question"
    else:
        kind = answer_type(plan.question)
        if kind != "other" and type_fit(kind, quote, plan.question) and not type_fit(kind, claim, plan.question):
            problem = f"the question asks for a {kind} and the model's answer {_short(claim)!r} gives none"
    score = 1.0
    claim = claim.strip(" .,;:")
    if not problem and _locate_words(claim, quote) is None:
        # A small model paraphrases into error: an answer must be words copied from its quote.
        score = support(claim, quote) if support is not None else 0.0
        problem = f"the model's answer {_short(claim)!r} is not copied from its quote (support {score:.2f})"
    if problem:
        notes.append(problem + "; the quoted source sentence is shown instead")
        citation = plan.citation(chosen, quote, 1.0)
        return Reading(quoted_text(quote, citation.marker), "extractive", [citation], notes, withheld=claim)
    citation = plan.citation(chosen, claim, score)
    # The sentence first (it streams while the model copies it), then the short answer it backs.
    return Reading(quoted_text(quote, citation.marker) + short_text(claim), "model", [citation], notes)


# --- the answer's text, and its start while the model is still copying the quote ----------------

SAYS = "The sources say: “"


def quoted_text(quote: str, marker: int) -> str:
    """How every quote-reader answer starts: `The sources say: “<quote>” [n]`."""
    return f"{SAYS}{quote}” [{marker}]"


def short_text(claim: str) -> str:
    """What a checked short answer adds after its quote: ` In short: <claim>.`"""
    return f" In short: {claim}" + ("" if claim.endswith(("!", "?", "…")) else ".")


class QuoteStream:
    """The answer's text while a grammar-forced reply is still being written (see `interpret`).

    Once the reply can only be the best-ranked sentence, `The sources say: “` streams, then the
    quote word by word as the model copies it (in the source's own text, not the fenced one the
    model sees), then `” [n]` as the copy closes; `interpret` adds any short answer at the end.
    What streams is always the start of `interpret`'s text for the finished reply: `Quote: none`
    streams nothing, and another sentence (with `agent.quote_choices` > 1) streams at the end,
    since `interpret` may replace it.
    """

    def __init__(self, plan: ReadingPlan, choices: int = 1) -> None:
        self._plan = plan
        self._options = [(c, offered(plan.markers[c.passage], fence(c.text))) for c in plan.candidates[:choices]]
        self._reply = ""
        self._done = not self._options
        #: The text streamed so far.
        self.sent = ""

    def feed(self, token: str) -> str:
        """The answer text that `token`, the reply's next piece, adds ("" while none)."""
        if self._done:
            return ""
        self._reply += token
        opening = "Quote: "
        if not self._reply.startswith(opening):
            self._done = not opening.startswith(self._reply)
            return ""
        body = self._reply[len(opening) :]
        fits = [(c, option) for c, option in self._options if option.startswith(body) or body.startswith(option)]
        if not body or len(fits) > 1:
            return ""  # not yet decided between the sentences offered
        if not fits or fits[0][0] is not self._plan.candidates[0]:
            self._done = True  # "none", a sentence interpret may replace, or a reply off the grammar
            return ""
        sentence, option = fits[0]
        quote = self._plan.ranked[sentence.passage].text[sentence.start : sentence.end]
        if body.startswith(option):
            self._done = True
            text = quoted_text(quote, self._plan.markers[sentence.passage])
        else:
            text = SAYS + _copied(quote, body[option.index('"') + 1 :])
        piece, self.sent = text[len(self.sent) :], text
        return piece


def _copied(quote: str, copy: str) -> str:
    """The start of `quote` up to the last whole word the model's `copy` of it has passed; words
    the fence changed (marks, labels) hold the rest back until the quote is complete."""
    done = copy.split()
    if done and not copy[-1].isspace():
        done.pop()  # the word being copied may still grow
    end = 0
    for word, m in zip(done, re.finditer(r"\S+", quote)):
        if word != m.group():
            break
        end = m.end()
    return quote[:end]
