"""How an answer reads as plain text wherever it goes: the sources block with each citation's quote.

Shared by `agentkit ask`, the chat REPL, the MCP `ask` tool and the LangChain tool, so that a
quote, an attributed citation or an answer agentkit replaced reads the same in all of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field

from agentkit.types import Answer, Citation, Passage

#: Longest quote shown in full under an answer (the whole passage is in `/sources` and the JSON).
QUOTE_LIMIT = 300
INFERRED_NOTE = "(attributed by agentkit, not cited by the model)"
EXTRACTIVE_NOTE = "the model's own answer did not hold up against its quote, so the source sentence is shown instead"
MEMORY_NOTE = "(from the model's own memory; no source was cited)"

_MARK = re.compile(r"\s*\[\d+(?:\s*[,;]\s*\d+)*\]")
_ANSWER_LABEL = re.compile(r"^\s*\**answer\**\s*:\s*", re.I | re.M)


@dataclass
class CitedSource:
    """One `[n]` under an answer: the passage it points at and the citations that rest on it."""

    marker: int
    passage: Passage
    citations: list[Citation] = field(default_factory=list)

    @property
    def inferred(self) -> bool:
        """Every citation of this source was attributed by agentkit; the model cited none."""
        return all(c.inferred for c in self.citations)

    @property
    def quoted(self) -> list[Citation]:
        """The citations with a quote, one per distinct quote, in answer order."""
        seen: set[str] = set()
        out = []
        for c in self.citations:
            if c.quote and c.quote not in seen:
                seen.add(c.quote)
                out.append(c)
        return out


def cited_sources(answer: Answer) -> list[CitedSource]:
    """The answer's citations grouped by `[n]`, in the order they first appear."""
    by_marker: dict[int, CitedSource] = {}
    for c in answer.citations:
        by_marker.setdefault(c.marker, CitedSource(c.marker, c.passage)).citations.append(c)
    return list(by_marker.values())


def shorten(text: str, limit: int = QUOTE_LIMIT) -> str:
    """`text` on one line; past `limit` characters, cut at a word boundary and ended with …"""
    flat = " ".join(text.split())
    if len(flat) <= limit:
        return flat
    cut = flat[: limit - 1]
    space = cut.rfind(" ")
    if space > limit // 2:
        cut = cut[:space]
    return cut.rstrip(" ,;:") + "…"


def quote_text(quote: str, limit: int = QUOTE_LIMIT) -> str:
    """A quote in quotation marks, shortened if very long: `“Tides are caused by …”`."""
    return f"“{shorten(quote, limit)}”"


def support_text(citation: Citation) -> str:
    """`support 0.92` when the citation was checked (`, not supported` when it failed), else ""."""
    if citation.support is None:
        return ""
    return f"support {citation.support:.2f}" + (", not supported" if citation.supported is False else "")


def source_head(source: CitedSource, *, ids: bool = False) -> str:
    """`[n] title — uri (source)`; with `ids`, the passage id as well (for clients that fetch it)."""
    p = source.passage
    where = p.uri or p.id
    if ids and p.uri:
        where = f"id: {p.id} ({p.uri})"
    elif ids:
        where = f"id: {p.id}"
    head = f"[{source.marker}] {p.title or p.id} — {where}"
    if p.source:
        head += f" ({p.source})"
    if source.inferred:
        head += " " + INFERRED_NOTE
    return head


def quote_line(citation: Citation, *, inferred_note: bool = False) -> str:
    """The citation's quote with its support: `“…” (support 0.92)`; "" when it has no quote."""
    if not citation.quote:
        return ""
    notes = [n for n in (support_text(citation), INFERRED_NOTE if inferred_note and citation.inferred else "") if n]
    return quote_text(citation.quote) + (f" ({'; '.join(notes)})" if notes else "")


def source_lines(source: CitedSource) -> list[str]:
    """The lines under a source's head: each distinct quote, or the support when nothing was quoted."""
    mixed = not source.inferred  # some citations are the model's: mark the attributed ones one by one
    lines = [quote_line(c, inferred_note=mixed) for c in source.quoted]
    if not lines:
        checked = [support_text(c) for c in source.citations if c.support is not None]
        if checked:
            lines.append(checked[0] if len(set(checked)) == 1 else ", ".join(checked))
    return lines


def kind_note(answer: Answer) -> str:
    """One line saying how the shown text was made, when it is not simply the model's answer."""
    if answer.kind == "extractive":
        return EXTRACTIVE_NOTE
    if answer.kind == "refusal":
        return "the sources do not answer this" + (": the model's answer was withheld" if answer.withheld else "")
    return ""


def sources_block(answer: Answer, *, ids: bool = False, indent: str = "  ") -> list[str]:
    """The plain-text sources block: `Sources:`, then per `[n]` its head and quoted lines."""
    sources = cited_sources(answer)
    if not sources:
        return [MEMORY_NOTE] if answer.from_memory else []
    lines = ["Sources:"]
    for s in sources:
        lines.append(indent + source_head(s, ids=ids))
        lines += [indent + "    " + line for line in source_lines(s)]
    return lines


