"""`POST /tasks` with bad input: each gets its 4xx with a message and nothing is stored."""

from __future__ import annotations

from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from tests.support.rows import count_rows

GOOD = {"episodeId": "ep-1", "audioKey": "uploads/a.mp3", "encodingFormats": ["mp3_128"]}


@pytest.mark.parametrize(
    ("body", "needle"),
    [
        ({"type": "video_processing", "payload": GOOD}, "unknown task type"),
        (
            {"type": "audio_processing", "payload": GOOD | {"encodingFormats": ["mp3_999"]}},
            "mp3_999",
        ),
        (
            {"type": "audio_processing", "payload": GOOD | {"encodingFormats": "mp3_128"}},
            "encodingFormats",
        ),
        (
            {
                "type": "audio_processing",
                "payload": GOOD | {"encodingFormats": ["mp3_128", "mp3_128"]},
            },
            "twice",
        ),
        (
            {
                "type": "audio_processing",
                "payload": {"audioKey": "a.mp3", "encodingFormats": ["flac"]},
            },
            "episodeId",
        ),
        ({"type": "audio_processing", "payload": GOOD | {"audioKey": "../etc/passwd"}}, "audioKey"),
        ({"type": "audio_processing", "payload": GOOD | {"audioKey": "/abs/path.mp3"}}, "audioKey"),
        ({"type": "audio_processing", "payload": GOOD | {"audioKey": "a\u0000b.mp3"}}, "audioKey"),
        ({"type": "audio_processing", "payload": GOOD | {"episodeId": "../x"}}, "episode"),
        ({"type": "audio_processing", "payload": GOOD | {"transcribe": "yes"}}, "transcribe"),
        ({"type": "audio_processing", "payload": GOOD | {"language": "english!"}}, "language"),
        ({"type": "audio_processing", "payload": GOOD | {"colour": "blue"}}, "colour"),
        (
            {
                "type": "audio_processing",
                "payload": GOOD | {"encodingFormats": [], "transcribe": False},
            },
            "nothing to do",
        ),
        ({"type": "audio_processing", "payload": "not an object"}, "payload"),
        ({"type": "audio_processing"}, "payload"),
        ({"type": 5, "payload": GOOD}, "type"),
        ({"type": "audio_processing", "payload": GOOD, "extra": 1}, "extra"),
    ],
)
def test_bad_task_requests(
    client: TestClient,
    session_factory: sessionmaker[Session],
    body: dict[str, Any],
    needle: str,
) -> None:
    response = client.post("/tasks", json=body)
    assert response.status_code in (400, 422), response.text
    text = response.text
    assert needle.lower() in text.lower(), text
    assert count_rows(session_factory) == 0


def test_malformed_json(client: TestClient, session_factory: sessionmaker[Session]) -> None:
    response = client.post(
        "/tasks", content=b'{"type": ', headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert count_rows(session_factory) == 0


@pytest.mark.parametrize(
    "params", [{"limit": 0}, {"limit": 1000}, {"offset": -1}, {"status": "weird"}]
)
def test_bad_list_parameters(client: TestClient, params: dict[str, Any]) -> None:
    response = client.get("/tasks", params=params)
    assert response.status_code == 400, response.text
