"""The REPL's behaviour around interrupts and history, driven directly with scripted input."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from agentkit import Agent, MemorySource, Passage
from agentkit.llm.base import Delta
from agentkit.repl import Repl
from agentkit.testing import FakeLLM


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
