"""Persisted chat conversations: a SQLite store (one row per message), read and written by
`agentkit chat --session`, the chat page and `agentkit sessions` (agentkit/cli/sessions.py).

A question is committed before its answer is generated and the answer is saved while it streams.
The same file holds `agentkit logs` (table `logs`, written by agentkit/logs.py).
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentkit.errors import InputError
from agentkit.types import Message

if TYPE_CHECKING:
    from typing_extensions import Self

    from agentkit.types import Answer

#: The store's file name under the configured data_dir.
DEFAULT_FILE = "sessions.sqlite"
#: A streaming answer is saved at its first token, then at most this often (seconds) ...
FLUSH_SECONDS = 0.5
#: ... or every this many tokens, whichever comes first.
FLUSH_TOKENS = 32

_SCHEMA = """
CREATE TABLE IF NOT EXISTS messages (
    session    TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    role       TEXT    NOT NULL,
    content    TEXT    NOT NULL,
    created_at TEXT    NOT NULL,
    updated_at TEXT    NOT NULL,
    complete   INTEGER NOT NULL DEFAULT 1,
    answer     TEXT,
    PRIMARY KEY (session, seq)
);
"""


class SessionNotFound(InputError):
    """A session name that the store does not hold."""


@dataclass
class StoredMessage:
    """One persisted chat turn; `complete` is False for an answer cut off mid-generation."""

    session: str
    seq: int
    role: str
    content: str
    created_at: str
    updated_at: str
    complete: bool = True
    #: For assistant turns: citations, route, warnings, reasoning, ... (see `answer_record`).
    answer: dict[str, Any] | None = None

    def to_dict(self) -> dict[str, Any]:
        data: dict[str, Any] = {
            "seq": self.seq,
            "role": self.role,
            "content": self.content,
            "created_at": self.created_at,
            "complete": self.complete,
        }
        if self.updated_at != self.created_at:
            data["updated_at"] = self.updated_at
        if self.answer is not None:
            data["answer"] = self.answer
        return data


@dataclass
class SessionInfo:
    """A line of `agentkit sessions list`."""

    name: str
    n_messages: int
    turns: int
    created_at: str
    last_active: str
    first_question: str = ""
    incomplete: int = 0

    def to_dict(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "n_messages": self.n_messages,
            "turns": self.turns,
            "created_at": self.created_at,
            "last_active": self.last_active,
            "first_question": self.first_question,
            "incomplete": self.incomplete,
        }


def answer_record(answer: Answer) -> dict[str, Any]:
    """What a stored assistant turn keeps of an Answer: enough to show and cite it later."""
    data = answer.to_dict()
    return {key: data[key] for key in ("citations", "route", "warnings", "reasoning", "from_memory", "usage", "timings")}


def default_path(data_dir: Path) -> Path:
    return Path(data_dir).expanduser() / DEFAULT_FILE


def _now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


def check_name(session: str) -> str:
    """`session` stripped, or an InputError saying what a usable name looks like."""
    name = session.strip() if isinstance(session, str) else ""
    if not name or len(name) > 200 or any(ord(c) < 32 for c in name):
        raise InputError(f"session name {session!r} is not usable; give 1-200 printable characters, e.g. --session work")
    return name


def open_db(path: Path, schema: str, what: str) -> sqlite3.Connection:
    """The SQLite file at `path` (sessions.sqlite holds sessions and logs) with `schema` applied:
    autocommit, WAL, usable from any thread; an unreadable file is an error naming it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=10)
        db.execute("PRAGMA journal_mode=WAL")
        # NORMAL keeps every commit across a process crash; only a power cut may lose the last.
        db.execute("PRAGMA synchronous=NORMAL")
        db.executescript(schema)
    except sqlite3.DatabaseError as exc:
        raise InputError(f"{path}: cannot open {what} ({exc}); move the file away or pass another --data-dir") from exc
    return db


