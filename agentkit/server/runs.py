"""One generation in a worker thread, its items handed to the server's event loop."""

from __future__ import annotations

import asyncio
import contextlib
import threading
from collections.abc import Callable, Iterator
from typing import Any


class Run:
    """One generation in a worker thread, handing what it yields to the event loop.

    The whole iteration stays in one thread: llama.cpp's backend ties an open stream to the
    thread that opened it. `stop()` closes the iterator after the item being produced.
    """

    def __init__(self, make: Callable[[], Iterator[Any]], loop: asyncio.AbstractEventLoop, done: Callable[[Run], None]) -> None:
        self._make = make
        self._loop = loop
        self._done = done
        self._queue: asyncio.Queue[tuple[str, Any]] = asyncio.Queue()
        self._stop = threading.Event()
        self._finished = False

    def stop(self) -> None:
        self._stop.set()

    def work(self) -> None:
        try:
            items = self._make()
            try:
                for item in items:
                    self._put("item", item)
                    if self._stop.is_set():
                        break
            finally:
                close = getattr(items, "close", None)
                if close is not None:
                    close()
        except BaseException as exc:  # noqa: BLE001 - handed to the request, which maps it
            self._put("error", exc)
        else:
            self._put("end", None)
        finally:
            with contextlib.suppress(RuntimeError):  # the loop is gone: the server is shutting down
                self._loop.call_soon_threadsafe(self._finish)

    def _finish(self) -> None:
        """Free the slot, once: when the request reads the end (before its response goes out, so
        that the client's next request finds it free), or else when the thread ends."""
        if not self._finished:
            self._finished = True
            self._done(self)

    def _put(self, kind: str, value: Any) -> None:
        with contextlib.suppress(RuntimeError):
            self._loop.call_soon_threadsafe(self._queue.put_nowait, (kind, value))

    async def next(self) -> Any:
        kind, value = await self._queue.get()
        if kind != "item":
            self._finish()
        if kind == "error":
            raise value
        if kind == "end":
            raise StopAsyncIteration
        return value
