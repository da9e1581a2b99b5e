"""Persisted chat sessions: the SQLite store, `agentkit sessions`, resuming through the REPL, and
a chat process killed with SIGKILL mid-answer that loses nothing already said."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
from click.testing import CliRunner, Result

from agentkit import Agent, MemorySource, Passage
from agentkit.cli import cli
from agentkit.errors import InputError
from agentkit.llm.base import Delta
from agentkit.cli.repl import Repl
from agentkit.sessions import SessionNotFound, SessionStore
from agentkit.testing import FakeLLM


class InterruptedOnce(FakeLLM):
    """Streams two tokens, then behaves as if the user pressed Ctrl-C."""

    def stream(self, messages, options=None) -> Iterator[Delta]:  # type: ignore[override]
        yield Delta("Reasoning: ")
        yield Delta("thinking")
        raise KeyboardInterrupt


def script(lines: list[str]) -> Callable[[str], str]:
    """A read_line that returns `lines`, then ends the session (EOF)."""
    it = iter(lines)

    def read(prompt: str) -> str:
        try:
            return next(it)
        except StopIteration:
            raise EOFError from None

    return read


def source() -> MemorySource:
    s = MemorySource("docs", "agentkit docs")
    s.add([Passage("install#0", "Install agentkit with pip.", "Install", uri="file:///install.md")])
    return s


@pytest.fixture()
def store(tmp_path: Path) -> Iterator[SessionStore]:
    with SessionStore(tmp_path / "sessions.sqlite") as s:
        yield s


# --- the store ------------------------------------------------------------------------------


def test_round_trip_list_and_export(store: SessionStore) -> None:
    store.append("work", "user", "how to install agentkit")
    w = store.answer_writer("work")
    for token in ["Install ", "with ", "pip. "]:
        w.add(token)
    w.finish("Install with pip. [1]", {"citations": [{"marker": 1, "passage_id": "install#0"}], "route": None, "warnings": []})
    store.append("other", "user", "hello")

    msgs = store.messages("work")
    assert [(m.seq, m.role, m.complete) for m in msgs] == [(1, "user", True), (2, "assistant", True)]
    assert msgs[1].content == "Install with pip. [1]" and msgs[1].answer["citations"][0]["passage_id"] == "install#0"
    assert [m.to_dict() for m in store.history("work")] == [
        {"role": "user", "content": "how to install agentkit"},
        {"role": "assistant", "content": "Install with pip. [1]"},
    ]

    infos = {i.name: i for i in store.list()}
    assert set(infos) == {"work", "other"}
    assert infos["work"].turns == 1 and infos["work"].n_messages == 2
    assert infos["work"].first_question == "how to install agentkit"
    assert store.list()[0].name == "other"  # most recently active first

    data = json.loads(json.dumps(store.export("work")))
    assert data["name"] == "work" and data["n_messages"] == 2 and data["turns"] == 1
    assert [m["role"] for m in data["messages"]] == ["user", "assistant"]
    assert data["messages"][1]["answer"]["citations"][0]["passage_id"] == "install#0"

    assert store.delete("other") == 1 and store.names() == ["work"]


def test_unknown_session_names_the_existing_ones(store: SessionStore) -> None:
    store.append("work", "user", "hi")
    with pytest.raises(SessionNotFound, match=r"no session named 'nope'.*existing sessions: work"):
        store.export("nope")
    with pytest.raises(InputError, match="session name"):
        store.append("  ", "user", "hi")


def test_store_is_wal_and_reopens(tmp_path: Path) -> None:
    path = tmp_path / "s.sqlite"
    with SessionStore(path) as s:
        assert s._db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
        s.append("a", "user", "q")
    with SessionStore(path) as s:
        assert [m.content for m in s.messages("a")] == ["q"]


def test_a_cut_off_answer_is_kept_but_not_fed_back(store: SessionStore) -> None:
    store.append("s", "user", "first")
    store.append("s", "assistant", "one")
    store.append("s", "user", "second")
    w = store.answer_writer("s")
    w.add("half an ans")
    w.abort("stopped by the user (Ctrl-C)")
    store.append("s", "user", "third")  # crashed before any token: no assistant row at all
    msgs = store.messages("s")
    assert [(m.role, m.complete) for m in msgs] == [("user", True), ("assistant", True), ("user", True), ("assistant", False), ("user", True)]
    assert msgs[3].content == "half an ans" and msgs[3].answer == {"warnings": ["stopped by the user (Ctrl-C)"]}
    assert [m.content for m in store.history("s")] == ["first", "one"]
    assert store.list()[0].incomplete == 1


# --- the REPL -------------------------------------------------------------------------------


def test_repl_saves_each_turn_and_resumes(store: SessionStore, capsys: pytest.CaptureFixture[str]) -> None:
    Repl(Agent(FakeLLM(), [source()]), read_line=script(["how to install agentkit"]), store=store, session="work").run()
    assert "session 'work': new" in capsys.readouterr().out
    saved = store.messages("work")
    assert [m.role for m in saved] == ["user", "assistant"] and all(m.complete for m in saved)
    assert saved[1].answer["citations"][0]["passage_id"] == "install#0"
    assert saved[1].answer["route"]["targets"] == ["docs"]

    llm = FakeLLM()
    repl = Repl(Agent(llm, [source()]), read_line=script(["and then?"]), store=store, session="work")
    repl.run()
    out = capsys.readouterr().out
    assert "resumed, 1 turn(s)" in out and "you> how to install agentkit" in out and "[1]" in out
    # the stored conversation is what the model sees with the new question
    assert "how to install agentkit" in [m.content for m in llm.calls[0][0]]
    assert [m.role for m in store.messages("work")] == ["user", "assistant"] * 2


def test_ctrl_c_keeps_the_partial_answer_marked_incomplete(store: SessionStore, capsys: pytest.CaptureFixture[str]) -> None:
    repl = Repl(Agent(InterruptedOnce(), [source()]), read_line=script(["how to install agentkit"]), store=store, session="s")
    repl.run()
    q, a = store.messages("s")
    assert q.content == "how to install agentkit" and q.complete
    assert a.content == "Reasoning: thinking" and not a.complete
    assert a.answer == {"warnings": ["stopped by the user (Ctrl-C)"]}
    assert repl.history == [] and store.history("s") == []


def test_reset_archives_the_session_and_starts_afresh(store: SessionStore, capsys: pytest.CaptureFixture[str]) -> None:
    llm = FakeLLM()
    Repl(Agent(llm, [source()]), read_line=script(["how to install agentkit", "/reset", "hello"]), store=store, session="s").run()
    assert "kept as session 's@" in capsys.readouterr().out
    archived = [n for n in store.names() if n.startswith("s@")]
    assert len(archived) == 1 and store.messages(archived[0])[0].content == "how to install agentkit"
    assert store.messages("s")[0].content == "hello"
    assert "how to install agentkit" not in [m.content for m in llm.calls[1][0]]


def test_without_a_session_nothing_is_stored(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="both store= and session="):
        Repl(Agent(FakeLLM(), [source()]), read_line=script([]), store=SessionStore(tmp_path / "x.sqlite"))


# --- the commands ---------------------------------------------------------------------------


@pytest.fixture()
def fake_config(tmp_path: Path) -> Path:
    f = tmp_path / "agentkit.yaml"
    f.write_text(f"data_dir: {tmp_path / 'data'}\nllm: {{backend: fake}}\nsources:\n  notes: {{type: memory, description: notes}}\n")
    return f


def run(*args: str, input: str | None = None) -> Result:
    return CliRunner().invoke(cli, list(args), input=input, catch_exceptions=False)


def test_chat_session_list_export_delete(fake_config: Path, tmp_path: Path) -> None:
    c = ("--config", str(fake_config))
    assert "no saved sessions" in run(*c, "sessions", "list").output
    out = run(*c, "chat", "--session", "demo", input="hello\nwhat is agentkit?\n").output
    assert "session 'demo': new" in out
    out = run(*c, "chat", "--session", "demo", input="/exit\n").output
    assert "resumed, 2 turn(s)" in out and "you> what is agentkit?" in out

    listing = run(*c, "sessions", "list").output
    assert "demo" in listing and "hello" in listing
    rows = json.loads(run(*c, "sessions", "list", "--json").output)
    assert rows[0]["name"] == "demo" and rows[0]["turns"] == 2 and rows[0]["first_question"] == "hello"

    exported = json.loads(run(*c, "sessions", "export", "demo").output)
    assert [m["content"] for m in exported["messages"] if m["role"] == "user"] == ["hello", "what is agentkit?"]
    assert exported["messages"][1]["answer"]["route"]["targets"] == ["parametric"]
    target = tmp_path / "demo.json"
    assert run(*c, "sessions", "export", "demo", "-o", str(target)).exit_code == 0
    assert json.loads(target.read_text()) == exported

    bad = run(*c, "sessions", "export", "nope")
    assert bad.exit_code == 2 and "no session named 'nope'" in bad.output and "existing sessions: demo" in bad.output
    assert run(*c, "sessions", "delete", "demo", "nope").exit_code == 2  # checked before anything is deleted
    assert "deleted session 'demo' (4 messages)" in run(*c, "sessions", "delete", "demo").output
    assert "no saved sessions" in run(*c, "sessions", "list").output


def test_chat_without_session_stores_nothing(fake_config: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AGENTKIT_LOGS", "off")
    run("--config", str(fake_config), "chat", input="hello\n")
    assert not (tmp_path / "data" / "sessions.sqlite").exists()
    # With `agentkit logs` on, the answer is logged in the same database, and still no session is saved.
    monkeypatch.delenv("AGENTKIT_LOGS")
    run("--config", str(fake_config), "chat", input="hello\n")
    assert json.loads(run("--config", str(fake_config), "sessions", "list", "--json").output) == []
    assert [e["question"] for e in json.loads(run("--config", str(fake_config), "logs", "--json").output)] == ["hello"]


# --- a real crash ---------------------------------------------------------------------------

CHAT_PROCESS = """
import sys, time
from agentkit import Agent, MemorySource, Passage
from agentkit.llm.base import Delta
from agentkit.cli.repl import Repl
from agentkit.sessions import SessionStore
from agentkit.testing import FakeLLM