_INSERT = ("INSERT INTO messages (session, seq, role, content, created_at, updated_at, complete, answer)"
           " VALUES (?, ?, ?, ?, ?, ?, ?, ?)")


class SessionStore:
    """Chat sessions in one SQLite file (WAL mode): one row per message, ordered by `seq`.

    Every write is its own committed transaction, so a process killed at any moment keeps
    everything written before it. Safe to share between threads of one process.
    """

    def __init__(self, path: str | Path) -> None:
        self.path = Path(path).expanduser()
        self._db = open_db(self.path, _SCHEMA, "the session store")
        self._lock = threading.RLock()

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        with self._lock:
            self._db.execute("BEGIN IMMEDIATE")
            try:
                yield self._db
            except BaseException:
                self._db.execute("ROLLBACK")
                raise
            self._db.execute("COMMIT")

    # --- writing ---------------------------------------------------------------------------

    def append(
        self,
        session: str,
        role: str,
        content: str,
        *,
        answer: dict[str, Any] | None = None,
        complete: bool = True,
    ) -> int:
        """Add a message at the end of `session` (created on first use); returns its `seq`."""
        name = check_name(session)
        now = _now()
        with self._write() as db:
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session = ?", (name,)).fetchone()
            db.execute(_INSERT, (name, seq, role, content, now, now, int(complete), _dumps(answer)))
        return int(seq)

    def append_turn(
        self, session: str, question: str, reply: str, *, answer: dict[str, Any] | None = None, complete: bool = True
    ) -> int:
        """A question and its answer in one transaction (the chat page's save): a failure keeps
        neither, and two writers' turns cannot interleave into question, question, answer, answer,
        which `history` would pair wrongly. Returns the answer's `seq`."""
        name = check_name(session)
        now = _now()
        with self._write() as db:
            (seq,) = db.execute("SELECT COALESCE(MAX(seq), 0) + 1 FROM messages WHERE session = ?", (name,)).fetchone()
            db.executemany(
                _INSERT,
                [(name, seq, "user", question, now, now, 1, None),
                 (name, seq + 1, "assistant", reply, now, now, int(complete), _dumps(answer))],
            )
        return int(seq) + 1

    def update(
        self,
        session: str,
        seq: int,
        content: str,
        *,
        answer: dict[str, Any] | None = None,
        complete: bool = False,
    ) -> None:
        """Rewrite message `seq` of `session`: the growing text of an answer, then its final form."""
        with self._write() as db:
            db.execute(
                "UPDATE messages SET content = ?, updated_at = ?, complete = ?, answer = COALESCE(?, answer)"
                " WHERE session = ? AND seq = ?",
                (content, _now(), int(complete), _dumps(answer), session, seq),
            )

    def answer_writer(self, session: str) -> AnswerWriter:
        """A writer that saves an assistant turn as its tokens stream (see AnswerWriter)."""
        return AnswerWriter(self, check_name(session))

    def delete(self, session: str) -> int:
        """Remove a session; returns how many messages it had. Unknown names raise SessionNotFound."""
        self._require(session)
        with self._write() as db:
            return db.execute("DELETE FROM messages WHERE session = ?", (session,)).rowcount

    def rename(self, session: str, new_name: str) -> None:
        self._require(session)
        new = check_name(new_name)
        if new in self.names():
            raise InputError(f"a session named {new!r} exists already; choose another name or delete it first")
        with self._write() as db:
            db.execute("UPDATE messages SET session = ? WHERE session = ?", (new, session))

    # --- reading ---------------------------------------------------------------------------

    def names(self) -> list[str]:
        with self._lock:
            return [r[0] for r in self._db.execute("SELECT DISTINCT session FROM messages ORDER BY session")]

    def exists(self, session: str) -> bool:
        with self._lock:
            return self._db.execute("SELECT 1 FROM messages WHERE session = ? LIMIT 1", (session,)).fetchone() is not None

    def messages(self, session: str) -> list[StoredMessage]:
        """Every message of `session` in order, incomplete answers included (empty if unknown)."""
        with self._lock:
            rows = self._db.execute(
                "SELECT session, seq, role, content, created_at, updated_at, complete, answer"
                " FROM messages WHERE session = ? ORDER BY seq",
                (session,),
            ).fetchall()
        return [
            StoredMessage(s, seq, role, content, created, updated, bool(complete), json.loads(answer) if answer else None)
            for s, seq, role, content, created, updated, complete, answer in rows
        ]

    def history(self, session: str) -> list[Message]:
        """The conversation to give the model: complete question/answer pairs only.

        A question whose answer was cut off (a crash, Ctrl-C, an error) stays in the store and in
        exports, marked incomplete, but is not fed back: the model never sees half an answer.
        """
        out: list[Message] = []
        pending: StoredMessage | None = None
        for m in self.messages(session):
            if m.role == "user":
                pending = m
            elif m.role == "assistant" and pending is not None:
                if m.complete:
                    out += [Message("user", pending.content), Message("assistant", m.content)]
                pending = None
        return out

    def list(self) -> list[SessionInfo]:
        """Every session, most recently active first."""
        with self._lock:
            rows = self._db.execute(
                """
                SELECT session, COUNT(*), SUM(role = 'user'), MIN(created_at), MAX(updated_at),
                       SUM(complete = 0),
                       (SELECT content FROM messages AS f WHERE f.session = m.session AND f.role = 'user'
                        ORDER BY f.seq LIMIT 1)
                FROM messages AS m GROUP BY session ORDER BY MAX(updated_at) DESC, session
                """
            ).fetchall()
        return [
            SessionInfo(name, int(n), int(turns or 0), created, last, first or "", int(incomplete or 0))
            for name, n, turns, created, last, incomplete, first in rows
        ]

    def info(self, session: str) -> SessionInfo:
        self._require(session)
        return next(i for i in self.list() if i.name == session)

    def export(self, session: str) -> dict[str, Any]:
        """The whole session as JSON-ready data: its summary and every message."""
        summary = self.info(session).to_dict()
        return {**summary, "messages": [m.to_dict() for m in self.messages(session)]}

    def _require(self, session: str) -> None:
        if not self.exists(session):
            names = self.names()
            known = ", ".join(names) if names else "none yet; start one with: agentkit chat --session NAME"
            raise SessionNotFound(f"no session named {session!r} in {self.path}; existing sessions: {known}")


