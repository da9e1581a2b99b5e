"""agentkit-notes: a knowledge source over your notes, in one SQLite file with an FTS5 index.

Source type `sqlite_notes`: BM25 ranking by SQLite's `bm25()`, metadata filters through JSON,
stable passage ids (adding an id again replaces it), and an optional folder of notes to index.
"""

from __future__ import annotations

from collections.abc import Callable

from agentkit.plugins import hookimpl

__version__ = "0.1.0"


@hookimpl
def register_knowledge(register: Callable[..., None]) -> None:
    # A "module:attr" string is imported when a config uses the type, so that loading this
    # plugin (e.g. for `agentkit --help`) stays cheap.
    register("sqlite_notes", "agentkit_notes.source:NotesSource")
