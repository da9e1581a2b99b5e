"""Parse a model's reply into reasoning, answer text and citations mapped to real passages.

A `[n]` that points at no passage is removed from the text and reported, never kept.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field

from agentkit.text import overlap, terms
from agentkit.types import Citation, Passage

# "Answer:", "**Answer:**" and "**Answer**:" all count.
_ANSWER = re.compile(r"^\s*\**answer(?::\**|\**:)\s*", re.IGNORECASE | re.MULTILINE)
_REASONING = re.compile(r"^\s*\**reasoning(?::\**|\**:)\s*", re.IGNORECASE)
_MARK = re.compile(r"\s?\[(\d+(?:\s*[,;]\s*\d+)*)\]")
# A sentence keeps the marks that follow its full stop: "Tides follow the Moon. [1]".
# A full stop inside a token ("0.1.0", "e.g.x") does not end a sentence.
_SENTENCE = re.compile(r"(?:[^.!?\n]|[.!?](?=[^\s.!?\[]))+(?:[.!?]+(?:\s*\[\d+(?:\s*[,;]\s*\d+)*\])*|$)")
REFUSAL = "I could not find this in the sources."

#: A sentence with no mark is attributed to a passage covering at least this share of its terms.
INFER_THRESHOLD = 0.6


@dataclass
class ParsedReply:
    reasoning: str
    text: str
    citations: list[Citation] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


_ECHO = re.compile(r"^\s*\**question\**\s*:[^\n]*\n", re.IGNORECASE)


def split_reasoning(reply: str) -> tuple[str, str]:
    """(reasoning, answer). Without an "Answer:" line the whole reply is the answer; a
    "Question: …" line that small models echo back first is dropped."""
    reply = _ECHO.sub("", reply, count=1)
    marks = list(_ANSWER.finditer(reply))
    if not marks:
        return "", _REASONING.sub("", reply.strip()).strip()
    last = marks[-1]
    reasoning = _REASONING.sub("", reply[: last.start()].strip()).strip()
    return reasoning, reply[last.end() :].strip()


def parse_reply(reply: str, evidence: Sequence[Passage], infer: bool = True) -> ParsedReply:
    reasoning, text = split_reasoning(reply)
    parsed = ParsedReply(reasoning=reasoning, text=text)
    dropped: list[int] = []

    def resolve(match: re.Match[str]) -> str:
        numbers = [int(n) for n in re.split(r"\s*[,;]\s*", match.group(1))]
        good = [n for n in numbers if 1 <= n <= len(evidence)]
        dropped.extend(n for n in numbers if n not in good)
        if not good:
            return ""
        return " " + "".join(f"[{n}]" for n in good)

    parsed.text = _MARK.sub(resolve, text).strip()
    if dropped:
        parsed.warnings.append(
            f"the answer cited {', '.join(f'[{n}]' for n in sorted(set(dropped)))} but only "
            f"{len(evidence)} source(s) were given; those citations were dropped"
        )
    seen: set[tuple[int, str]] = set()
    for sentence in _SENTENCE.findall(parsed.text):
        for m in _MARK.finditer(sentence):
            plain = _MARK.sub("", sentence).strip()
            for n in re.findall(r"\d+", m.group(1)):
                if (int(n), plain) not in seen:  # "[1][1]" or "[1, 1]" is one citation
                    seen.add((int(n), plain))
                    parsed.citations.append(Citation(int(n), evidence[int(n) - 1], plain))
    if infer and not parsed.citations and evidence and REFUSAL.lower() not in parsed.text.lower():
        _infer(parsed, evidence)
    return parsed


def claims(sentence: str) -> list[str]:
    """The sentence and its substantial clauses: small models tack unsupported asides onto a
    supported statement ("X does Y, which is a form of Z"), and the statement still deserves its source."""
    clauses = [c for c in re.split(r"[,;:]|\s(?:which|while|because|but|and)\s", sentence) if len(terms(c)) >= 3]
    return [sentence, *clauses]


def _infer(parsed: ParsedReply, evidence: Sequence[Passage]) -> None:
    """Attribute unmarked sentences to the passage that covers most of their words. These
    citations are agentkit's, not the model's: they are marked `inferred` and never written into
    the answer's text as `[n]`, so a reader can tell them apart."""
    for sentence in _SENTENCE.findall(parsed.text):
        best, best_n = 0.0, 0
        for n, p in enumerate(evidence, 1):
            score = max(overlap(part, p.text) for part in claims(sentence))
            if score > best:
                best, best_n = score, n
        if best >= INFER_THRESHOLD:
            parsed.citations.append(Citation(best_n, evidence[best_n - 1], sentence.strip(), inferred=True))
