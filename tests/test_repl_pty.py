"""`agentkit chat` as a user meets it: the real command in a pseudo-terminal, with the bundled model
and an ingested guide, driven by keystrokes (pexpect), checked by what appears on the screen.
"""

from __future__ import annotations

import io
import os
import re
import signal
import subprocess
import sys
from pathlib import Path

import pytest

pexpect = pytest.importorskip("pexpect", reason="the pty test drives the terminal with pexpect, which is not installed")
if not hasattr(os, "openpty"):
    pytest.skip("no pseudo-terminals on this platform (os.openpty is missing)", allow_module_level=True)

GUIDE = """\
# Installing agentkit

agentkit answers from your sources. Install agentkit with pip install agentkit.
It needs Python 3.10 or newer.
"""
#: One thread: llama.cpp's threads wait on each other by spinning, and on a machine busy with
#: other work (a test run in parallel) that makes generation many times slower.
CHAT = ["-m", "agentkit.cli", "chat", "--threads", "1"]
#: Control sequences a terminal acts on; what is left is the text a user reads.
_CSI = re.compile(r"\x1b\[[0-9;?]*[A-Za-z]|\x1b[()][A-Z0-9]|\r")
#: Styling other than a plain reset (prompt_toolkit resets before drawing its prompt).
_STYLE = re.compile(r"\x1b\[(?!0?m)[0-9;]*m")


def _sigint_ignored() -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.pthread_sigmask(signal.SIG_BLOCK, {signal.SIGINT})


def screen(raw: str) -> str:
    return _CSI.sub("", raw)


@pytest.fixture()
def user_env(tmp_path: Path) -> dict[str, str]:
    """The environment of a user with an empty data dir and one ingested guide, no config file."""
    env = {k: v for k, v in os.environ.items() if k not in ("AGENTKIT_CONFIG", "AGENTKIT_MODEL")}
    env.update(AGENTKIT_DATA_DIR=str(tmp_path / "data"), TERM="xterm", NO_COLOR="1", COLUMNS="120", LINES="40",
               # No terminal answers prompt_toolkit's cursor-position queries here: don't wait for one.
               PROMPT_TOOLKIT_NO_CPR="1")
    (tmp_path / "install.md").write_text(GUIDE, encoding="utf-8")
    ingest = subprocess.run([sys.executable, "-m", "agentkit.cli", "ingest", "install.md", "--no-progress"],
                            cwd=tmp_path, env=env, capture_output=True, text=True, timeout=60)
    assert ingest.returncode == 0 and "1 document" in ingest.stdout, ingest.stderr
    return env


@pytest.mark.real_model
def test_chat_in_a_terminal_streams_cites_stops_on_ctrl_c_and_exits_cleanly(tmp_path: Path, user_env: dict[str, str]) -> None:
    child = pexpect.spawn(sys.executable, CHAT, cwd=str(tmp_path), env=user_env,
                          encoding="utf-8", timeout=45, dimensions=(40, 120),
                          # Started as some runners start it, SIGINT ignored and blocked (both
                          # survive exec; a full test run hands them on): Ctrl-C must still stop
                          # an answer.
                          preexec_fn=_sigint_ignored)
    child.logfile_read = seen = io.StringIO()
    try:
        child.expect("/help for commands")
        child.expect("you>")  # the model loaded (the banner warms it up) and the prompt is up

        # Ctrl-C at the prompt drops the half-typed line and keeps the REPL.
        child.send("half a thought")
        child.send("\x03")
        child.expect("you>")

        # A question about the guide: what agentkit is doing shows first, then the answer and the
        # numbered source block naming the document.
        child.sendline("How do I install agentkit?")
        child.expect("searching docs…")
        child.expect(r"Sources:\r\n +\[1\] Installing agentkit — file://\S*install\.md#chunk=0 \(docs\)")
        between = screen(child.before).splitlines()
        answer = [line for line in between if line.strip() and not line.startswith(("  ", "["))]
        # The answer, citing [1], above its sources (the quote keeps the guide's line break).
        assert answer and answer[0].startswith("The sources say: “Install agentkit") and "[1]" in " ".join(answer), between
        child.expect("you>")

        # Ctrl-C while the model is writing: the answer stops where it is and the prompt returns.
        child.sendline("/route parametric")
        child.expect("route forced to: parametric")
        child.expect("you>")
        child.sendline("Write a long story about a cat who learns to sail.")
        child.expect("answering from the model's own knowledge…\r\n")
        # The story has begun to stream: three words (not a terminal escape such as "0m\x1b[J0m",
        # which a looser pattern matches before generation starts; a Ctrl-C sent then reaches the
        # next prompt instead).
        child.expect(r"[A-Za-z]+ [A-Za-z]+ [A-Za-z]+")
        child.send("\x03")
        child.expect(r"\[stopped — ask again, or /help\]")
        assert screen(child.before).strip(), "nothing of the story was on screen before Ctrl-C"
        child.expect("you>")

        # The session survived: the next question is answered from the guide again.
        child.sendline("/route auto")
        child.expect("the router decides again")
        child.expect("you>")
        child.sendline("Which Python version does agentkit need?")
        child.expect(r"\[1\] Installing agentkit — file://")
        child.expect("you>")

        child.sendline("/exit")
        child.expect(pexpect.EOF)
    finally:
        child.close(force=True)
    assert child.exitstatus == 0 and child.signalstatus is None
    shown = seen.getvalue()
    assert "Traceback" not in shown
    # NO_COLOR: the route, progress and warning lines (dim, bold, yellow otherwise) come plain.
    assert "route: docs" in shown and not _STYLE.search(shown), _STYLE.findall(shown)[:5]


@pytest.mark.real_model
def test_ctrl_d_quits_with_status_0(tmp_path: Path, user_env: dict[str, str]) -> None:
    child = pexpect.spawn(sys.executable, CHAT, cwd=str(tmp_path), env=user_env,
                          encoding="utf-8", timeout=45, dimensions=(40, 120))
    try:
        child.expect("you>")
        child.sendline("/sources")
        child.expect("configured sources: parametric, docs")
        child.expect("you>")
        child.sendeof()
        child.expect(pexpect.EOF)
        shown = child.before
    finally:
        child.close(force=True)
    assert child.exitstatus == 0 and child.signalstatus is None
    assert "Traceback" not in shown