class SlowLLM(FakeLLM):
    '''The first answer comes at once; the second streams one word every 50 ms, forever.'''

    def stream(self, messages, options=None):
        if len(self.calls) == 0:
            yield from super().stream(messages, options)
            return
        self.calls.append((list(messages), options))
        n = 0
        while True:
            yield Delta(f"word{n} ")
            n += 1
            time.sleep(0.05)

docs = MemorySource("docs", "agentkit docs")
docs.add([Passage("install#0", "Install agentkit with pip.", "Install")])
store = SessionStore(sys.argv[1])
Repl(Agent(SlowLLM(), [docs]), store=store, session="crash").run()
"""


def test_sigkill_mid_answer_keeps_the_question_and_the_partial_answer(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    db = tmp_path / "sessions.sqlite"
    program = tmp_path / "chat.py"
    program.write_text(textwrap.dedent(CHAT_PROCESS))
    proc = subprocess.Popen(
        [sys.executable, str(program), str(db)],
        stdin=subprocess.PIPE, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "AGENTKIT_FORBID_REAL_MODELS": "1"},
    )
    try:
        assert proc.stdin is not None
        proc.stdin.write("how to install agentkit\nand then what?\n")
        proc.stdin.flush()
        # Wait until the second answer has been saved at least twice (first token, then a flush).
        deadline = time.monotonic() + 60
        partial = ""
        while time.monotonic() < deadline:
            if db.exists():
                with SessionStore(db) as s:
                    msgs = s.messages("crash")
                if len(msgs) == 4 and "word3 " in msgs[3].content:
                    partial = msgs[3].content
                    break
            assert proc.poll() is None, proc.stderr.read() if proc.stderr else ""
            time.sleep(0.05)
        assert partial, "the streaming answer was never saved"
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=10)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == -signal.SIGKILL

    with SessionStore(db) as s:
        msgs = s.messages("crash")
        assert [(m.role, m.complete) for m in msgs] == [("user", True), ("assistant", True), ("user", True), ("assistant", False)]
        assert msgs[2].content == "and then what?"
        saved = msgs[3].content
        assert saved.startswith("word0 word1 word2 word3 ") and len(saved) >= len(partial)

        # Resuming shows the cut-off answer as such and does not feed it to the model.
        llm = FakeLLM()
        Repl(Agent(llm, [source()]), read_line=script(["one more"]), store=s, session="crash").run()
        out = capsys.readouterr().out
        assert "resumed, 2 turn(s)" in out and "[incomplete" in out and "you> and then what?" in out
        seen = [m.content for m in llm.calls[0][0]]
        assert "how to install agentkit" in seen
        assert not any("word0" in c or "and then what?" in c for c in seen)
        assert [m.role for m in s.messages("crash")][-2:] == ["user", "assistant"]


class QuoteThenCtrlC(FakeLLM):
    """Copies a quote of the source under the reader's grammar, then the user presses Ctrl-C."""

    def stream(self, messages, options=None) -> Iterator[Delta]:  # type: ignore[override]
        assert options is not None and options.grammar  # the quote reader's forced reply
        for piece in ["Quote: ", "[1] ", '"Install ', "agentkit ", "with "]:
            yield Delta(piece)
        raise KeyboardInterrupt


def test_ctrl_c_mid_quote_keeps_the_answer_the_user_saw_not_the_raw_reply(
    store: SessionStore, capsys: pytest.CaptureFixture[str]
) -> None:
    repl = Repl(Agent(QuoteThenCtrlC(), [source()]), read_line=script(["how to install agentkit"]),
                store=store, session="q")
    repl.run()
    _, a = store.messages("q")
    assert a.content == "The sources say: “Install agentkit with" and not a.complete  # not 'Quote: [1] "Install …'
    assert "The sources say: “Install agentkit with" in capsys.readouterr().out
