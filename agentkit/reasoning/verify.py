"""The citation check: does each cited passage support the sentence that cites it?

Lexical by default (the sentence's words, numbers and names are in the passage, negated there only
where the sentence negates them); a model judge, or a verifier a plugin registers, can stand in.
"""

from __future__ import annotations

import json
import re
from collections import OrderedDict
from collections.abc import Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from typing import Any, Protocol

from agentkit.errors import ConfigError
from agentkit.text import STOPWORDS, stem
from agentkit.types import Citation

#: A claim missing one of its numbers, dates or names scores at most this, below any sensible
#: threshold (the default is 0.5): a wrong figure or person is the commonest unsupported detail.
MISSING_DETAIL_CAP = 0.3

# Numbers with thousands separators ("8,849", "10 000" with a narrow space), decimals, and the
# suffixes of ordinals and decades ("10th", "1990s"), which are dropped.
_NUMBER = re.compile(r"(?<![^\W\d_])(\d{1,3}(?:[,\u2009\u202f\u00a0']\d{3})+(?!\d)|\d+)(?:\.(\d+))?"
                     r"(?:(?:st|nd|rd|th|s)(?![^\W_]))?")
_TOKEN = re.compile(r"[^\W_]+(?:'[^\W_]+)*|[.!?]|[,;:()\u2013\u2014\"]")
_SENTENCE_END = frozenset(".!?")
_PASSAGE_SENTENCES = re.compile(r"(?<=[.!?])\s+(?=[^\W\d_a-z]|[\"'(\[0-9])|\n+")

# Say nothing a passage could support or not: "Yes." cites its source for the question's claim.
_ANSWER_WORDS = frozenset("yes yeah yep".split())
_NEGATORS = frozenset("not no never cannot none neither nor without nobody nothing nowhere".split())
# "not only X but also Y" and "no fewer than" assert; they deny nothing.
_NOT_NEGATING = {"not": frozenset("only just merely least until".split()),
                 "no": frozenset("less fewer more doubt sooner matter".split())}
# Where a negation's reach ends: "not by the wind but by the Moon".
_SCOPE_ENDS = frozenset("but yet whereas although though however instead rather while which because".split())

_CARDINALS = ("zero one two three four five six seven eight nine ten eleven twelve thirteen fourteen fifteen "
              "sixteen seventeen eighteen nineteen twenty").split()
_ORDINALS = ("first second third fourth fifth sixth seventh eighth ninth tenth eleventh twelfth thirteenth "
             "fourteenth fifteenth sixteenth seventeenth eighteenth nineteenth twentieth").split()
_TENS = {"thirty": "30", "forty": "40", "fifty": "50", "sixty": "60", "seventy": "70", "eighty": "80", "ninety": "90"}
#: Number words a passage may use for a claim's digits ("three" for "3", "tenth" for "10th").
_PASSAGE_NUMBER_WORDS = {**{w: str(i) for i, w in enumerate(_CARDINALS)},
                         **{w: str(i) for i, w in enumerate(_ORDINALS, 1)}, **_TENS, "hundred": "100", "thousand": "1000", "dozen": "12"}
#: The number words a claim is held to; "one", "first" and "second" are more often not numbers.
_CLAIM_NUMBER_WORDS = {w: n for w, n in _PASSAGE_NUMBER_WORDS.items()
                       if w in _CARDINALS[2:] or w in _TENS}

# Capitalised only because they open a sentence; never taken for a name there.
_OPENERS = frozenset("""according also although answer another based both certainly despite during each either
    even every finally first furthermore generally hence however indeed instead later many meanwhile moreover
    neither note overall perhaps rather second several since still sure therefore third thus today unlike
    like yes""".split())

# Endings of common words, seldom of names: "Scientists", "Gravity", "Mostly" open many sentences.
_COMMON_ENDING = re.compile(r"(?:[^siu]s|ly|ing|ed|tion|sion|ment|ness|ity|ism|ance|ence|ogy)$")

