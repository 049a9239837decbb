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


# -- loudness, metadata, chapters, waveform (issue 12): 422 naming the field as sent ---------

_TWO = [{"startTime": 0, "title": "Intro"}, {"startTime": 30, "title": "Talk"}]


@pytest.mark.parametrize(
    ("change", "where", "needle"),
    [
        ({"loudness": {"targetLufs": -41}}, "payload.loudness.targetLufs", ">= -40"),
        ({"loudness": {"targetLufs": -4.5}}, "payload.loudness.targetLufs", "<= -5"),
        ({"loudness": {"targetLufs": "loud"}}, "payload.loudness.targetLufs", "float"),
        ({"loudness": {"truePeakDbtp": 0.5}}, "payload.loudness.truePeakDbtp", "<= 0"),
        ({"loudness": {"targetLufsMono": -50}}, "payload.loudness.targetLufsMono", ">= -43"),
        ({"loudness": {"target": -16}}, "payload.loudness", "accepted: targetLufs"),
        ({"loudness": -16}, "payload.loudness", "object"),
        ({"metadata": {"coverKey": "../cover.jpg"}}, "payload.metadata.coverKey", "'..'"),
        ({"metadata": {"coverKey": "/cover.jpg"}}, "payload.metadata.coverKey", "absolute"),
        ({"metadata": {"title": "a\nb"}}, "payload.metadata", "title contains a control"),
        ({"metadata": {"artist": "   "}}, "payload.metadata", "artist is empty"),
        ({"metadata": {"album": "x" * 1001}}, "payload.metadata.album", "length <= 1000"),
        ({"metadata": {"date": "29/11/2026"}}, "payload.metadata.date", "YYYY-MM-DD"),
        ({"metadata": {"episodeNumber": 1_000_000}}, "payload.metadata.episodeNumber", "999999"),
        ({"metadata": {"episodeNumber": 1.5}}, "payload.metadata.episodeNumber", "int"),
        ({"metadata": {"subtitle": "x"}}, "payload.metadata", "accepted: title"),
        (
            {"chapters": [_TWO[0], {"startTime": -1, "title": "Talk"}]},
            "payload.chapters[1].startTime",
            ">= 0",
        ),
        (
            {"chapters": [_TWO[1], _TWO[0]]},
            "payload.chapters",
            "chapter 2: startTime 0.0 is before the previous chapter's (30.0)",
        ),
        ({"chapters": [_TWO[0], _TWO[0]]}, "payload.chapters", "is the same as"),
        ({"chapters": [{"startTime": 0}]}, "payload.chapters[0]", "`title`"),
        ({"chapters": [{"startTime": 0, "title": ""}]}, "payload.chapters[0].title", "length"),
        ({"chapters": [{"startTime": 0, "title": " "}]}, "payload.chapters", "title is empty"),
        (
            {"chapters": [{"startTime": 0, "title": "a", "imageKey": "a\\b.png"}]},
            "payload.chapters[0].imageKey",
            "backslash",
        ),
        (
            {"chapters": [{"startTime": 0, "title": "a", "url": "javascript:alert(1)"}]},
            "payload.chapters[0].url",
            "https?",
        ),
        ({"chapters": [{"startTime": 0, "title": "a", "img": "x"}]}, "payload.chapters[0]", "img"),
        (
            {"chapters": [{"startTime": n, "title": "c"} for n in range(1001)]},
            "payload.chapters",
            "length <= 1000",
        ),
        ({"chapters": {"startTime": 0}}, "payload.chapters", "array"),
        ({"waveform": "yes"}, "payload.waveform", "bool"),
        ({"waveform": None}, "payload.waveform", "bool"),
    ],
)
def test_bad_sound_tag_and_chapter_fields_are_422_naming_the_field(
    client: TestClient,
    session_factory: sessionmaker[Session],
    change: dict[str, Any],
    where: str,
    needle: str,
) -> None:
    body = {"type": "audio_processing", "payload": GOOD | change}
    response = client.post("/tasks", json=body)
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith(f"{where}: "), detail
    assert needle in detail, detail
    assert count_rows(session_factory) == 0

