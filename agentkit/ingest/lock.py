"""One writer at a time per data dir: `agentkit ingest` and `delete` take this lock first.

Two first ingests into a new data dir would otherwise race to create the embedded store and one
would fail with the engine's raw error; with the lock the second waits, then runs.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from agentkit.errors import IngestError

LOCK_NAME = ".ingest.lock"


@contextmanager
def ingest_lock(data_dir: str | os.PathLike[str], *, wait: float | None = None, announce: bool = True) -> Iterator[None]:
    """Hold the writer lock of `data_dir`; wait for it (forever, or `wait` seconds, then IngestError).

    The lock is an flock on DATA_DIR/.ingest.lock: the system drops it when its holder dies, so a
    killed ingest never leaves a stale lock. Where flock does not exist (Windows) nothing is locked.
    """
    try:
        import fcntl
    except ImportError:  # pragma: no cover - Windows
        yield
        return
    folder = Path(data_dir).expanduser()
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle = (folder / LOCK_NAME).open("a+")
    except OSError as exc:
        raise IngestError(f"cannot create the data dir {folder}: {exc.strerror or exc}; pass --data-dir DIR") from None
    with handle:
        deadline = None if wait is None else time.monotonic() + wait
        told = False
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                handle.seek(0)
                holder = handle.read().strip() or "another process"
                if deadline is not None and time.monotonic() >= deadline:
                    raise IngestError(
                        f"another agentkit ingest or delete ({holder}) is writing to {folder}; "
                        f"wait for it to finish, or use another --data-dir"
                    ) from None
                if announce and not told:
                    print(f"waiting for another agentkit ingest or delete ({holder}) writing to {folder} ...", file=sys.stderr)
                    told = True
                time.sleep(0.2)
        handle.seek(0)
        handle.truncate()
        handle.write(f"pid {os.getpid()}")
        handle.flush()
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)