_META = (r"(?:(?:the|these|this|any|my|your) )?"
         r"(?:sources?|passages?|texts?|context|documents?|evidence|articles?|excerpts?|materials?"
         r"|information|results?)")
# Text that says the answer was not found; it never counts as support, whatever it cites.
_REFUSAL = re.compile("|".join([
    r"\b(?:no|not enough|insufficient) (?:information|details?|mention)\b",
    # "The date is not given." / "not mentioned in the sources", but not "not given aspirin".
    r"\bnot (?:mentioned|provided|specified|stated|given|discussed|covered|addressed|included|listed)\b"
    rf"(?=\s*(?:[.!?,;)]|$|(?:in|by|within|from) {_META}\b|anywhere\b|here\b))",
    rf"\b(?:{_META}|it|they|this) (?:do|does|did|can|could)(?: not|n't) "
    r"(?:say|mention|state|specify|provide|contain|include|cover|discuss|address|tell|answer)\b",
    r"\bi (?:do not|don't|did not|didn't) know\b",
    r"\bi(?:'m| am) not sure\b",
    r"\bi (?:could not|couldn't|cannot|can't|was unable to|am unable to|am not able to) "
    r"(?:find|locate|determine|answer|tell|say)\b",
    r"\b(?:cannot|can't|could not|couldn't) be (?:determined|answered|found|known)\b",
]), re.IGNORECASE)


class Verifier(Protocol):
    name: str

    def support(self, claim: str, evidence: str) -> float:
        """0 (unrelated or contradicted) to 1 (the evidence states the claim)."""
        ...


@dataclass(frozen=True)
class Assessment:
    """What the lexical check found: the score and, when it vetoed the claim, why."""

    score: float
    #: Share of the claim's content words and numbers found in the passage.
    share: float
    #: "" when nothing vetoes the claim; else "refusal", "contradiction" (the passage states the
    #: opposite), "negation" (the polarity differs) or "missing: 1798, Rollo".
    veto: str = ""
    #: The claim has no content words to check ("Yes.").
    empty: bool = False


@dataclass
class _Text:
    """A text's content terms (stemmed, numbers normalised), numbers, and the words as written."""

    terms: set[str]
    numbers: set[str]
    words: set[str]
    #: Terms inside a negation's reach, and terms after that reach ended ("not A but B": B).
    negated: set[str]
    after: set[str]
    #: The text negates something.
    negates: bool


class LexicalVerifier:
    """Support from the claim's words, numbers, names and negation, without a model.

    The score is the share of the claim's content words and numbers found in the passage. A number,
    date or name the passage lacks caps it at `MISSING_DETAIL_CAP`; a claim that negates what the
    passage sentence best covering it states, or states what that sentence negates, scores 0, as does
    a refusal ("the sources do not say").
    """

    name = "lexical"

    def support(self, claim: str, evidence: str) -> float:
        return self.assess(claim, evidence).score

    def contradicts(self, claim: str, evidence: str) -> bool:
        """The passage states the opposite of the claim (its clauses cannot rescue it)."""
        return self.assess(claim, evidence).veto == "contradiction"

    def assess(self, claim: str, evidence: str) -> Assessment:
        if is_refusal(claim):
            return Assessment(0.0, 0.0, "refusal")
        c, names, openers = _analyse(_strip_list_marker(claim), claim_side=True)
        if not c.terms and not c.numbers:
            return Assessment(1.0, 1.0, empty=True)  # nothing to check ("Yes." cites its source)
        p, sentences = _passage(evidence)
        found = len(c.terms & p.terms) + len(c.numbers & p.numbers)
        share = round(found / (len(c.terms) + len(c.numbers)), 4)
        polarity = _polarity(c, sentences)
        if polarity:
            return Assessment(0.0, share, polarity)
        missing = sorted(c.numbers - p.numbers)
        missing += [n for n in names if not _present(n, p, prefix=False)]
        missing += [n for n in openers if not _present(n, p, prefix=True)]
        if missing:
            return Assessment(min(share, MISSING_DETAIL_CAP), share, "missing: " + ", ".join(missing))
        return Assessment(share, share)


