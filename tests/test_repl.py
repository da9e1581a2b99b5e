"""The REPL's behaviour around interrupts and history, driven directly with scripted input."""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import pytest

from agentkit import Agent, MemorySource, Passage
from agentkit.llm.base import Delta
from agentkit.reasoning.citations import REFUSAL
from agentkit.cli.repl import Repl
from agentkit.testing import FakeLLM
from agentkit.types import Answer, AnswerEvent, Citation, ContentEvent, Event, TokenEvent


class InterruptedOnce(FakeLLM):
    """Streams two tokens, then behaves as if the user pressed Ctrl-C (first call only)."""

    interrupted = False

    def stream(self, messages, options=None) -> Iterator[Delta]:  # type: ignore[override]
        if not self.interrupted:
            self.interrupted = True
            yield Delta("Reasoning: ")
            yield Delta("thinking")
            raise KeyboardInterrupt
        yield from super().stream(messages, options)


def script(lines: list[str]):
    it = iter(lines)

    def read(prompt: str) -> str:
        try:
            line = next(it)
        except StopIteration:
            raise EOFError from None
        if line == "^C":
            raise KeyboardInterrupt
        return line

    return read


def source() -> MemorySource:
    s = MemorySource("docs", "agentkit docs")
    s.add([Passage("install#0", "Install agentkit with pip.", "Install")])
    return s


def test_ctrl_c_stops_generation_and_keeps_the_session(capsys: pytest.CaptureFixture[str]) -> None:
    repl = Repl(Agent(InterruptedOnce(), [source()]), read_line=script(["how to install agentkit", "^C", "how to install agentkit"]))
    repl.run()
    out = capsys.readouterr().out
    assert "[stopped" in out
    assert repl.last is not None and repl.last.cited_ids == ["install#0"]
    # the interrupted question left no trace in the conversation
    assert [m.role for m in repl.history] == ["user", "assistant"]


def test_history_is_passed_and_reset(capsys: pytest.CaptureFixture[str]) -> None:
    llm = FakeLLM()
    repl = Repl(Agent(llm, [source()]), read_line=script(["how to install agentkit", "and then?", "/reset", "hello"]))
    repl.run()
    second = [m.content for m in llm.calls[1][0]]
    assert "how to install agentkit" in second
    third = [m.content for m in llm.calls[2][0]]
    assert "how to install agentkit" not in third


def test_why_names_the_adapter_the_route_selected(capsys: pytest.CaptureFixture[str]) -> None:
    from agentkit.config import AdapterSpec

    llm = FakeLLM()
    llm.add_adapter("docs-style", "docs.gguf")
    agent = Agent(llm, [source()], adapters={"docs-style": AdapterSpec(path="docs.gguf", sources=["docs"], scale=0.5)})
    repl = Repl(agent, read_line=script(["/route docs", "how to install agentkit", "/why"]))
    repl.run()
    assert "adapters: docs-style (scale 0.5)" in capsys.readouterr().out
    assert llm.calls[-1][1].adapters == {"docs-style": 0.5}


# --- what is printed under an answer ------------------------------------------------------------

GUIDE = Passage("guide#0", "agentkit answers from your sources. Install it with pip. It needs Python 3.10.",
                "Guide", source="docs", uri="doc://guide")


def cite(quote: str, marker: int = 1, passage: Passage = GUIDE, **kwargs: Any) -> Citation:
    start = passage.text.index(quote)
    return Citation(marker, passage, quote, quote=quote, start=start, end=start + len(quote), **kwargs)


class Scripted:
    """Stands in for an Agent: every question streams `reply` token by token, then `content` (the
    text agentkit composes, as the quote reader streams it) word by word, then ends with `answer`."""

    config = None

    def __init__(self, reply: str, answer: Answer, content: str = "") -> None:
        self.llm = FakeLLM()
        self.sources = {"docs": source()}
        self.reply, self.answer, self.content = reply, answer, content

    def stream(self, question: str, history: Any = (), route: Any = None) -> Iterator[Event]:
        for piece in re.findall(r"\S+\s*|\s+", self.reply):
            yield TokenEvent(piece)
        for piece in re.findall(r"\S+\s*|\s+", self.content):
            yield ContentEvent(piece)
        yield AnswerEvent(self.answer)


def lines_of(capsys: pytest.CaptureFixture[str]) -> list[str]:
    return capsys.readouterr().out.splitlines()


def test_a_streamed_answer_is_not_printed_twice_and_its_source_is_quoted(capsys: pytest.CaptureFixture[str]) -> None:
    repl = Repl(Agent(FakeLLM(), [source()]), read_line=script(["how to install agentkit"]))
    repl.run()
    out = lines_of(capsys)
    assert repl.last is not None and repl.last.kind == "model"
    # The raw reply streamed; the checked answer (short answer with its quote) is printed once.
    assert sum(repl.last.text in line for line in out) == 1
    heads = [line for line in out if line.strip().startswith("[1] ")]
    assert heads == ["  [1] Install — install#0 (docs)"]
    quote = out[out.index(heads[0]) + 1].strip()
    assert quote.startswith("“Install agentkit with pip.”") and "support" in quote


