"""Definitional questions in any phrasing (`is_definitional`, `definition_request`) and direct
answers quoted from dictionary passages (`definition_answer`), on hand-built passages.

PHRASINGS and NOT_DEFINITIONAL are shared with the routing-policy and dictionary-source tests.
"""

from __future__ import annotations

import pytest

from agentkit.reasoning.definitions import (
    DefinitionAnswer,
    definition_answer,
    definition_request,
    gloss_span,
    is_definitional,
)
from agentkit.types import Passage

#: Definition requests in so many words; `{w}` is the word asked about.
PHRASINGS = [
    "explain the word {w}",
    "what does {w} mean in everyday language?",
    "{w} — meaning?",
    "{w}: meaning",
    "meaning of {w} please",
    "hi, quick question: could you tell me what {w} means?",
    "I keep seeing the word {w}, what does it mean?",
    "can you please explain what '{w}' means",
    "what's the meaning of the term {w} in plain English",
    "define {w} for me",
    "{w} means what?",
    "what is meant by {w}",
    "What does “{w}” mean?!",
    "Hello! I was wondering if you could tell me what «{w}» means.",
    "Sorry to bother you - what's the definition of {w}, in simple terms?",
    "How would you define {w}?",
    "{w}... what does that mean?",
    "what does the word `{w}` actually mean",
    "definition: {w}",
    "Give me the dictionary definition of {w}, thanks.",
    "Do you know what {w} means?",
    "I'd like to know the meaning of ‘{w}’.",
    "what do people mean by {w}?",
    "tell me about the word {w}",
    "DEFINE {w}!!!",
]
#: "What is X?": a definition request only when a dictionary has X.
WHAT_IS_PHRASINGS = [
    "in simple terms, what is {w}?",
    "What is a {w}?",
    "ok so what's a {w}",
    "Could you tell me what a {w} is, please?",
]
#: Not definition requests, whatever the dictionary has.
NOT_DEFINITIONAL = [
    "what does the report say about sales?",
    "what is the capital of Italy?",
    "explain how tides work",
    "Explain what a noun is in one sentence.",
    "What's up?",
    "What is the answer?",
    "What is Python?",
    "What does this error mean?",
    "what does it mean?",
    "Life has no meaning.",
    "What does crepuscule mean in French?",
    "Give me a word that rhymes with 'cat'.",
    "What is another word for happy?",
    "How does the router decide where a question goes?",
    "Aspirin inhibits the production of PGE2.",
]


@pytest.mark.parametrize("template", PHRASINGS)
def test_explicit_phrasings_name_the_word(template: str) -> None:
    for word in ("crepuscule", "ice cream"):
        question = template.format(w=word)
        assert is_definitional(question) == word, question
        found = definition_request(question)
        assert found is not None and found.explicit, question


@pytest.mark.parametrize("template", WHAT_IS_PHRASINGS)
def test_what_is_phrasings_are_definitional_but_not_explicit(template: str) -> None:
    question = template.format(w="crepuscule")
    assert is_definitional(question) == "crepuscule", question
    found = definition_request(question)
    assert found is not None and not found.explicit


@pytest.mark.parametrize("question", NOT_DEFINITIONAL)
def test_other_questions_are_not_definitional(question: str) -> None:
    assert is_definitional(question) is None


def test_a_quoted_term_is_taken_as_written() -> None:
    assert is_definitional("define 'thank you'") == "thank you"
    assert is_definitional("What does 'to be' mean?") == "to be"
    assert definition_request("What is an anemometer?") == definition_request("what's an anemometer")
    assert definition_request("What is an anemometer?").written == "an anemometer"  # type: ignore[union-attr]


# --- answers -----------------------------------------------------------------------------------

WN_CREPUSCULE = (
    'the time of day immediately following sunset; "he loved the twilight"; "they finished before the fall '
    'of night" [syn: {twilight}, {dusk}, {gloaming}, {gloam}, {nightfall}, {evenfall}, {fall}, {crepuscule}, '
    "{crepuscle}]"
)
GCIDE_CREPUSCULE = (
    '\\Cre*pus"cule\\ (kr[-e]*p[u^]s"k[-u]l), n. [L. crepusculum, fr. creper dusky, dark: cf. '
    "F. cr['e]puscule.] Twilight. --Bailey. [1913 Webster] Crepuscular"
)


def sense(db: str, word: str, n: int, text: str, pos: str = "", source: str = "dict", **meta: object) -> Passage:
    metadata = {"db": db, "headword": word, "sense": n, "doc_id": f"{db}:{word}", **meta}
    if pos:
        metadata["pos"] = pos
    return Passage(f"{db}:{word}:{n}", text, f"{word} ({db})", source, metadata=metadata)


def doc(pid: str, text: str) -> Passage:
    return Passage(pid, text, "Notes", "docs", metadata={"doc_id": pid})