_JUDGE_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"verdict": {"type": "string", "enum": ["supported", "contradicted", "not_enough_info"]}},
    "required": ["verdict"],
    "additionalProperties": False,
}
_VERDICT_SCORES = {"supported": 1.0, "contradicted": 0.0, "not_enough_info": 0.0}


class JudgeVerifier:
    """The model judges each claim against its passage, forced by a grammar to reply
    {"verdict": "supported" | "contradicted" | "not_enough_info"} (1.0, 0.0, 0.0).

    The lexical checks run first and have a veto: a claim with a number, date or name the passage
    lacks, a negation the passage does not share, or a refusal, is never judged supported, and
    costs no model call. A reply that is not a verdict leaves the lexical score standing.
    """

    name = "judge"

    def __init__(
        self, llm: Any, *, max_tokens: int = 16, max_evidence_chars: int = 2000, cache_size: int = 256
    ) -> None:
        self.llm = llm
        self.lexical = LexicalVerifier()
        self.max_tokens = max_tokens
        self.max_evidence_chars = max_evidence_chars
        self._cache_size = cache_size
        # check_citations asks about a sentence and then its clauses; the agent may ask again.
        self._verdicts: OrderedDict[tuple[str, str], str] = OrderedDict()

    @classmethod
    def from_llm(cls, llm: Any) -> JudgeVerifier:
        if llm is None:
            raise ConfigError("agent.verify: 'judge' needs the model; build the verifier with an LLM")
        return cls(llm)

    def verdict(self, claim: str, evidence: str) -> str:
        """The model's verdict: supported, contradicted, not_enough_info, or "invalid"."""
        from agentkit.llm.base import GenerationOptions
        from agentkit.reasoning.cot import load_template

        key = (claim, evidence)
        if key in self._verdicts:
            self._verdicts.move_to_end(key)
            return self._verdicts[key]
        evidence = evidence.strip()[: self.max_evidence_chars]
        messages = load_template("judge_support").render(claim=claim.strip(), evidence=evidence)
        options = GenerationOptions(max_tokens=self.max_tokens, temperature=0.0, json_schema=_JUDGE_SCHEMA)
        text = self.llm.chat(messages, options).text
        try:
            verdict = json.loads(text)["verdict"]
        except (ValueError, KeyError, TypeError):
            verdict = "invalid"
        if not isinstance(verdict, str) or verdict not in _VERDICT_SCORES:
            verdict = "invalid"
        self._verdicts[key] = verdict
        if len(self._verdicts) > self._cache_size:
            self._verdicts.popitem(last=False)
        return verdict

    def support(self, claim: str, evidence: str) -> float:
        lexical = self.lexical.assess(claim, evidence)
        if lexical.veto or lexical.empty:
            return lexical.score
        verdict = self.verdict(claim, evidence)
        return lexical.score if verdict == "invalid" else _VERDICT_SCORES[verdict]

    def contradicts(self, claim: str, evidence: str) -> bool:
        lexical = self.lexical.assess(claim, evidence)
        if lexical.veto or lexical.empty:
            return lexical.veto == "contradiction"
        return self.verdict(claim, evidence) == "contradicted"


def build_verifier(name: str, llm: Any = None) -> Verifier:
    """The verifier `agent.verify` names: a built-in (`lexical`, `judge`) or one a plugin registered
    through `register_verifiers`. Built with `from_llm(llm)` where it has one, else with no arguments.
    `off` has no verifier: check for it before calling."""
    if name == "off":
        raise ConfigError("agent.verify: 'off' turns the citation check off; there is no verifier to build")
    from agentkit.plugins import registry

    cls = registry().verifier(name)
    return cls.from_llm(llm) if hasattr(cls, "from_llm") else cls()


@dataclass
class Check:
    supported: list[Citation] = field(default_factory=list)
    unsupported: list[Citation] = field(default_factory=list)
    #: Supported only in part: a clause holds up, the whole sentence does not.
    partial: list[Citation] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """At least one citation holds up, and none is contradicted outright."""
        return bool(self.supported)


