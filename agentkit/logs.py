"""A log of every answer given by `agentkit ask`, `agentkit chat` and `agentkit serve`, which
`agentkit logs` shows (agentkit/cli/logs.py).

Rows live in the `logs` table of the sessions database (DATA_DIR/sessions.sqlite); `record` is
the one place that writes them. `agentkit logs off` (a DATA_DIR/logs-off file) or
AGENTKIT_LOGS=off turns logging off.
"""

from __future__ import annotations

import json
import logging
import os
import sqlite3
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agentkit.errors import InputError

if TYPE_CHECKING:
    from typing_extensions import Self

    from agentkit.config import Config
    from agentkit.types import Answer

log = logging.getLogger("agentkit.logs")

#: Its presence under data_dir turns logging off (what `agentkit logs off` writes).
OFF_FILE = "logs-off"
#: "0", "off", "false" or "no" turn logging off for one process (a test, a private question).
ENV = "AGENTKIT_LOGS"

_SCHEMA = """
CREATE TABLE IF NOT EXISTS logs (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    created_at TEXT NOT NULL,
    via        TEXT NOT NULL,
    session    TEXT,
    model      TEXT NOT NULL,
    question   TEXT NOT NULL,
    kind       TEXT NOT NULL,
    answer     TEXT NOT NULL,
    route      TEXT,
    citations  TEXT NOT NULL,
    timings    TEXT NOT NULL,
    usage      TEXT NOT NULL,
    warnings   TEXT NOT NULL
);
CREATE INDEX IF NOT EXISTS logs_created ON logs (created_at);
"""
_JSON_COLUMNS = ("route", "citations", "timings", "usage", "warnings")


@dataclass
class LogEntry:
    id: int
    created_at: str
    via: str
    session: str | None
    model: str
    question: str
    kind: str
    answer: str
    route: dict[str, Any] | None
    citations: list[dict[str, Any]]
    timings: dict[str, float]
    usage: dict[str, int]
    warnings: list[str]

    def to_dict(self) -> dict[str, Any]:
        return dict(self.__dict__)


def logs_path(data_dir: Path) -> Path:
    from agentkit.sessions import default_path

    return default_path(data_dir)


def enabled(data_dir: Path) -> bool:
    if os.environ.get(ENV, "").strip().lower() in ("0", "off", "false", "no"):
        return False
    return not (Path(data_dir).expanduser() / OFF_FILE).exists()


def model_label(cfg: Config) -> str:
    """The model that answered, as a log row names it."""
    if cfg.llm_backend == "llama_cpp":
        return str(cfg.llm.get("model_path") or "bundled SmolLM2-135M-Instruct")
    if cfg.llm_backend == "openai_compat":
        return f"{cfg.llm.get('model') or 'openai_compat'} at {cfg.llm.get('base_url', '')}"
    return str(cfg.llm.get("model_path") or cfg.llm_backend)


class LogStore:
    """The `logs` table; each write is its own transaction (WAL, shared with the session store)."""

    def __init__(self, path: str | Path) -> None:
        from agentkit.sessions import open_db

        self.path = Path(path).expanduser()
        self._db = open_db(self.path, _SCHEMA, "the log")

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def add(self, answer: Answer, *, via: str, model: str, session: str | None = None) -> int:
        data = answer.to_dict()
        cur = self._db.execute(
            "INSERT INTO logs (created_at, via, session, model, question, kind, answer, route, citations, timings, usage, warnings)"
            " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (datetime.now(timezone.utc).isoformat(timespec="milliseconds"), via, session, model, answer.question,
             answer.kind, answer.text, *(json.dumps(data[c], ensure_ascii=False) for c in _JSON_COLUMNS)),
        )
        return int(cur.lastrowid or 0)

    def entries(self, limit: int | None = 10, query: str | None = None) -> list[LogEntry]:
        """Newest first; `query` keeps rows whose question or answer contains it (any case)."""
        sql = "SELECT id, created_at, via, session, model, question, kind, answer, route, citations, timings, usage, warnings FROM logs"
        args: list[Any] = []
        if query:
            sql += " WHERE question LIKE ? ESCAPE '\\' OR answer LIKE ? ESCAPE '\\'"
            pattern = "%" + query.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_") + "%"
            args += [pattern, pattern]
        sql += " ORDER BY id DESC"
        if limit:
            sql += " LIMIT ?"
            args.append(limit)
        rows = self._db.execute(sql, args).fetchall()
        return [LogEntry(*row[:8], *(json.loads(v) if v else None for v in row[8:])) for row in rows]

    def count(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM logs").fetchone()[0])


def record(config: Config | None, answer: Answer, via: str, *, session: str | None = None) -> None:
    """Log one answer (the hook called by ask, chat and serve). Never raises: a full disk or a
    locked database costs the log row, with a warning, not the answer."""
    if config is None or not config.logs or not enabled(config.data_dir):
        return
    try:
        with LogStore(logs_path(config.data_dir)) as store:
            store.add(answer, via=via, model=model_label(config), session=session)
    except (sqlite3.Error, OSError, InputError) as exc:
        log.warning("could not log the answer to %s (%s); turn logging off with: agentkit logs off", logs_path(config.data_dir), exc)


def logged(events: Iterator[Any], config: Config | None, via: str) -> Iterator[Any]:
    """`events` (from Agent.stream) passed through, with the answer logged as it goes by."""
    from agentkit.types import AnswerEvent

    try:
        for event in events:
            if isinstance(event, AnswerEvent):
                record(config, event.answer, via)
            yield event
    finally:
        close = getattr(events, "close", None)
        if close is not None:
            close()
