"""An idempotent repeat of `POST /tasks` is compared with the request as first made, not
with the payload as reprocessing left it. Real app, PostgreSQL, real Prefect server."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

from litestar.testing import TestClient
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from db.models import Task
from domain.composition import build_services
from tests.integration.conftest import AUTH

PAYLOAD = {"episodeId": "ep-replay", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_128"]}


def test_a_repeat_after_a_reprocess_that_added_formats_returns_the_task(
    client: TestClient, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    body = {"type": "audio_processing", "payload": PAYLOAD}
    headers = {"Idempotency-Key": "replay-after-reprocess"}
    first = client.post("/tasks", json=body, headers=headers)
    assert first.status_code == 201, first.text
    task_id = first.json()["id"]
    done = {
        "taskId": task_id,
        "workflowId": first.json()["workflowId"],
        "status": "completed",
        "result": {"outputs": {"mp3_128": {"key": "episodes/ep-replay/audio/mp3_128.mp3"}}},
    }
    assert client.post("/internal/workflow-progress", json=done, headers=AUTH).status_code == 200

    # What the reprocessing flow does for `addFormats: ["opus_64"]`.
    service = build_services(settings, session_factory=session_factory).tasks
    updated = service.reprocess(uuid.UUID(task_id), ["opus_64"])
    assert updated.payload["encodingFormats"] == ["mp3_128", "opus_64"]

    again = client.post("/tasks", json=body, headers=headers)
    assert again.status_code == 200, again.text
    assert again.json()["id"] == task_id

    # The key still guards against a different request, including the reprocessed payload.
    changed = {"type": "audio_processing", "payload": updated.payload}
    conflict = client.post("/tasks", json=changed, headers=headers)
    assert conflict.status_code == 409, conflict.text
    assert "Idempotency-Key" in conflict.json()["detail"]


def test_a_repeat_with_other_loudness_tags_chapters_or_waveform_is_refused(
    client: TestClient,
) -> None:
    tagged: dict[str, Any] = PAYLOAD | {
        "episodeId": "ep-tagged",
        "metadata": {"title": "Pilot"},
        "chapters": [{"startTime": 0, "title": "Intro"}],
    }
    body = {"type": "audio_processing", "payload": tagged}
    headers = {"Idempotency-Key": "replay-tags"}
    first = client.post("/tasks", json=body, headers=headers)
    assert first.status_code == 201, first.text
    # The same request, spelled otherwise (the default loudness written out): the same task.
    same = tagged | {"loudness": {"targetLufs": -16, "truePeakDbtp": -1}, "waveform": True}
    repeat = {"type": "audio_processing", "payload": same}
    again = client.post("/tasks", json=repeat, headers=headers)
    assert again.status_code == 200 and again.json()["id"] == first.json()["id"], again.text

    changes: list[dict[str, Any]] = [
        {"metadata": {"title": "Pilot, take 2"}},
        {"metadata": None},
        {"chapters": [{"startTime": 1, "title": "Intro"}]},
        {"chapters": []},
        {"chapters": None},
        {"loudness": None},
        {"loudness": {"targetLufs": -14}},
        {"waveform": False},
    ]
    for change in changes:
        other = {"type": "audio_processing", "payload": tagged | change}
        conflict = client.post("/tasks", json=other, headers=headers)
        assert conflict.status_code == 409, (change, conflict.text)
        assert "Idempotency-Key" in conflict.json()["detail"]


def test_a_row_stored_before_loudness_and_tags_matches_the_same_request_now(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    """A client repeating a request across the upgrade gets its task, not a 409: the row
    keeps the payload and digest of its day, without the fields added since."""
    old = PAYLOAD | {"episodeId": "ep-before", "transcribe": True, "language": None}
    request: dict[str, Any] = PAYLOAD | {"episodeId": "ep-before"}
    body = {"type": "audio_processing", "payload": request}
    for key, digest in (("before-with-digest", True), ("before-without-digest", False)):
        headers = {"Idempotency-Key": key}
        first = client.post("/tasks", json=body, headers=headers)
        assert first.status_code == 201, first.text
        kept = hashlib.sha256(
            json.dumps(
                {"type": "audio_processing", "payload": old},
                sort_keys=True,
                separators=(",", ":"),
            ).encode()
        ).hexdigest()
        with session_factory.begin() as session:  # the row as the code before stored it
            session.execute(
                update(Task)
                .where(Task.id == uuid.UUID(first.json()["id"]))
                .values(payload=old, request_digest=kept if digest else None)
            )
        again = client.post("/tasks", json=body, headers=headers)
        assert again.status_code == 200, again.text
        assert again.json()["id"] == first.json()["id"]
        assert again.json()["payload"] == old  # read as stored
        changed = {"type": "audio_processing", "payload": request | {"loudness": None}}
        assert client.post("/tasks", json=changed, headers=headers).status_code == 409

        # Its retry runs with the defaults: loudness normalised, a waveform.
        report = {
            "taskId": first.json()["id"],
            "workflowId": first.json()["workflowId"],
            "status": "failed",
            "error": "store down",
            "errorKind": "transient",
        }
        reported = client.post("/internal/workflow-progress", json=report, headers=AUTH)
        assert reported.status_code == 200, reported.text
        retried = client.post(f"/tasks/{first.json()['id']}/retry")
        assert retried.status_code == 201, retried.text
        workflow = client.get(f"/workflows/{retried.json()['workflowId']}").json()
        assert workflow["parameters"]["loudness"]["target_lufs"] == -16.0
        assert workflow["parameters"]["waveform"] is True
        assert workflow["parameters"]["chapters"] is None