def test_wordnet_sense_quoted_and_cited_by_its_position() -> None:
    evidence = [
        doc("notes#1", "Crepuscule is a word we use in the style guide."),
        sense("gcide", "crepuscule", 1, GCIDE_CREPUSCULE),
        sense("wn", "crepuscule", 1, WN_CREPUSCULE, "n"),
        sense("wn", "twilight", 1, "the time of day immediately following sunset", "n"),
    ]
    answer = definition_answer("what does crepuscule mean in everyday language?", evidence)
    assert isinstance(answer, DefinitionAnswer)
    (c,) = answer.citations
    assert c.marker == 3 and c.passage is evidence[2]
    assert c.quote == "the time of day immediately following sunset"
    assert (c.start, c.end) == (0, len(c.quote)) and c.passage.text[c.start : c.end] == c.quote
    assert (c.inferred, c.supported, c.support) == (False, True, 1.0)
    assert answer.text == c.sentence == "crepuscule (noun): “the time of day immediately following sunset” [3]"
    text, citations = answer  # a plain pair for callers that unpack it
    assert text == answer.text and citations == answer.citations


def test_without_wordnet_the_first_dictionary_is_quoted_without_its_header() -> None:
    evidence = [doc("notes#1", "Unrelated."), sense("gcide", "crepuscule", 1, GCIDE_CREPUSCULE)]
    (c,) = definition_answer("Define crepuscule", evidence).citations  # type: ignore[union-attr]
    assert c.marker == 2 and c.quote == "Twilight." and GCIDE_CREPUSCULE[c.start : c.end] == "Twilight."


def test_at_most_three_senses_in_sense_order() -> None:
    glosses = ["sloping land", "a financial institution", "a long ridge or pile", "a row of objects", "a supply"]
    evidence = [sense("wn", "bank", n, f"  {g}; \"an example\"", "n") for n, g in enumerate(glosses, 1)]
    evidence = [evidence[2], evidence[0], evidence[4], evidence[1], evidence[3]]  # shuffled
    answer = definition_answer("bank: meaning", evidence)
    assert answer is not None
    assert [(c.marker, c.quote) for c in answer.citations] == [
        (2, "sloping land"), (4, "a financial institution"), (1, "a long ridge or pile"),
    ]
    for c in answer.citations:
        assert c.passage.text[c.start : c.end] == c.quote and c.start == 2
    assert answer.text.splitlines() == [c.sentence for c in answer.citations]
    assert len(definition_answer("bank: meaning", evidence, max_senses=1).citations) == 1  # type: ignore[union-attr]


def cited(question: str, evidence: list[Passage]) -> list[tuple[int, str]]:
    answer = definition_answer(question, evidence)
    assert answer is not None, question
    return [(c.marker, c.quote) for c in answer.citations]


def test_the_asked_word_is_preferred_and_a_respelling_is_a_fallback() -> None:
    respelt = sense("wn", "lugubrious", 1, "excessively mournful", "adj", corrected_from="lugubrius")
    assert cited("what does lugubrius mean?", [respelt]) == [(1, "excessively mournful")]
    exact = sense("gcide", "lugubrius", 1, "A made-up entry.")
    assert cited("what does lugubrius mean?", [respelt, exact]) == [(2, "A made-up entry.")]
    # "What is a lambaste?" matches the headword without its article.
    hit = sense("wn", "lambaste", 1, "beat with a cane [syn: {cane}, {flog}]", "v")
    assert cited("What is a lambaste?", [hit]) == [(1, "beat with a cane")]
    # Multi-word headwords: the source keys them with underscores, the metadata may too.
    ice = sense("wn", "ice_cream", 1, "frozen dessert containing cream and sugar and flavoring", "n")
    assert cited("meaning of ice cream?", [ice]) == [(1, ice.text)]


def test_none_when_no_dictionary_passage_is_for_the_word() -> None:
    evidence = [sense("wn", "crepuscule", 1, WN_CREPUSCULE, "n")]
    assert definition_answer("what does gloaming mean?", evidence) is None
    assert definition_answer("what does the report say about sales?", evidence) is None
    assert definition_answer("define crepuscule", []) is None
    # Dictionary passages are known by their metadata, not by title or source name.
    lookalike = Passage("wn:crepuscule:1", WN_CREPUSCULE, "crepuscule (wn)", "wordnet", metadata={"doc_id": "x"})
    assert definition_answer("define crepuscule", [lookalike]) is None
    renamed = sense("wn", "crepuscule", 1, WN_CREPUSCULE, "n", source="my-glossary-server")
    assert definition_answer("define crepuscule", [renamed]) is not None


@pytest.mark.parametrize(
    ("text", "quote"),
    [
        ("beat with a cane [syn: {cane}, {flog}]", "beat with a cane"),
        ('excessively mournful; "lugubrious howling"', "excessively mournful"),
        ("Mournful; doleful; as, a whining tone and a lugubrious look.", "Mournful; doleful"),
        ("To beat severely. [Low] --Nares. Syn: cane, flog.", "To beat severely."),
        ("a word naming a thing", "a word naming a thing"),
        ("[syn: {x}]", "[syn: {x}]"),  # nothing but a list: the whole text
    ],
)
def test_gloss_span(text: str, quote: str) -> None:
    start, end = gloss_span(text)
    assert text[start:end] == quote
