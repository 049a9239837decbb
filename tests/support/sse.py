"""A Server-Sent Events subscriber in a background thread (httpx-sse), for tests that act
while a stream is open and wait, with a bound, for what it receives."""

from __future__ import annotations

import asyncio
import contextlib
import json
import queue
import threading
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import httpx
from httpx_sse import aconnect_sse

#: What the queue holds when the server ended the stream (or the request failed).
END = "end"


@dataclass
class Received:
    id: str
    event: str
    data: dict[str, Any]


@dataclass
class Subscriber:
    """`GET url` as an event stream; each event lands in `events` as it arrives."""

    url: str
    headers: Mapping[str, str] = field(default_factory=dict)
    events: queue.Queue[Received | str | BaseException] = field(default_factory=queue.Queue)
    status_code: int | None = None
    _loop: asyncio.AbstractEventLoop | None = None
    _task: asyncio.Task[None] | None = None
    _thread: threading.Thread | None = None

    def start(self) -> Subscriber:
        """Connect in a thread of its own (an event loop there: `close()` cancels the read,
        which closes the connection, so the server sees the client go)."""
        started = threading.Event()

        def run() -> None:
            loop = asyncio.new_event_loop()
            self._loop = loop
            self._task = loop.create_task(self._read())
            started.set()
            with contextlib.suppress(asyncio.CancelledError):
                loop.run_until_complete(self._task)
            loop.close()

        self._thread = threading.Thread(target=run, daemon=True)
        self._thread.start()
        started.wait(10)
        return self

    async def _read(self) -> None:
        try:
            async with (
                httpx.AsyncClient(timeout=httpx.Timeout(10.0, read=120.0)) as client,
                aconnect_sse(client, "GET", self.url, headers=dict(self.headers)) as source,
            ):
                self.status_code = source.response.status_code
                async for sse in source.aiter_sse():
                    self.events.put(Received(sse.id, sse.event, json.loads(sse.data)))
            self.events.put(END)
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # handed to the test, which fails with it
            self.events.put(exc)

    def next(self, timeout_s: float = 15.0) -> Received:
        """The next event; fails if none comes within `timeout_s` or the stream ended."""
        try:
            item = self.events.get(timeout=timeout_s)
        except queue.Empty:
            raise AssertionError(f"no event on {self.url} within {timeout_s:.0f} s") from None
        if isinstance(item, BaseException):
            raise AssertionError(f"the stream {self.url} failed: {item!r}") from item
        if item == END:
            raise AssertionError(f"the stream {self.url} ended")
        assert isinstance(item, Received)
        return item

    def ended(self, timeout_s: float = 15.0) -> bool:
        """True once the server has closed the stream (no event in between)."""
        try:
            item = self.events.get(timeout=timeout_s)
        except queue.Empty:
            return False
        if isinstance(item, Received):
            raise AssertionError(f"expected the end of the stream, got {item}")
        return item == END

    def close(self) -> None:
        """Hang up (if the server has not ended the stream already)."""
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                self._loop.call_soon_threadsafe(self._task.cancel)
        if self._thread is not None:
            self._thread.join(10)
