"""The event streams write SSE messages themselves (`api.events.encode_event`): byte for byte
what Litestar's `ServerSentEventMessage` writes, without its per-message regular expressions."""

from __future__ import annotations

import json

from litestar.response import ServerSentEventMessage

from api.events import KEEPALIVE_MESSAGE, encode_event
from domain.event_stream import stream_event


def test_an_event_is_encoded_as_litestar_encodes_it() -> None:
    data = {
        "taskId": "0b4f",
        "status": "processing",
        "progress": 40,
        "currentStep": "encode",
        "message": "line one\nline two \u00e9\r\n",
    }
    event = stream_event(123, "task.progress", data)
    expected = ServerSentEventMessage(
        id=123, event="task.progress", data=json.dumps(event.data, separators=(",", ":"))
    ).encode()
    assert encode_event(event) == expected
    assert encode_event(event).count(b"data: ") == 1


def test_the_keep_alive_is_litestars_comment() -> None:
    assert ServerSentEventMessage(comment="keep-alive", data=None).encode() == KEEPALIVE_MESSAGE
