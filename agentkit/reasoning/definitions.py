"""Definitional questions: recognising one in any phrasing, and answering it directly by quoting
the senses a dictionary source returned, each cited to its numbered passage.

Reading a question (`definition_request`) is done in three steps rather than one regex per
phrasing:

1. normalise: curly and angle quotes become ' and ", dashes become " - ", spaces collapse;
2. strip what does not name the word: leading clauses ("hi, quick question: ..."), lead-ins and
   politeness ("could you tell me", "I was wondering if", "please", "explain"), and trailing
   qualifiers ("in everyday language", "in plain English", "for me", "please");
3. match what is left against a small set of core shapes: "define X", "what does X mean",
   "what X means", "meaning of X", "what is meant by X", "how do you define X", "X: meaning",
   "X means what", "the word X", and the weaker "what is X" (a definition only when a
   dictionary has X). "what does it mean" takes its word from the clause before ("I keep seeing
   the word X, what does it mean?").
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import NamedTuple

from agentkit.text import STOPWORDS
from agentkit.types import Citation, Passage

# --- reading the question ----------------------------------------------------------------------

_QUOTE_MAP = str.maketrans({
    "“": '"', "”": '"', "„": '"', "‟": '"', "«": '"', "»": '"', "「": '"', "」": '"',
    "‘": "'", "’": "'", "‚": "'", "‛": "'", "‹": "'", "›": "'", "`": "'", "´": "'",
})
_QUOTES = "\"'"
_DASH = re.compile(r"\s*[—–―]+\s*|\s+-{1,2}\s+")
#: Where one clause ends and the next begins: punctuation followed by a space, or a dash.
_CLAUSE_BREAK = re.compile(r"(?<=[,;:!?.])\s+|\s+-\s+")
_END_PUNCT = " ?!.,;:"

_LEAD_INS = (
    r"please|pls|kindly|so|ok(?:ay)?|well|hey|hi|hello|yo|um+|uh+|also|and|but|now|just|sorry",
    r"(?:a\s+)?quick\s+question|one\s+more\s+(?:thing|question)|(?:a\s+)?question|excuse\s+me",
    r"(?:can|could|would|will)\s+(?:you|u)|you\s+(?:can|could|would)|if|whether",
    r"(?:tell|show|remind)\s+me|let\s+me\s+know|help\s+me\s+(?:understand|with)",
    r"i(?:'d|\s+would)\s+(?:like|love)\s+to\s+know|i\s+(?:want|need)\s+to\s+know",
    r"i(?:'m|\s+am)\s+(?:wondering|curious)|i\s+was\s+wondering|i\s+wonder(?:ed)?",
    r"do\s+you\s+know|any\s+idea|explain(?:\s+to\s+me)?|(?:give|get)\s+me|i\s+(?:need|want)",
    r"in\s+(?:plain|simple|everyday|ordinary|layman'?s|lay|basic)\s+(?:english|language|terms|words)",
)
#: Lead-ins and politeness before the core of the question.
_LEAD = re.compile(rf"^(?:{'|'.join(_LEAD_INS)})(?![\w'-])[\s,:;!.]*", re.IGNORECASE)
_REGISTER = r"(?:plain|simple|everyday|ordinary|common|normal|layman'?s|lay|basic|modern|general|standard)"
#: Trailing qualifiers that do not change which word is asked about.
_TAIL = re.compile(
    r"[\s,;:]*(?<![\w'-])(?:please|pls|thanks|thank\s+you|for\s+me|exactly|actually|precisely|again|then|anyway|here"
    rf"|in\s+{_REGISTER}\s+(?:english|language|terms|words|speech|usage|parlance|use)"
    rf"|(?:in\s+)?(?:everyday|common|normal|ordinary)\s+(?:language|usage|speech|use)"
    r"|in\s+(?:english|general|short|brief|this\s+context|context)|simply|briefly)$",
    re.IGNORECASE,
)

_T = r"(?P<w>.{1,100}?)"
#: "the word", "the English term", ...: kept out of the headword.
_N = r"(?:the\s+)?(?:(?:english\s+)?(?:word|term|phrase|expression|abbreviation|acronym|idiom)\s+)?"
#: The same, but a bare "the" stays with the term: "what is the answer?" asks no definition.
_NAMED_AS = r"(?:the\s+(?:english\s+)?(?:word|term|phrase|expression|abbreviation|acronym|idiom)\s+)?"
_ADV = r"(?:(?:actually|really|exactly|even|precisely)\s+)?"
_MEANING = (
    r"(?:(?:exact|precise|actual|real|literal|dictionary|proper|correct|basic|simple|plain|common|usual|general)\s+)?"
    r"(?:meaning|definition|sense|defn|def)s?"
)
_EXPLICIT = [
    re.compile(p, re.IGNORECASE)
    for p in (
        rf"^(?:define|look\s+up|give\s+(?:me\s+)?(?:a\s+|the\s+)?definition(?:\s+(?:of|for))?)\s*:?\s+{_N}{_T}$",
        rf"^what(?:\s+(?:does|do|did)|'s|s)\s+{_N}{_T}\s+{_ADV}(?:mean|stand\s+for|signify|refer\s+to|denote)$",
        rf"^what\s+{_N}{_T}\s+{_ADV}(?:means|stands\s+for|signifies|refers\s+to|denotes)$",
        rf"^(?:(?:what\s+(?:is|are)|what's|whats)\s+)?(?:the\s+|a\s+|an\s+)?{_MEANING}\s+(?:of|for)\s+{_N}{_T}$",
        rf"^what\s+(?:the\s+)?{_MEANING}\s+(?:of|for)\s+{_N}{_T}\s+(?:is|are)$",
        rf"^what\s+(?:is|was|'s)\s+meant\s+by\s+{_N}{_T}$",
        rf"^what\s+do\s+(?:you|people|they|we|folks)\s+mean\s+by\s+{_N}{_T}$",
        rf"^how\s+(?:do|would|should|does|can)\s+(?:you|one|i|we|someone|people)\s+define\s+{_N}{_T}$",
        rf"^how\s+is\s+{_N}{_T}\s+defined$",
        rf"^{_N}{_T}\s*[-:]?\s*(?:{_MEANING}|means|defined)$",
        rf"^{_N}{_T}\s+means\s+what$",
        rf"^{_MEANING}\s*[-:]\s*{_N}{_T}$",
        rf"^(?:about\s+)?the\s+(?:(?:english\s+)?(?:word|term|phrase|expression|idiom))\s+{_T}$",
    )
]
#: "What is a lambaste?": a definition only if a dictionary has the word.
_WHAT_IS = [
    re.compile(p, re.IGNORECASE)
    for p in (
        rf"^what\s+(?:is|are|was|were)\s+{_NAMED_AS}{_T}$",
        rf"^who\s+(?:is|are|was|were)\s+(?=an?\s){_T}$",
        rf"^(?:what's|whats|what're)\s+{_NAMED_AS}{_T}$",
        rf"^what\s+{_NAMED_AS}{_T}\s+(?:is|are)$",
    )
]
_ARTICLE = re.compile(r"^(?:a|an|the)\s+", re.IGNORECASE)
#: A word that stands for something said before ("what does it mean?").
_ANAPHOR = re.compile(r"^(?:it|this|that|these|those|they|them)$", re.IGNORECASE)
#: A phrase about the context, not a headword: "this error", "your answer".
_DEICTIC = re.compile(r"^(?:this|that|these|those|my|your|his|her|its|our|their|it|they|them)\s", re.IGNORECASE)
#: Words that make a phrase a clause rather than a term.
_CLAUSE_WORDS = frozenset(
    "is are was were be been has have had do does did what how why who whom which when where i you we he she "
    "they it me us him them no not can could should would will shall may might must".split()
)
_NAMED = re.compile(r"\b(?:word|term|phrase|expression|abbreviation|acronym|idiom)\s+([^,;:!?.]+)", re.IGNORECASE)
_QUOTED = re.compile(r"\"([^\"]{1,60})\"|(?<![\w'])'([^']{1,60})'(?![\w'])")
#: At most this many leading clauses are dropped (a bound on the work for a long question).
MAX_CLAUSES = 8
#: A headword has at most this many words; "what is X?" counts only for one.
MAX_WORDS = 6
#: A question that matches no shape is taken as a bare term when it is this short.
BARE_TERM_WORDS = 4
#: Small talk that looks like "what is X?" ("what's up?", "what's new?").
_NOT_ASKED = STOPWORDS | {"new", "next", "wrong", "happening", "going", "good", "cooking"}


@dataclass(frozen=True)
class DefinitionRequest:
    """The word a question asks about and how plainly it asks for a definition."""

    #: The headword without quotes or a leading article: "lambaste".
    word: str
    #: As written: "a lambaste" (the same as `word` when there was no article).
    written: str
    #: Asked for in so many words ("define X", "what does X mean"); False for "what is X?".
    explicit: bool

    @property
    def asks_definition(self) -> bool:
        """Explicit, or "what is (a) X?" about one lower-case word that is not small talk.

        A capitalised word without an article is most likely a name ("what is Python?"), and
        "what is the X?" asks about a particular X ("what is the answer?").
        """
        if self.explicit:
            return True
        w = self.word
        return (
            re.fullmatch(r"[^\W\d_][\w'-]{0,40}", w) is not None
            and w.casefold() not in _NOT_ASKED
            and not self.written.casefold().startswith("the ")
            and (w != self.written or not w[:1].isupper())
        )


def _normalize(question: str) -> str:
    q = question.translate(_QUOTE_MAP)
    q = _DASH.sub(" - ", q)
    return " ".join(q.split())


def _strip_tail(text: str) -> str:
    text = text.strip(_END_PUNCT)
    while text and text[-1] not in _QUOTES:
        shorter = _TAIL.sub("", text).strip(_END_PUNCT)
        if shorter == text:
            break
        text = shorter
    return text


def _strip_lead(text: str) -> str:
    while True:
        shorter = _LEAD.sub("", text, count=1)
        if shorter == text or not shorter:
            return text
        text = shorter


def _clean(term: str) -> str:
    return " ".join(term.strip(_QUOTES + _END_PUNCT + " ").split())


def _antecedent(before: str) -> str | None:
    """The word that "it" refers to in what came before: quoted, named ("the word X"), or a
    clause that is only a short term ("crepuscule - what does it mean?")."""
    quoted = [a or b for a, b in _QUOTED.findall(before)]
    if quoted:
        return _clean(quoted[-1])
    named = _NAMED.findall(before)
    if named:
        # "the word ice cream", "the word crepuscule in books": up to a function word.
        taken: list[str] = []
        for w in named[-1].split()[:3]:
            if taken and w.casefold() in STOPWORDS:
                break
            taken.append(w)
        return _clean(" ".join(taken))
    before = before.strip().rstrip("-").strip()
    last = _clean(_CLAUSE_BREAK.split(before)[-1]) if before else ""
    return last if last and len(last.split()) <= 3 else None


def _match_core(core: str, before: str) -> DefinitionRequest | None:
    # Lead-ins and qualifiers are stripped first; the unstripped text is the fallback for a term
    # that is itself one ("define thank you", "well meaning").
    led = _strip_lead(core)
    variants = (_strip_tail(led), led.strip(_END_PUNCT), _strip_tail(core), core.strip(_END_PUNCT))
    for text in dict.fromkeys(v for v in variants if v):
        for explicit, patterns in ((True, _EXPLICIT), (False, _WHAT_IS)):
            for pattern in patterns:
                m = pattern.match(text)
                found = _request(m.group("w"), before, explicit) if m else None
                if found:
                    return found
    return None


def _request(raw: str, before: str, explicit: bool) -> DefinitionRequest | None:
    term = _clean(raw)
    quoted = raw.strip()[:1] in _QUOTES
    if _ANAPHOR.match(term):
        term, quoted = _antecedent(before) or "", True
    word = _clean(_ARTICLE.sub("", term)) or term
    if not term or len(term.split()) > MAX_WORDS:
        return None
    # Unquoted, a clause is not a headword: "life has no meaning", "what is the meaning".
    if not quoted and (_DEICTIC.match(term) or _CLAUSE_WORDS & set(word.casefold().split())):
        return None
    return DefinitionRequest(word, term, explicit)


def definition_request(question: str) -> DefinitionRequest | None:
    """What a definitional question asks about, in whatever words; None for other questions.

    Leading clauses are dropped one at a time until the rest has a definitional shape, so
    "hi, quick question: could you tell me what 'crepuscule' means?" gives crepuscule.
    """
    q = _normalize(question)
    if not q or len(q) > 300:
        return None
    starts = [0] + [m.end() for m in _CLAUSE_BREAK.finditer(q)]
    for start in starts[:MAX_CLAUSES]:
        found = _match_core(q[start:], q[:start])
        if found:
            return found
    return None


def is_definitional(question: str) -> str | None:
    """The headword when `question` asks for a definition, else None.

    "what is X?" counts when X is a single lower-case word (whether a dictionary has it is the
    caller's to check: the routing policy looks it up, `definition_answer` needs a passage).
    """
    found = definition_request(question)
    return found.word if found and found.asks_definition else None


def asked_words(question: str) -> list[str]:
    """Words to look up for `question`, most likely first.

    A definitional shape gives its term without, then with, its article ("What is a lambaste?"
    gives ["lambaste", "a lambaste"]); a question of at most BARE_TERM_WORDS words that has no
    shape and reads as a term, not a clause, is taken as the term itself ("a cappella" gives
    ["a cappella", "cappella"]); anything else gives [].
    """
    found = definition_request(question)
    if found:
        return list(dict.fromkeys([found.word, found.written]))
    q = _clean(_normalize(question))
    if not q or len(q) > 300 or len(q.split()) > BARE_TERM_WORDS or _CLAUSE_WORDS & set(q.casefold().split()):
        return []
    bare = _clean(_ARTICLE.sub("", q))
    return [c for c in dict.fromkeys([q, bare]) if c]


# --- answering from dictionary passages --------------------------------------------------------


class DefinitionAnswer(NamedTuple):
    """The answer text (one line per sense) and a citation for each line."""

    text: str
    citations: list[Citation]


#: The first this many senses are quoted.
MAX_SENSES = 3
_POS = {"n": "noun", "v": "verb", "adj": "adjective", "a": "adjective", "s": "adjective", "adv": "adverb",
        "r": "adverb"}
# Where a gloss ends: WordNet's examples ("...; "he loved the twilight"") and [syn: ...] lists,
# GCIDE's "; as, a bank of clouds" examples, "--Author." credits, [Obs.] and [1913 Webster] tags.
_GLOSS_END = re.compile(r';\s*"|\s+\[|;\s+as,\s|\s+--\s?[A-Z]|\s+Syn:\s')
# A GCIDE header left in a sense: \Cre*pus"cule\ (kr[-e]*p[u^]s"k[-u]l), n. [L. crepusculum ...]
_GCIDE_HEAD = re.compile(r'\\[^\\\n]{1,80}\\\s*(?:\([^)]*\)\s*)?,?\s*(?:(?:[a-z]{1,5}\.|&)\s*)*')
#: A gloss longer than this is cut at its first full stop.
LONG_GLOSS = 240


def is_dictionary_passage(passage: Passage) -> bool:
    """A dictionary sense, whatever source it came from: it carries db, headword and sense."""
    return all(key in passage.metadata for key in ("db", "headword", "sense"))


def _is_wordnet(passage: Passage) -> bool:
    db = str(passage.metadata.get("db", "")).casefold()
    description = str(passage.metadata.get("db_description", "")).casefold()
    return db in ("wn", "wordnet") or "wordnet" in db or "wordnet" in description


def _key(word: str) -> str:
    return " ".join(word.casefold().replace("_", " ").split())


def gloss_span(text: str) -> tuple[int, int]:
    """Offsets of a sense's definition in its text, without a dictionary header, examples,
    synonym lists and source tags; the whole text when nothing is left."""
    start = len(text) - len(text.lstrip())
    head = _GCIDE_HEAD.match(text, start)
    if head:
        start = _skip_brackets(text, head.end())
    m = _GLOSS_END.search(text, start)
    end = m.start() if m and m.start() > start else len(text)
    if end - start > LONG_GLOSS:
        stop = text.find(". ", start + 20, end)
        end = stop + 1 if stop > 0 else end
    while end > start and text[end - 1] in " ;:,":
        end -= 1
    return (start, end) if end > start else (0, len(text))


def _skip_brackets(text: str, i: int) -> int:
    """The position after a bracketed etymology at `i` (brackets nest) and the spaces after it."""
    if text[i : i + 1] == "[":
        depth = 0
        for j in range(i, len(text)):
            depth += {"[": 1, "]": -1}.get(text[j], 0)
            if depth == 0:
                i = j + 1
                break
    return len(text) - len(text[i:].lstrip())


def definition_answer(
    question: str, evidence: Sequence[Passage], *, max_senses: int = MAX_SENSES
) -> DefinitionAnswer | None:
    """The senses of the asked word quoted from the evidence, each cited; None when no
    dictionary passage in `evidence` is for the asked word.

    `evidence` is the numbered evidence in order (marker n = evidence[n - 1]). The senses come
    from one database: WordNet when it is there, else the first one in the evidence; a word the
    dictionary respelt ("lugubrius" -> "lugubrious") is used only when none has the word as asked.
    """
    wanted = {_key(w) for w in asked_words(question)}
    if not wanted:
        return None
    exact: list[tuple[int, Passage]] = []
    respelt: list[tuple[int, Passage]] = []
    for marker, passage in enumerate(evidence, 1):
        if not is_dictionary_passage(passage):
            continue
        meta = passage.metadata
        if _key(str(meta["headword"])) in wanted and "corrected_from" not in meta:
            exact.append((marker, passage))
        elif _key(str(meta.get("corrected_from", ""))) in wanted:
            respelt.append((marker, passage))
    pool = exact or respelt
    if not pool:
        return None
    chosen = next((p for _, p in pool if _is_wordnet(p)), pool[0][1]).metadata["db"]
    senses = [(m, p) for m, p in pool if p.metadata["db"] == chosen]
    senses = sorted(senses, key=lambda mp: (_sense_number(mp[1]), mp[0]))[:max_senses]
    lines: list[str] = []
    citations: list[Citation] = []
    for marker, passage in senses:
        start, end = gloss_span(passage.text)
        quote = passage.text[start:end]
        pos = _POS.get(str(passage.metadata.get("pos", "")), str(passage.metadata.get("pos", "")))
        label = f"{passage.metadata['headword']} ({pos})" if pos else str(passage.metadata["headword"])
        line = f"{label}: “{quote}” [{marker}]"
        lines.append(line)
        citations.append(Citation(marker=marker, passage=passage, sentence=line, inferred=False, support=1.0,
                                  supported=True, quote=quote, start=start, end=end))
    return DefinitionAnswer("\n".join(lines), citations)


def _sense_number(passage: Passage) -> int:
    try:
        return int(passage.metadata["sense"])
    except (TypeError, ValueError):
        return 0