def answer_part(streamed: str) -> str:
    """What follows the last `Answer:` label of a streamed reply (all of it when it has none)."""
    labels = list(_ANSWER_LABEL.finditer(streamed))
    return streamed[labels[-1].end() :] if labels else streamed


def same_answer(streamed: str, text: str) -> bool:
    """Whether what streamed already says `text`: the very text (an answer agentkit composed and
    streamed, which may itself hold "Answer:"), or its answer part ([n] marks and spacing aside)."""

    def norm(s: str) -> str:
        return " ".join(_MARK.sub("", s).split()).strip()

    if streamed and streamed == text:
        return True
    return bool(norm(text)) and norm(answer_part(streamed)) == norm(text)


# --- an answer on a terminal as the agent works -----------------------------------------------------


class LiveAnswer:
    """One answer on a terminal while the agent works, for `agentkit chat` and `agentkit ask`.

    Before the first token it says what is happening (the route, "searching docs…", "reading 5
    passages from docs…"); the model's working (a `Reasoning:` part) streams dim, the answer
    streams as it is written. The quote reader's `Quote: … Answer: …` reply is not shown: its
    answer (ContentEvents) streams instead, the quote as the model copies it and any checked
    short answer once the reply is complete. `finish()` says whether the answer already stands
    on screen, so that it is printed once.
    """

    def __init__(self, *, tokens: bool = True, progress: bool = True, err: bool = False) -> None:
        from agentkit.server.splitter import ReplySplitter

        #: Print the reply's tokens as they come (else only the progress lines).
        self.tokens = tokens
        self.progress = progress
        #: Progress lines go to stderr (`ask`: stdout stays the answer) or stdout (the REPL).
        self.err = err
        self._new_splitter = ReplySplitter
        self._splitter = ReplySplitter()
        self._content: list[str] = []
        self._reasoned = False  # some reasoning was shown: the answer gets a label
        self._open = False  # the cursor is not at the start of a line (stdout)
        self._quoting = False

    @property
    def label(self) -> str:
        """What goes before the answer: "Answer: " when the model's working or an earlier text
        stands above it, so that the answer is told apart."""
        return "Answer: " if self._reasoned or self._content else ""

    def show(self, event: object) -> None:
        from agentkit.types import PARAMETRIC, ContentEvent, RetrievalEvent, RouteEvent, StepEvent, TokenEvent

        if isinstance(event, TokenEvent):
            for kind, text in self._splitter.feed(event.text):
                self._piece(kind, text)
        elif isinstance(event, ContentEvent):
            self._piece("content", event.text)
        elif isinstance(event, RouteEvent):
            d = event.decision
            self._note(f"↳ {', '.join(d.targets)} ({d.confidence:.2f}): {d.reason}")
            if d.sources:
                self._note(f"  searching {', '.join(d.sources)}…")
            else:
                self._note("  answering from the model's own knowledge…")
        elif isinstance(event, RetrievalEvent):
            n = len(event.passages)
            if event.source == PARAMETRIC:
                self._note("  the model drafted an answer from its own knowledge")
            elif n:
                self._note(f"  reading {n} passage{'s' if n != 1 else ''} from {event.source}…")
            else:
                self._note(f"  nothing found in {event.source}")
        elif isinstance(event, StepEvent):
            # Another search, a tool call or a second try follows: the next reply starts afresh.
            self._flush()
            self._splitter = self._new_splitter()
            self._content.clear()
            self._step(event)

    def finish(self, answer: Answer) -> bool:
        """End what streamed; True when the answer streamed as it stands (it is not printed again)."""
        self._flush()
        self._end_line()
        return bool(self._content) and same_answer("".join(self._content), answer.text)

    # --- printing -----------------------------------------------------------------------------

    def _piece(self, kind: str, text: str) -> None:
        import click

        if kind == "reasoning_content" and self._splitter.mode == "quoted":
            if not self._quoting:
                self._quoting = True
                self._note("  quoting a source sentence…")
            return
        if not self.tokens:
            return
        if kind == "content":
            if not self._content and self._reasoned:
                self._end_line()
                click.secho("Answer: ", bold=True, nl=False)
            self._content.append(text)
            click.echo(text, nl=False)
        else:
            self._reasoned = True
            click.secho(text, dim=True, nl=False)
        self._open = not text.endswith("\n")

    def _flush(self) -> None:
        for kind, text in self._splitter.finish():
            self._piece(kind, text)

    def _end_line(self) -> None:
        import click

        if self._open:
            click.echo()
            self._open = False

    def _note(self, line: str) -> None:
        import click

        if not self.progress:
            return
        if not self.err:
            self._end_line()
        click.secho(line, dim=True, err=self.err)

    def _step(self, event: object) -> None:
        import click

        from agentkit.types import StepEvent

        assert isinstance(event, StepEvent)
        st = event.step
        self._end_line()
        if st.action == "retry":
            click.secho(f"↻ no source supports that answer; searching again for {st.query!r}", fg="yellow", err=self.err)
        elif st.action == "search":
            self._note(f"↳ searching {st.source} for {st.query!r}")
        elif st.action == "call":
            self._note(f"⚙ {st.tool}({st.arguments}) → {st.observation[:120]}")
