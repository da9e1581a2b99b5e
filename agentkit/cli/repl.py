"""The chat REPL behind `agentkit chat`: streamed answers, sources, slash commands, Ctrl-C handling.

With a terminal it uses prompt_toolkit (line editing, history); otherwise it reads lines from stdin.
With a SessionStore and a session name, every turn is saved as it happens and resumed next time.
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import TYPE_CHECKING

import click

from agentkit.agent import Agent
from agentkit.cli.context import show_answer
from agentkit.display import LiveAnswer
from agentkit.errors import AgentkitError
from agentkit.types import PARAMETRIC, Answer, AnswerEvent, ContentEvent, Message, TokenEvent

if TYPE_CHECKING:
    from agentkit.sessions import AnswerWriter, SessionStore

HELP = """\
Commands:
  /sources        the numbered passages behind the last answer, and the configured sources
  /route [NAME…]  show the last route; with names, force the route (a source or 'parametric');
                  '/route auto' lets the router decide again
  /why            the signals behind the last route, and the model's own answer when
                  agentkit showed a source sentence or a refusal instead
  /reset          forget the conversation so far (in a saved session: archive it, start afresh)
  /help           this text
  /exit           leave (Ctrl-D works too)
Ctrl-C stops an answer being generated and keeps the session."""

#: Exchanges of earlier conversation passed to the model with each question.
HISTORY_TURNS = 3


def _ctrl_c_interrupts() -> None:
    """Make Ctrl-C raise KeyboardInterrupt here, whatever this process inherited: a parent that
    ignores or blocks SIGINT (`nohup`, some IDE and test runners) passes that on across exec, and
    Ctrl-C would then stop nothing while the model writes (at the prompt, the line editor reads
    it as a key either way)."""
    import signal
    import threading

    if threading.current_thread() is not threading.main_thread():
        return  # only the main thread may set handlers; a REPL run elsewhere keeps what it has
    signal.signal(signal.SIGINT, signal.default_int_handler)
    if hasattr(signal, "pthread_sigmask"):
        signal.pthread_sigmask(signal.SIG_UNBLOCK, {signal.SIGINT})


class Repl:
    def __init__(
        self,
        agent: Agent,
        *,
        routes: list[str] | None = None,
        history_file: str | None = None,
        read_line: Callable[[str], str] | None = None,
        store: SessionStore | None = None,
        session: str | None = None,
    ) -> None:
        """`store` and `session` together persist the conversation (see agentkit.sessions)."""
        if (store is None) != (session is None):
            raise ValueError("pass both store= and session= to save a conversation, or neither")
        self.agent = agent
        self.forced = routes
        if store is not None and session is not None:
            from agentkit.sessions import check_name

            session = check_name(session)
        self.store = store
        self.session = session
        # Only complete question/answer pairs are fed back to the model; cut-off answers are not.
        self.history: list[Message] = store.history(session) if store is not None and session else []
        self.last: Answer | None = None
        self._read_line = read_line or self._make_reader(history_file)

    def _make_reader(self, history_file: str | None) -> Callable[[str], str]:
        if not (sys.stdin.isatty() and sys.stdout.isatty()):
            def read(prompt: str) -> str:
                line = sys.stdin.readline()
                if not line:
                    raise EOFError
                return line.rstrip("\n")

            return read
        from prompt_toolkit import PromptSession
        from prompt_toolkit.history import FileHistory, History, InMemoryHistory

        history: History = InMemoryHistory()
        if history_file or self.agent.config is not None:
            path = Path(history_file) if history_file else self.agent.config.data_dir / "chat_history"  # type: ignore[union-attr]
            try:
                path.parent.mkdir(parents=True, exist_ok=True)
                history = FileHistory(str(path))
            except OSError:
                pass  # no writable data dir: keep history for this session only
        session: PromptSession[str] = PromptSession(history=history)
        return lambda prompt: session.prompt(prompt)

    # --- the loop --------------------------------------------------------------------------

    def run(self) -> None:
        _ctrl_c_interrupts()
        self._banner()
        self._recap()
        while True:
            try:
                line = self._read_line("you> ").strip()
            except KeyboardInterrupt:
                continue  # Ctrl-C at the prompt clears the line
            except EOFError:
                click.echo()
                return
            if not line:
                continue
            if line.startswith("/"):
                if self._command(line) == "exit":
                    return
                continue
            self._answer(line)

    def _banner(self) -> None:
        names = ", ".join(self.agent.sources) or "none"
        click.secho(f"agentkit chat — model: {self.agent.llm.name}; sources: {names}. /help for commands.", dim=True)
        warm = getattr(self.agent.llm, "warm_up", None)
        if warm is not None:
            warm()  # fail now, with a clear error, rather than at the first question

    def _recap(self) -> None:
        """On resuming a saved session: how long it is, and its last exchange."""
        if self.store is None or self.session is None:
            return
        stored = self.store.messages(self.session)
        if not stored:
            click.secho(f"session {self.session!r}: new; every turn is saved to {self.store.path}", dim=True)
            return
        turns = sum(m.role == "user" for m in stored)
        click.secho(f"session {self.session!r}: resumed, {turns} turn(s) since {_local(stored[0].created_at)}", dim=True)
        last_q = max((i for i, m in enumerate(stored) if m.role == "user"), default=None)
        if last_q is None:
            return
        click.secho(f"  you> {_clip(stored[last_q].content)}", dim=True)
        reply = next((m for m in stored[last_q + 1 :] if m.role == "assistant"), None)
        if reply is None:
            click.secho("  [no answer was saved: the session ended before it began]", fg="yellow")
            return
        click.secho(f"  agentkit> {_clip(reply.content) or '(nothing yet)'}", dim=True)
        if not reply.complete:
            click.secho("  [incomplete: this answer was cut off; the model will not see it as part of the conversation]", fg="yellow")

    def _answer(self, question: str) -> None:
        writer: AnswerWriter | None = None
        if self.store is not None and self.session is not None:
            # Committed before generation starts, so a crash mid-answer still keeps the question.
            self.store.append(self.session, "user", question)
            writer = self.store.answer_writer(self.session)
        stream = self.agent.stream(question, history=self.history[-2 * HISTORY_TURNS :], route=self.forced)
        # Progress before the first token, the answer as it is written (display.LiveAnswer).
        live = LiveAnswer()
        done = composed = False
        cut_off = "the answer ended early: agentkit stopped before it was complete"
        try:
            for event in stream:
                live.show(event)  # a warning is shown once, under the answer
                if isinstance(event, ContentEvent) and writer is not None:
                    # The answer's own text (the quote reader's) replaces the model's raw reply:
                    # a turn cut off mid-quote keeps what the user saw as the answer.
                    if not composed:
                        writer.text, composed = "", True
                    writer.add(event.text)
                elif isinstance(event, TokenEvent) and writer is not None and not composed:
                    writer.add(event.text)
                elif isinstance(event, AnswerEvent):
                    if writer is not None:
                        from agentkit.sessions import answer_record

                        writer.finish(event.answer.text, answer_record(event.answer))
                    done = True
                    self._finish(event.answer, live)
        except KeyboardInterrupt:
            click.echo()
            click.secho("[stopped — ask again, or /help]", fg="yellow")
            cut_off = "stopped by the user (Ctrl-C)"
        except AgentkitError as exc:
            click.echo()
            click.secho(f"error: {exc}", fg="red")
            cut_off = f"error: {exc}"
        finally:
            stream.close()
            if writer is not None and not done:
                writer.abort(cut_off)  # keep what streamed, marked incomplete

    def _finish(self, answer: Answer, live: LiveAnswer) -> None:
        # Printed once: only when it did not stream as it stands.
        show_answer(answer, live, hint="/why shows it")
        self.last = answer
        self.history += [Message("user", answer.question), Message("assistant", answer.text)]
        from agentkit.logs import record

        record(self.agent.config, answer, "chat", session=self.session)  # into `agentkit logs`

    # --- slash commands --------------------------------------------------------------------

    def _command(self, line: str) -> str | None:
        name, *args = line.split()
        name = name.lower()
        if name in ("/exit", "/quit", "/q"):
            return "exit"
        if name == "/help":
            click.echo(HELP)
        elif name == "/reset":
            self.history.clear()
            self.last = None
            if self.store is not None and self.session is not None and self.store.exists(self.session):
                archive = stamp = f"{self.session}@{datetime.now().strftime('%Y-%m-%dT%H:%M:%S')}"
                taken = set(self.store.names())
                n = 1
                while archive in taken:
                    n += 1
                    archive = f"{stamp}-{n}"
                self.store.rename(self.session, archive)
                click.echo(f"conversation cleared; the earlier one is kept as session {archive!r}.")
            else:
                click.echo("conversation cleared.")
        elif name == "/sources":
            self._show_sources()
        elif name == "/route":
            self._route(args)
        elif name == "/why":
            self._why()
        else:
            click.secho(f"unknown command {name}; /help lists the commands", fg="yellow")
        return None

    def _show_sources(self) -> None:
        if self.last and self.last.passages:
            cited = {c.passage.id for c in self.last.citations}
            for n, p in enumerate(self.last.passages, 1):
                star = "*" if p.id in cited else " "
                click.secho(f"{star}[{n}] {p.title or p.id}  ({p.source}, score {p.score:.3f})  {p.uri}", bold=p.id in cited)
                click.echo("     " + " ".join(p.text.split())[:300])
        elif self.last:
            click.echo("the last answer used no source passages.")
        click.echo("configured sources: " + ", ".join([PARAMETRIC, *self.agent.sources]))

    def _route(self, args: list[str]) -> None:
        if not args:
            if self.forced:
                click.echo(f"route forced to: {', '.join(self.forced)}")
            if self.last and self.last.route:
                r = self.last.route
                click.echo(f"last route: {', '.join(r.targets)} (confidence {r.confidence:.2f}, {r.policy}) — {r.reason}")
            elif not self.forced:
                click.echo("no question asked yet; the router decides per question.")
            return
        if args == ["auto"]:
            self.forced = None
            click.echo("the router decides again.")
            return
        known = {PARAMETRIC, *self.agent.sources}
        unknown = [a for a in args if a not in known]
        if unknown:
            click.secho(f"unknown route {', '.join(unknown)}; choose from {', '.join(sorted(known))} or auto", fg="yellow")
            return
        self.forced = args
        click.echo(f"route forced to: {', '.join(args)}")

    def _why(self) -> None:
        last = self.last
        if last is None:
            click.echo("no question asked yet.")
            return
        if last.route:
            r = last.route
            click.echo(f"policy: {r.policy or '-'}; confidence {r.confidence:.2f}; {r.reason}")
            if last.adapters:
                click.echo("adapters: " + ", ".join(f"{name} (scale {scale:g})" for name, scale in last.adapters.items()))
            for key, value in sorted(r.signals.items()):
                click.echo(f"  {key:<28} {value:.3f}")
        click.echo(f"answer: {last.kind}")
        if last.withheld:
            click.echo(f"the model's own answer, not shown: {last.withheld}")


def _local(stamp: str) -> str:
    """A stored ISO UTC timestamp in local time, to the minute."""
    try:
        return datetime.fromisoformat(stamp).astimezone().strftime("%Y-%m-%d %H:%M")
    except ValueError:
        return stamp


def _clip(text: str, limit: int = 300) -> str:
    """`text` on one line, cut to `limit` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 1] + "…"
