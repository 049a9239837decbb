"""The push scenario's small parts (`bench.sse_client`, `bench.webhook_receiver`,
`bench.scenarios.push`, the stamp in `bench.loadgen`): what they read from the wire and
the requests they build. The scenario itself runs under `make bench` (`BENCH_ONLY=6`)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

from litestar.response import ServerSentEventMessage

from bench.loadgen import STAMP_LEN, stamp_now
from bench.scenarios.push import PLACEHOLDER, stamped_progress, status_changes
from bench.sse_client import SseParser, stamp_of
from bench.webhook_receiver import event_time, event_type


def _wire() -> bytes:
    """Three messages as the API encodes them (Litestar, CRLF), a keep-alive between."""
    data = {"eventId": 7, "type": "task.progress", "message": "t=1764443759.123456"}
    return b"".join(
        m.encode()
        for m in (
            ServerSentEventMessage(id=7, event="task.progress",
                                   data=json.dumps(data, separators=(",", ":"))),
            ServerSentEventMessage(comment="keep-alive", data=None),
            ServerSentEventMessage(id=8, event="task.done", data='{"eventId":8}'),
        )
    )


def test_the_parser_reads_litestar_messages_split_anywhere() -> None:
    wire = _wire()
    assert b"\r\n" in wire  # Litestar's separator: the case a LF-only parser misses
    for size in (1, 2, 3, 7, len(wire)):
        parser = SseParser()
        events = []
        for at in range(0, len(wire), size):
            events += parser.feed(wire[at : at + size])
        assert [e for e, _ in events] == ["task.progress", "task.done"], size
        assert stamp_of(events[0][1]) == 1764443759.123456
        assert stamp_of(events[1][1]) is None


def test_the_stamp_keeps_the_request_length() -> None:
    assert len(PLACEHOLDER) == STAMP_LEN == len(stamp_now())
    raw = stamped_progress([("t", "w")], count=1)[0]
    stamped = raw.encode().replace(PLACEHOLDER.encode(), stamp_now())
    head, _, body = stamped.partition(b"\r\n\r\n")
    assert f"Content-Length: {len(body)}".encode() in head
    assert json.loads(body)["message"].startswith("t=")


def test_status_changes_run_each_workflow_before_cancelling_it() -> None:
    workflows = [(f"t{n}", f"w{n}") for n in range(10)]
    seen: dict[str, list[str]] = {}
    for raw in status_changes(workflows, gap=3):
        body = json.loads(raw.partition("\r\n\r\n")[2])
        seen.setdefault(body["workflowId"], []).append(body["status"])
    assert seen == {w: ["running", "cancelled"] for _, w in workflows}


def test_the_receiver_reads_the_event_time_and_type() -> None:
    body = b'{"type":"task.done","timestamp":"2026-11-29T16:40:02.114373Z","data":{"x":1}}'
    assert event_type(body) == "task.done"
    assert event_time(body) == datetime(2026, 11, 29, 16, 40, 2, 114373, UTC).timestamp()
    assert event_time(b"{}") is None