@dataclass
class AnswerWriter:
    """Saves one assistant turn while it streams: at the first token, then every FLUSH_SECONDS
    or FLUSH_TOKENS, and finally as complete (`finish`) or cut off (`abort`)."""

    store: SessionStore
    session: str
    text: str = ""
    seq: int | None = None
    _pending: int = 0
    _flushed_at: float = field(default=0.0, repr=False)

    def add(self, token: str) -> None:
        self.text += token
        self._pending += 1
        if self.seq is None or self._pending >= FLUSH_TOKENS or time.monotonic() - self._flushed_at >= FLUSH_SECONDS:
            self._flush(complete=False)

    def finish(self, text: str, answer: dict[str, Any] | None = None) -> None:
        """The answer is whole: store its final text and record, marked complete."""
        self.text = text
        self._flush(complete=True, answer=answer)

    def abort(self, reason: str) -> None:
        """Generation stopped early: keep what streamed, marked incomplete, with the reason."""
        self._flush(complete=False, answer={"warnings": [reason]})

    def _flush(self, *, complete: bool, answer: dict[str, Any] | None = None) -> None:
        if self.seq is None:
            self.seq = self.store.append(self.session, "assistant", self.text, answer=answer, complete=complete)
        else:
            self.store.update(self.session, self.seq, self.text, answer=answer, complete=complete)
        self._pending = 0
        self._flushed_at = time.monotonic()


def _dumps(data: dict[str, Any] | None) -> str | None:
    return None if data is None else json.dumps(data, ensure_ascii=False)
