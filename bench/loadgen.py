"""A small HTTP/1.1 load generator, run as its own process: `python -m bench.loadgen`.

Reads a JSON spec on stdin, prints a JSON result on stdout. The scenario pre-renders the
raw requests (cycled in order), so the generator only writes bytes and parses status lines:
on a two-core machine that shares its CPU with the server under test, a light client
(asyncio streams, keep-alive connections, no HTTP library) leaves the server more of it.
Its own CPU time is reported so the reader can see what it took.

Two modes:

* `closed`: `connections` clients each send the next request as soon as the previous one
  answered; throughput is what the server sustains.
* `open`: requests are due at a fixed `rate`, whether or not earlier ones have answered;
  latency is measured from when a request was *due*, not when a free connection sent it,
  so a server that falls behind shows it in the latency (no coordinated omission).

Requests completing in the first `warmup_s` seconds are not counted.

`stamp` (optional): a 17-character placeholder in the requests, replaced at send time by the
Unix time (`%17.6f`, the same length, so Content-Length holds); with `record_stamps` the
result lists `[stamp, answered at]` for every request answered 2xx (warm-up included). The
push scenario carries the stamp in a progress report's message to time its event.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import json
import math
import resource
import sys
import time
from collections import Counter
from dataclasses import dataclass, field
from typing import Any


@dataclass
class Tally:
    """What was measured after the warm-up."""

    latencies: list[float] = field(default_factory=list)
    statuses: Counter[str] = field(default_factory=Counter)
    errors: Counter[str] = field(default_factory=Counter)
    #: `[stamp, answered at]` of each 2xx when the spec asks for them.
    stamps: list[tuple[float, float]] = field(default_factory=list)
    #: The placeholder replaced by the send time (bytes), and whether to record the stamps.
    placeholder: bytes | None = None
    record: bool = False


class Connection:
    """One keep-alive connection; reconnects when the server closes it or on an error."""

    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> int:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        try:
            self.writer.write(raw)
            await self.writer.drain()
            head = await self.reader.readuntil(b"\r\n\r\n")
            status = int(head[9:12])
            length, chunked, close = 0, False, False
            for line in head.split(b"\r\n")[1:]:
                name, _, value = line.partition(b":")
                name = name.strip().lower()
                if name == b"content-length":
                    length = int(value)
                elif name == b"transfer-encoding":
                    chunked = b"chunked" in value.lower()
                elif name == b"connection":
                    close = b"close" in value.lower()
            if chunked:
                while True:
                    size = int((await self.reader.readline()).split(b";")[0], 16)
                    await self.reader.readexactly(size + 2)
                    if size == 0:
                        break
            elif length:
                await self.reader.readexactly(length)
        except BaseException:
            await self.close()
            raise
        if close:
            await self.close()
        return status

    async def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            with contextlib.suppress(OSError):
                await self.writer.wait_closed()
        self.reader = self.writer = None


def stamp_now() -> bytes:
    """The send time as the 17 bytes that replace the placeholder."""
    stamp = f"{time.time():17.6f}".encode()
    assert len(stamp) == STAMP_LEN
    return stamp


STAMP_LEN = 17


async def _send(conn: Connection, raw: bytes, due: float, warm_at: float, tally: Tally) -> None:
    stamp = None
    if tally.placeholder is not None:
        stamp = stamp_now()
        raw = raw.replace(tally.placeholder, stamp)
    try:
        status = await conn.request(raw)
    except (OSError, asyncio.IncompleteReadError, ValueError) as exc:
        if time.perf_counter() >= warm_at:
            tally.errors[type(exc).__name__] += 1
        return
    done = time.perf_counter()
    if stamp is not None and tally.record and 200 <= status < 300:
        tally.stamps.append((float(stamp), time.time()))
    if done >= warm_at:
        tally.latencies.append(done - due)
        tally.statuses[str(status)] += 1


async def closed_loop(spec: dict[str, Any], requests: list[bytes], tally: Tally) -> float:
    start = time.perf_counter()
    warm_at = start + spec["warmup_s"]
    deadline = start + spec["duration_s"]
    counter = itertools.count()

    async def client() -> None:
        conn = Connection(spec["host"], spec["port"])
        while time.perf_counter() < deadline:
            raw = requests[next(counter) % len(requests)]
            await _send(conn, raw, time.perf_counter(), warm_at, tally)
        await conn.close()

    await asyncio.gather(*(client() for _ in range(spec["connections"])))
    return time.perf_counter() - warm_at


async def open_loop(spec: dict[str, Any], requests: list[bytes], tally: Tally) -> float:
    start = time.perf_counter()
    warm_at = start + spec["warmup_s"]
    interval = 1.0 / spec["rate"]
    total = int(spec["duration_s"] * spec["rate"])
    queue: asyncio.Queue[tuple[int, float] | None] = asyncio.Queue()

    async def client() -> None:
        conn = Connection(spec["host"], spec["port"])
        while (item := await queue.get()) is not None:
            n, due = item
            await _send(conn, requests[n % len(requests)], due, warm_at, tally)
        await conn.close()

    clients = [asyncio.create_task(client()) for _ in range(spec["connections"])]
    for n in range(total):
        due = start + n * interval
        delay = due - time.perf_counter()
        if delay > 0:
            await asyncio.sleep(delay)
        queue.put_nowait((n, due))
    for _ in clients:
        queue.put_nowait(None)
    try:
        await asyncio.wait_for(asyncio.gather(*clients), timeout=spec.get("drain_s", 30))
    except TimeoutError:
        tally.errors["unfinished at the end"] += queue.qsize()
    return start + spec["duration_s"] - warm_at


def _percentile(ordered: list[float], p: float) -> float | None:
    if not ordered:
        return None
    return ordered[max(1, math.ceil(p / 100 * len(ordered))) - 1]  # nearest rank


def run(spec: dict[str, Any]) -> dict[str, Any]:
    """Run one load phase as the spec says; the summary as a dict."""
    requests = [r.encode() for r in spec["requests"]]
    tally = Tally()
    if spec.get("stamp"):
        tally.placeholder = spec["stamp"].encode()
        if len(tally.placeholder) != STAMP_LEN:
            raise ValueError(f"stamp placeholder must be {STAMP_LEN} characters")
        tally.record = bool(spec.get("record_stamps"))
    runner = closed_loop if spec["mode"] == "closed" else open_loop
    window = asyncio.run(runner(spec, requests, tally))
    ordered = sorted(tally.latencies)
    usage = resource.getrusage(resource.RUSAGE_SELF)
    ok = sum(n for status, n in tally.statuses.items() if status.startswith("2"))
    return {
        "mode": spec["mode"],
        "window_s": window,
        "completed": len(ordered),
        "ok": ok,
        "ok_per_s": ok / window if window > 0 else 0.0,
        "statuses": dict(tally.statuses),
        "errors": dict(tally.errors),
        "p50_s": _percentile(ordered, 50),
        "p90_s": _percentile(ordered, 90),
        "p99_s": _percentile(ordered, 99),
        "max_s": ordered[-1] if ordered else None,
        "cpu_s": usage.ru_utime + usage.ru_stime,
        **({"stamps": tally.stamps} if tally.record else {}),
    }


if __name__ == "__main__":
    print(json.dumps(run(json.load(sys.stdin))))
