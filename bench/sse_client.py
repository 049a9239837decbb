"""Many open event streams in one process: `python -m bench.sse_client`.

Reads a JSON spec on the first line of stdin (`host`, `port`, `api_key`, `task_ids`: one
`GET /tasks/{id}/events` stream each, `all_streams`: that many `GET /events`), opens every
stream, prints `ready <open streams>` once each has answered its headers, and keeps
reading until a line `stop` arrives; then closes them and prints a JSON result.

Like `bench.loadgen` it is plain asyncio streams and a small parser, no HTTP library:
the streams share two cores with the API they measure, so the client must cost little.
For each `task.progress` event whose message is `t=<stamp>` (the push scenario's reports:
the send time, see `bench.loadgen`) it records `[stamp, received at, stream kind]`; it
counts every other event by type.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

#: What a stamped progress event's data holds just before the stamp.
STAMP_MARK = b'"message":"t='
STAMP_LEN = 17


@dataclass
class Received:
    """What the streams got."""

    #: `[stamp, received at (Unix), 0 for a task's stream / 1 for an all-task stream]`.
    stamped: list[tuple[float, float, int]] = field(default_factory=list)
    types: Counter[str] = field(default_factory=Counter)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    #: Streams that ended while the client still wanted them.
    ended: int = 0


class SseParser:
    """Turns the bytes of an SSE body (already de-chunked) into `(event type, data)`.
    Lines may end in CRLF (Litestar's separator), LF or CR, split anywhere between feeds."""

    def __init__(self) -> None:
        self._buffer = b""

    def feed(self, data: bytes) -> list[tuple[str, bytes]]:
        buffer = self._buffer + data
        # A CR at the very end may be the first half of a CRLF: keep it for the next feed.
        keep = buffer.endswith(b"\r")
        if keep:
            buffer = buffer[:-1]
        self._buffer = buffer.replace(b"\r\n", b"\n").replace(b"\r", b"\n")
        out = []
        while True:
            end = self._buffer.find(b"\n\n")
            if end < 0:
                break
            block, self._buffer = self._buffer[:end], self._buffer[end + 2 :]
            event, lines = "message", []
            for line in block.split(b"\n"):
                if line.startswith(b"event:"):
                    event = line[6:].strip().decode()
                elif line.startswith(b"data:"):
                    lines.append(line[5:].lstrip(b" "))
                # `id:` and comments (`: keep-alive`) need nothing here
            if lines:
                out.append((event, b"\n".join(lines)))
        if keep:
            self._buffer += b"\r"
        return out


def stamp_of(data: bytes) -> float | None:
    """The send time a stamped progress report carried in its message, if any."""
    at = data.find(STAMP_MARK)
    if at < 0:
        return None
    start = at + len(STAMP_MARK)
    try:
        return float(data[start : start + STAMP_LEN])
    except ValueError:
        return None


async def _chunks(reader: asyncio.StreamReader) -> Any:
    """The de-chunked body of a `Transfer-Encoding: chunked` response, piece by piece."""
    while True:
        size = int((await reader.readline()).split(b";")[0], 16)
        if size == 0:
            return
        data = await reader.readexactly(size + 2)
        yield data[:-2]


async def stream(
    spec: dict[str, Any], path: str, kind: int, got: Received, opened: asyncio.Queue[bool]
) -> None:
    """One stream until cancelled; reports once on `opened` whether it answered 200."""
    reported = False
    writer = None
    try:
        reader, writer = await asyncio.open_connection(spec["host"], spec["port"])
        writer.write(
            (
                f"GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nAccept: text/event-stream\r\n"
                f"X-API-Key: {spec['api_key']}\r\n\r\n"
            ).encode()
        )
        await writer.drain()
        head = await reader.readuntil(b"\r\n\r\n")
        status = head[9:12].decode()
        got.statuses[status] += 1
        opened.put_nowait(status == "200")
        reported = True
        if status != "200" or b"chunked" not in head.lower():
            return
        parser = SseParser()
        async for chunk in _chunks(reader):
            now = time.time()
            for event, data in parser.feed(chunk):
                got.types[event] += 1
                if event == "task.progress":
                    stamp = stamp_of(data)
                    if stamp is not None:
                        got.stamped.append((stamp, now, kind))
        got.ended += 1
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        got.errors[type(exc).__name__] += 1
    finally:
        if not reported:
            opened.put_nowait(False)
        if writer is not None:
            writer.close()
            with contextlib.suppress(OSError, asyncio.CancelledError):
                await writer.wait_closed()


async def main_async(spec: dict[str, Any]) -> dict[str, Any]:
    got = Received()
    opened: asyncio.Queue[bool] = asyncio.Queue()
    paths = [(f"/tasks/{task_id}/events", 0) for task_id in spec["task_ids"]]
    paths += [("/events", 1)] * int(spec.get("all_streams", 0))
    tasks = []
    started = time.perf_counter()
    for n, (path, kind) in enumerate(paths):
        tasks.append(asyncio.create_task(stream(spec, path, kind, got, opened)))
        if n % 50 == 49:  # do not hit the API with hundreds of connects in one go
            await asyncio.sleep(0.05)
    ok = 0
    for _ in paths:
        ok += await opened.get()
    open_s = time.perf_counter() - started
    print(f"ready {ok}", flush=True)
    loop = asyncio.get_running_loop()
    while True:
        line = await loop.run_in_executor(None, sys.stdin.readline)
        if not line or line.strip() == "stop":
            break
    for task in tasks:
        task.cancel()
    await asyncio.gather(*tasks, return_exceptions=True)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "streams": len(paths),
        "open": ok,
        "open_s": open_s,
        "stamped": got.stamped,
        "types": dict(got.types),
        "statuses": dict(got.statuses),
        "errors": dict(got.errors),
        "ended": got.ended,
        "cpu_s": usage.ru_utime + usage.ru_stime,
    }


if __name__ == "__main__":
    print(json.dumps(asyncio.run(main_async(json.loads(sys.stdin.readline())))), flush=True)
