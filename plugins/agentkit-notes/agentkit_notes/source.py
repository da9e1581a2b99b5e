"""The `sqlite_notes` source: one SQLite file, an FTS5 index ranked by bm25(), JSON metadata filters."""

from __future__ import annotations

import json
import re
import sqlite3
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict

from agentkit.errors import SourceUnavailable
from agentkit.knowledge.base import Filters
from agentkit.types import Passage

#: A 10,000-word question becomes an FTS query of at most this many distinct terms.
MAX_QUERY_TERMS = 64
_TERM = re.compile(r"\w+", re.UNICODE)

_SCHEMA = """
CREATE TABLE IF NOT EXISTS passages (
    rowid INTEGER PRIMARY KEY,
    id TEXT NOT NULL UNIQUE,
    title TEXT NOT NULL DEFAULT '',
    text TEXT NOT NULL,
    uri TEXT NOT NULL DEFAULT '',
    metadata TEXT NOT NULL DEFAULT '{}'
);
CREATE VIRTUAL TABLE IF NOT EXISTS passages_fts USING fts5(
    title, text, content='passages', content_rowid='rowid', tokenize='unicode61 remove_diacritics 2'
);
CREATE TRIGGER IF NOT EXISTS passages_ai AFTER INSERT ON passages BEGIN
    INSERT INTO passages_fts(rowid, title, text) VALUES (new.rowid, new.title, new.text);
END;
CREATE TRIGGER IF NOT EXISTS passages_ad AFTER DELETE ON passages BEGIN
    INSERT INTO passages_fts(passages_fts, rowid, title, text) VALUES ('delete', old.rowid, old.title, old.text);
END;
"""


class NotesConfig(BaseModel):
    """`sources.NAME: {type: sqlite_notes, path: ..., notes_dir: ~/notes}`"""

    model_config = ConfigDict(extra="forbid")
    type: Literal["sqlite_notes"] = "sqlite_notes"
    description: str = "The user's own notes."
    #: The SQLite file; empty = DATA_DIR/<source name>.notes.sqlite.
    path: str = ""
    #: A folder of .md/.txt/.html notes, indexed on first search (`agentkit ingest` works too).
    notes_dir: str = ""
    #: How much more a title match counts than a body match.
    title_weight: float = 2.0


