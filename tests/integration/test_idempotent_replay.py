"""An idempotent repeat of `POST /tasks` is compared with the request as first made, not
with the payload as reprocessing left it. Real app, PostgreSQL, real Prefect server."""

from __future__ import annotations

import uuid

from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
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