def test_an_answer_that_did_not_hold_up_is_shown_as_the_source_sentence(capsys: pytest.CaptureFixture[str]) -> None:
    answer = Answer("how to install?", "The sources say: “Install it with pip.” [1]", kind="extractive",
                    citations=[cite("Install it with pip.", support=1.0, supported=True)], withheld="bananas",
                    warnings=["the model's answer 'bananas' is not supported by its quote (support 0.00)"])
    agent = Scripted('Quote: [1] "Install it with pip."\nAnswer: bananas', answer, content=answer.text)
    Repl(agent, read_line=script(["how to install?", "/why"])).run()  # type: ignore[arg-type]
    out = lines_of(capsys)
    note = next(i for i, line in enumerate(out) if "did not hold up" in line)
    # The answer streamed, is printed once, and the note comes under it.
    assert out[note - 1] == "The sources say: “Install it with pip.” [1]"
    assert sum(answer.text in line for line in out) == 1
    assert not any("bananas" in line for line in out[: note + 1])  # the unchecked answer never showed
    assert "  [1] Guide — doc://guide (docs)" in out and "      “Install it with pip.” (support 1.00)" in out
    assert "the model's own answer, not shown: bananas" in out  # from /why
    assert "answer: extractive" in out


def test_a_refusal_is_printed_with_the_reasons(capsys: pytest.CaptureFixture[str]) -> None:
    answer = Answer("who won?", REFUSAL, kind="refusal", warnings=["no source sentence matches the question"])
    Repl(Scripted("Quote: none", answer), read_line=script(["who won?"])).run()  # type: ignore[arg-type]
    out = lines_of(capsys)
    assert REFUSAL in out and "why: no source sentence matches the question" in out
    assert "Sources:" not in out


def test_an_answer_agentkit_changed_is_printed_again_but_not_one_that_only_gained_its_mark(
    capsys: pytest.CaptureFixture[str],
) -> None:
    same = Answer("q", "Install it with pip. [1]", citations=[cite("Install it with pip.")])
    Repl(Scripted("Reasoning: [1] says so.\nAnswer: Install it with pip.", same), read_line=script(["q"])).run()  # type: ignore[arg-type]
    out = lines_of(capsys)
    assert [line for line in out if "Install it with pip." in line and "“" not in line] == ["Answer: Install it with pip."]
    changed = Answer("q", "It needs Python 3.10. [1]", citations=[cite("It needs Python 3.10.")])
    Repl(Scripted("Answer: something else", changed), read_line=script(["q"])).run()  # type: ignore[arg-type]
    out = lines_of(capsys)
    assert out.index("Answer: It needs Python 3.10. [1]") == out.index("something else") + 1


def test_sources_list_each_mark_once_label_attributed_ones_and_shorten_long_quotes(
    capsys: pytest.CaptureFixture[str],
) -> None:
    from agentkit.cli.context import show_footer

    long_text = "Tides rise and fall twice a day " * 30
    tides = Passage("tides#0", long_text + "and that is all.", "Tides", source="docs", uri="doc://tides")
    answer = Answer("q", "Use pip. Tides rise.", citations=[
        cite("Install it with pip.", support=0.9, supported=True),
        cite("It needs Python 3.10.", support=0.5, supported=False),
        cite(long_text.strip(), marker=2, passage=tides, inferred=True),
    ])
    show_footer(answer)
    out = lines_of(capsys)
    assert [line for line in out if "[1]" in line] == ["  [1] Guide — doc://guide (docs)"]
    assert "      “Install it with pip.” (support 0.90)" in out
    assert "      “It needs Python 3.10.” (support 0.50, not supported)" in out
    assert "  [2] Tides — doc://tides (docs) (attributed by agentkit, not cited by the model)" in out
    [shortened] = [line.strip() for line in out if line.strip().startswith("“Tides")]
    assert shortened.endswith("…”") and len(shortened) <= 302 and shortened[1:-2] in long_text


# --- progress, one answer, a cut answer (issue 13) -------------------------------------------------


def test_progress_comes_before_the_answer_and_the_quote_reader_reply_is_not_echoed(capsys: pytest.CaptureFixture[str]) -> None:
    repl = Repl(Agent(FakeLLM(), [source()]), read_line=script(["how to install agentkit"]))
    repl.run()
    out = lines_of(capsys)
    assert repl.last is not None and repl.last.kind == "model"
    progress = ["  searching docs…", "  reading 1 passage from docs…", "  quoting a source sentence…"]
    at = [out.index(line) for line in progress]
    assert at == sorted(at) and out[at[0] - 1].startswith("↳ docs (")
    answer = out.index(repl.last.text)  # printed once, on a line of its own, after the progress
    assert answer > at[-1] and sum(repl.last.text in line for line in out) == 1
    assert not any(line.startswith(("Quote:", "Answer:")) for line in out)  # the raw reply stays off screen
    assert out[answer + 1] == "Sources:" and out[answer + 3].strip().startswith("“Install agentkit with pip.”")


def test_a_chain_of_thought_answer_streams_after_its_reasoning_and_is_printed_once(capsys: pytest.CaptureFixture[str]) -> None:
    from agentkit.config import AgentSettings

    settings = AgentSettings(reader="cot", focus_embedder="none")
    repl = Repl(Agent(FakeLLM(), [source()], settings=settings), read_line=script(["how to install agentkit"]))
    repl.run()
    out = lines_of(capsys)
    assert "Reasoning: source [1] answers this." not in out and "source [1] answers this." in out
    assert [line for line in out if "Install agentkit with pip." in line and "“" not in line] == [
        "Answer: Install agentkit with pip. [1]"]


def test_an_answer_cut_at_max_tokens_warns_and_says_how_to_raise_the_limit(capsys: pytest.CaptureFixture[str]) -> None:
    from agentkit.config import AgentSettings

    settings = AgentSettings(reader="cot", focus_embedder="none", max_tokens=3, refuse_unsupported=False)
    repl = Repl(Agent(FakeLLM(), [source()], settings=settings), read_line=script(["how to install agentkit"]))
    repl.run()
    assert repl.last is not None and repl.last.finish_reason == "length"
    assert ("warning: the answer was cut off at agent.max_tokens (3 tokens); raise it in the config "
            "(agent: {max_tokens: 6}) to let it finish") in lines_of(capsys)