class NotesSource:
    """A writable knowledge source in SQLite: FTS5 full-text search ranked by BM25."""

    config_model: ClassVar[type[BaseModel]] = NotesConfig

    def __init__(
        self,
        name: str = "notes",
        path: str | Path = ":memory:",
        *,
        description: str = "The user's own notes.",
        notes_dir: str | Path | None = None,
        title_weight: float = 2.0,
    ) -> None:
        self.name = name
        self.description = description
        self.path = str(path)
        self.notes_dir = Path(notes_dir).expanduser() if notes_dir else None
        self.title_weight = title_weight
        self._conn: sqlite3.Connection | None = None
        self._synced = False
        # One connection shared by threads, serialised here: SQLite's own locking is per connection.
        self._lock = threading.RLock()

    @classmethod
    def from_config(cls, name: str, config: NotesConfig, data_dir: Any = None) -> NotesSource:
        path = Path(config.path).expanduser() if config.path else Path(data_dir or ".") / f"{name}.notes.sqlite"
        return cls(name, path, description=config.description, notes_dir=config.notes_dir or None,
                   title_weight=config.title_weight)

    # --- connection -------------------------------------------------------------------------

    def _db(self) -> sqlite3.Connection:
        if self._conn is None:
            if self.path != ":memory:":
                Path(self.path).parent.mkdir(parents=True, exist_ok=True)
            try:
                conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None)
                conn.executescript(_SCHEMA)
            except sqlite3.OperationalError as exc:
                hint = " (this SQLite lacks FTS5)" if "fts5" in str(exc) else ""
                raise SourceUnavailable(f"source {self.name!r}: cannot open {self.path}: {exc}{hint}") from exc
            self._conn = conn
        return self._conn

    def close(self) -> None:
        with self._lock:
            if self._conn is not None:
                self._conn.close()
                self._conn = None

    def sync(self) -> Any:
        """Index `notes_dir` (new and changed files; ids are stable, so nothing is duplicated)."""
        from agentkit.ingest.pipeline import ingest

        if self.notes_dir is None:
            return None
        self._synced = True
        return ingest(self.notes_dir, self, progress=False)

    # --- writing ----------------------------------------------------------------------------

    def add(self, passages: Sequence[Passage]) -> None:
        rows = [(p.id, p.title, p.text, p.uri, json.dumps(p.metadata, ensure_ascii=False, default=str))
                for p in passages]
        with self._lock, _transaction(self._db()) as db:
            # Delete then insert (not REPLACE), so the FTS trigger removes the old text.
            db.executemany("DELETE FROM passages WHERE id = ?", [(r[0],) for r in rows])
            db.executemany("INSERT INTO passages(id, title, text, uri, metadata) VALUES (?, ?, ?, ?, ?)", rows)

    def delete(self, ids: Sequence[str]) -> None:
        with self._lock, _transaction(self._db()) as db:
            db.executemany("DELETE FROM passages WHERE id = ?", [(i,) for i in ids])

    # --- reading ----------------------------------------------------------------------------

    def count(self) -> int:
        with self._lock:
            return int(self._db().execute("SELECT count(*) FROM passages").fetchone()[0])

    def get(self, ids: Sequence[str]) -> list[Passage]:
        if not ids:
            return []
        with self._lock:
            marks = ",".join("?" * len(ids))
            rows = self._db().execute(
                f"SELECT id, title, text, uri, metadata FROM passages WHERE id IN ({marks})", list(ids)
            ).fetchall()
        found = {r[0]: self._passage(r) for r in rows}
        return [found[i] for i in ids if i in found]

    def search(self, query: str, k: int = 5, filters: Filters | None = None) -> list[Passage]:
        match = fts_query(query)
        if not match or k <= 0:
            return []
        if self.notes_dir is not None and not self._synced:
            self.sync()
        where, params = _filter_sql(filters)
        sql = (
            "SELECT p.id, p.title, p.text, p.uri, p.metadata, bm25(passages_fts, ?, 1.0) AS rank "
            "FROM passages_fts JOIN passages p ON p.rowid = passages_fts.rowid "
            f"WHERE passages_fts MATCH ? {where} ORDER BY rank, p.id LIMIT ?"
        )
        with self._lock:
            rows = self._db().execute(sql, [self.title_weight, match, *params, k]).fetchall()
        # bm25() is lower-is-better (negative); agentkit's scores are higher-is-better.
        return [self._passage(r[:5], score=-r[5]) for r in rows]

    def _passage(self, row: Sequence[Any], score: float = 0.0) -> Passage:
        pid, title, text, uri, metadata = row
        return Passage(pid, text, title, self.name, score, json.loads(metadata), uri)


def fts_query(text: str) -> str:
    """An FTS5 query matching any of the words of `text`, each quoted so nothing is an operator."""
    terms: dict[str, None] = {}
    for term in _TERM.findall(text.lower()):
        terms.setdefault(term, None)
        if len(terms) == MAX_QUERY_TERMS:
            break
    return " OR ".join(f'"{t}"' for t in terms)


def _filter_sql(filters: Filters | None) -> tuple[str, list[Any]]:
    """`AND json_extract(metadata, '$."key"') = ?` per key; a list means any of its values."""
    clauses: list[str] = []
    params: list[Any] = []
    for key, want in (filters or {}).items():
        if '"' in key:
            raise ValueError(f"filter key {key!r}: double quotes are not allowed in metadata keys")
        column = "json_extract(p.metadata, ?)"
        params.append(f'$."{key}"')
        if isinstance(want, (list, tuple, set, frozenset)):
            values = list(want)
            if not values:
                clauses.append("0")
                params.pop()
                continue
            clauses.append(f"{column} IN ({','.join('?' * len(values))})")
            params.extend(values)
        elif want is None:
            clauses.append(f"{column} IS NULL")
        else:
            clauses.append(f"{column} = ?")
            params.append(want)
    return "".join(f" AND {c}" for c in clauses), params


class _transaction:
    """BEGIN … COMMIT (ROLLBACK on error) on an autocommit connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> sqlite3.Connection:
        self.db.execute("BEGIN")
        return self.db

    def __exit__(self, exc_type: object, *rest: object) -> None:
        self.db.execute("ROLLBACK" if exc_type else "COMMIT")