def check_citations(citations: Sequence[Citation], verifier: Verifier, threshold: float) -> Check:
    """Score every citation (sets `support` and `supported` on it).

    A sentence counts as supported when it, or one of its substantial clauses, is: small models
    tack invented asides onto a sourced statement. Such a sentence lands in `partial` too, so the
    caller can flag the unsupported rest. A sentence the passage contradicts (where the verifier
    can tell, through a `contradicts(claim, evidence)` method) is not rescued by its clauses:
    "tides are caused by the wind, not the Moon" is wrong, whatever its first clause says.
    """
    from agentkit.reasoning.citations import claims

    contradicts = getattr(verifier, "contradicts", None)
    result = Check()
    for c in citations:
        evidence = f"{c.passage.title}\n{c.passage.text}"
        sentence = c.sentence or ""
        whole = best = verifier.support(sentence, evidence)
        if whole < threshold and not (contradicts is not None and contradicts(sentence, evidence)):
            best = max([whole, *(verifier.support(part, evidence) for part in claims(sentence)[1:])])
        c.support = round(best, 4)
        c.supported = best >= threshold
        (result.supported if c.supported else result.unsupported).append(c)
        if c.supported and whole < threshold:
            result.partial.append(c)
    return result


# --- text analysis -------------------------------------------------------------------------------


def is_refusal(text: str) -> bool:
    """Text that says the answer is missing ("I could not find…", "not mentioned in the sources"):
    never an answer, never support."""
    return bool(_REFUSAL.search(_fold(text)))


def _fold(text: str) -> str:
    """Straight apostrophes, no possessive 's ("the Moon's pull" -> "the Moon pull")."""
    text = text.replace("\u2019", "'").replace("\u2018", "'")
    text = re.sub(r"(?<=[^\W_])'s\b", "", text)
    return re.sub(r"(?<=s)'(?=\W|$)", "", text)


def _number(m: re.Match[str]) -> str:
    """One spelling per number: "8,849" -> 8849, "3.50" -> 3p5, "10th" -> 10, set apart by spaces."""
    whole = re.sub(r"\D", "", m.group(1)).lstrip("0") or "0"
    frac = (m.group(2) or "").rstrip("0")
    return f" {whole}p{frac} " if frac else f" {whole} "


def _strip_list_marker(text: str) -> str:
    return re.sub(r"^\s*(?:[-*\u2022]|\d+[.)])\s+", "", text)


def _analyse(text: str, *, claim_side: bool) -> tuple[_Text, list[str], list[str]]:
    """The text's terms and negation scopes, and (for a claim) the names it must find in the
    passage: capitalised words inside a sentence or in a multi-word name (`names`), and a
    capitalised word that only opens a sentence (`openers`, a name or a common word)."""
    tokens = _TOKEN.findall(_NUMBER.sub(_number, _fold(text)))
    number_words = _CLAIM_NUMBER_WORDS if claim_side else _PASSAGE_NUMBER_WORDS
    out = _Text(set(), set(), set(), set(), set(), False)
    names: list[str] = []
    openers: list[str] = []
    negations: list[str] = []
    in_scope = False
    starts = True  # the next word opens a sentence
    for i, tok in enumerate(tokens):
        if not tok[0].isalnum():
            if tok in _SENTENCE_END:
                starts, in_scope = True, False
            elif tok != '"':
                in_scope = False
            continue
        opens, starts = starts, False
        low = tok.lower()
        if low in _SCOPE_ENDS:
            in_scope = False
        if _negates(low, tokens[i + 1].lower() if i + 1 < len(tokens) else ""):
            in_scope = out.negates = True
            negations.append(low)
            continue
        out.words.add(low)
        if low in STOPWORDS or low in _ANSWER_WORDS:
            continue
        if low in number_words or re.fullmatch(r"\d+(?:p\d+)?", low):
            term = number_words.get(low, low)
            out.numbers.add(term)
            if not claim_side and not low[0].isdigit():
                out.terms.add(_stem(low))  # "one of the highest" still matches "one"
        else:
            term = _stem(low)
            out.terms.add(term)
            if claim_side and tok[0].isupper():
                following = tokens[i + 1] if i + 1 < len(tokens) else ""
                if not opens or (following[:1].isupper() and following.lower() not in STOPWORDS):
                    names.append(tok)
                elif low not in _OPENERS and not _COMMON_ENDING.search(low):
                    openers.append(tok)
        if in_scope:
            out.negated.add(term)
        elif out.negates:
            out.after.add(term)
    if "without" in negations and len(negations) > 1:
        # "cannot grow without light", "without the Moon there would be no tides": a necessity,
        # stated positively.
        out.negates = False
    return out, names, openers


def _stem(word: str) -> str:
    """`stem`, then without a silent e or an -ly, which it keeps: "causes" and "caused" both
    give "caus", "mainly" gives "main"."""
    w = stem(word)
    if w.endswith("ly") and len(w) >= 6:
        w = w[:-2]
    return w[:-1] if w.endswith("e") and len(w) > 4 else w


def _negates(word: str, following: str) -> bool:
    if word.endswith("n't"):
        return True
    return word in _NEGATORS and following not in _NOT_NEGATING.get(word, ())


def _present(name: str, p: _Text, *, prefix: bool) -> bool:
    low = name.lower()
    if low in p.words or _stem(low) in p.terms:
        return True
    # A sentence's first word may be a common word the passage inflects otherwise ("Gravity" for
    # "gravitational"); a name inside the sentence must be there as written.
    return prefix and len(low) >= 5 and any(w.startswith(low[:5]) for w in p.words)


@lru_cache(maxsize=256)
def _passage(evidence: str) -> tuple[_Text, tuple[_Text, ...]]:
    """The passage as a whole and sentence by sentence (a cited passage is checked once per clause)."""
    whole = _analyse(evidence, claim_side=False)[0]
    return whole, tuple(_analyse(s, claim_side=False)[0] for s in _PASSAGE_SENTENCES.split(evidence) if s.strip())


def _polarity(c: _Text, sentences: Sequence[_Text]) -> str:
    """"contradiction" or "negation" when the claim's polarity differs from the passage sentence
    that best covers it; "" when they agree (or no sentence shares a term with the claim).

    A negation counts where what it negates is what the other side talks about: "tides are
    caused by the Moon, not by the wind" does not deny "tides are caused by the Moon", and
    "not caused by the wind but by the Moon" corrects itself.
    """
    claim_terms = c.terms | c.numbers
    candidates: list[tuple[int, _Text]] = []
    for s in sentences:
        covered = len(claim_terms & (s.terms | s.numbers))
        if covered:
            candidates.append((covered, s))
    if not candidates:
        return ""
    top = max(n for n, _ in candidates)
    verdicts = [_compare(c, s) for n, s in candidates if n == top]
    # Of equally good sentences, one that agrees with the claim is enough.
    return "" if "" in verdicts else ("contradiction" if "contradiction" in verdicts else verdicts[0])


def _compare(c: _Text, s: _Text) -> str:
    c_all, s_all = c.terms | c.numbers, s.terms | s.numbers
    claim_negates = c.negates and _reaches(c, s_all)
    sentence_negates = s.negates and _reaches(s, c_all)
    if claim_negates == sentence_negates:
        return ""
    # The negated words all occur, unnegated, on the other side: it says the opposite.
    negating = c if claim_negates else s
    other = s_all if claim_negates else c_all
    return "contradiction" if negating.negated <= other else "negation"


def _reaches(negating: _Text, other: set[str]) -> bool:
    """The negation is about something the other text says, and is not corrected later in its
    own sentence ("not A but B", where the other text says B and not A)."""
    if not negating.negated & other:
        return False
    corrected = negating.negated - other and negating.after & other
    return not corrected
