"""`POST /internal/workflow-progress`: rules, authentication and bad input, on PostgreSQL."""

from __future__ import annotations

import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.errors import ConflictError
from db.models import WorkflowStatus
from domain.workflows import ProgressUpdate, WorkflowService
from tests.db_fixtures import TEST_TOKEN
from tests.integration.conftest import AUTH, create_task

PAYLOAD = {
    "episodeId": "ep-progress",
    "audioKey": "uploads/ep.mp3",
    "encodingFormats": ["mp3_128"],
}
URL = "/internal/workflow-progress"


@pytest.fixture
def task(client: TestClient) -> dict[str, Any]:
    return create_task(client, PAYLOAD)


def _ids(task: dict[str, Any]) -> dict[str, str]:
    return {"taskId": task["id"], "workflowId": task["workflowId"]}


def _state(client: TestClient, task: dict[str, Any]) -> tuple[dict[str, Any], dict[str, Any]]:
    return (
        client.get(f"/tasks/{task['id']}").json(),
        client.get(f"/workflows/{task['workflowId']}").json(),
    )


def test_running_then_progress_then_completed(client: TestClient, task: dict[str, Any]) -> None:
    r = client.post(URL, json=_ids(task) | {"status": "running", "step": "download"}, headers=AUTH)
    assert r.status_code == 200, r.text
    assert r.json()["task"]["status"] == "processing"
    assert r.json()["workflow"]["startedAt"] is not None

    r = client.post(
        URL,
        json=_ids(task) | {"progress": 40, "step": "encode:mp3_128", "message": "40%"},
        headers=AUTH,
    )
    assert r.json()["task"]["progress"] == 40
    assert r.json()["task"]["currentStep"] == "encode:mp3_128"

    # Lower progress is ignored, not an error: reports from parallel steps arrive out of order.
    r = client.post(URL, json=_ids(task) | {"progress": 10}, headers=AUTH)
    assert r.status_code == 200 and r.json()["workflow"]["progress"] == 40

    result = {"outputs": {"mp3_128": {"key": "episodes/ep-progress/audio/mp3_128.mp3"}}}
    r = client.post(URL, json=_ids(task) | {"status": "completed", "result": result}, headers=AUTH)
    assert r.status_code == 200
    task_row, workflow_row = _state(client, task)
    assert task_row["status"] == "done" and task_row["progress"] == 100
    assert task_row["result"] == result and workflow_row["result"] == result
    assert task_row["completedAt"] and workflow_row["completedAt"]


def test_terminal_status_is_final(client: TestClient, task: dict[str, Any]) -> None:
    client.post(URL, json=_ids(task) | {"status": "running"}, headers=AUTH)
    client.post(URL, json=_ids(task) | {"status": "completed"}, headers=AUTH)
    before = _state(client, task)
    late = client.post(URL, json=_ids(task) | {"status": "running", "progress": 50}, headers=AUTH)
    assert late.status_code == 409
    assert "final" in late.json()["detail"]
    assert _state(client, task) == before


@pytest.mark.parametrize(
    ("status", "task_status"),
    [("failed", "failed"), ("crashed", "failed"), ("cancelled", "cancelled")],
)
def test_task_status_follows_the_workflow(
    client: TestClient,
    task: dict[str, Any],
    status: str,
    task_status: str,
) -> None:
    r = client.post(
        URL,
        json=_ids(task) | {"status": status, "error": "boom", "errorKind": "permanent"},
        headers=AUTH,
    )
    assert r.status_code == 200, r.text
    task_row, workflow_row = _state(client, task)
    assert workflow_row["status"] == status
    assert task_row["status"] == task_status
    assert task_row["error"] == "boom" and task_row["errorKind"] == "permanent"


def test_unknown_ids_and_foreign_workflow(client: TestClient, task: dict[str, Any]) -> None:
    other = create_task(client, PAYLOAD)
    r = client.post(URL, json={"taskId": task["id"], "workflowId": str(uuid.uuid4())}, headers=AUTH)
    assert r.status_code == 404
    r = client.post(
        URL, json={"taskId": str(uuid.uuid4()), "workflowId": task["workflowId"]}, headers=AUTH
    )
    assert r.status_code == 404
    before = _state(client, task)
    r = client.post(
        URL,
        json={"taskId": task["id"], "workflowId": other["workflowId"], "progress": 50},
        headers=AUTH,
    )
    assert r.status_code == 409 and "does not belong" in r.json()["detail"]
    assert _state(client, task) == before


@pytest.mark.parametrize(
    "headers",
    [
        {},
        {"Authorization": "Bearer wrong-token"},
        {"Authorization": f"Basic {TEST_TOKEN}"},
        {"Authorization": "Bearer"},
    ],
)
def test_token_is_required(
    client: TestClient, task: dict[str, Any], headers: dict[str, str]
) -> None:
    before = _state(client, task)
    r = client.post(URL, json=_ids(task) | {"progress": 50}, headers=headers)
    assert r.status_code == 401
    assert TEST_TOKEN not in r.text
    assert _state(client, task) == before


@pytest.mark.parametrize(
    "body",
    [
        {"progress": 101},
        {"progress": -1},
        {"progress": "fifty"},
        {"status": "exploded"},
        {"errorKind": "sometimes"},
        {"unknownField": 1},
        {"result": "not an object"},
    ],
)
def test_bad_bodies_are_4xx_and_change_nothing(
    client: TestClient,
    task: dict[str, Any],
    body: dict[str, Any],
) -> None:
    before = _state(client, task)
    r = client.post(URL, json=_ids(task) | body, headers=AUTH)
    assert r.status_code in (400, 422), r.text
    assert r.json()["detail"]
    assert _state(client, task) == before


def test_malformed_json_and_bad_ids(client: TestClient, task: dict[str, Any]) -> None:
    r = client.post(URL, content=b"{not json", headers=AUTH | {"Content-Type": "application/json"})
    assert r.status_code == 400
    r = client.post(URL, json={"taskId": "nope", "workflowId": task["workflowId"]}, headers=AUTH)
    assert r.status_code == 400
    r = client.post(URL, json=[1, 2, 3], headers=AUTH)
    assert r.status_code == 400


def test_concurrent_updates_lose_nothing_and_never_lower_progress(
    session_factory: sessionmaker[Session],
    task: dict[str, Any],
) -> None:
    service = WorkflowService(session_factory)
    task_id, workflow_id = uuid.UUID(task["id"]), uuid.UUID(task["workflowId"])
    service.apply_progress(ProgressUpdate(task_id, workflow_id, status=WorkflowStatus.RUNNING))
    values = [random.Random(n).randint(0, 99) for n in range(200)]
    seen: list[int] = []

    def send(n: int) -> None:
        workflow, _ = service.apply_progress(
            ProgressUpdate(task_id, workflow_id, progress=values[n], step=f"s{n}")
        )
        seen.append(workflow.progress)

    with ThreadPoolExecutor(max_workers=16) as pool:
        list(pool.map(send, range(len(values))))

    workflow = service.get(workflow_id)
    assert workflow.progress == max(values)
    assert len(seen) == len(values)  # every update was applied, none failed
    # Each update saw a progress at least as high as the value it sent.
    assert all(s >= v for s, v in zip(sorted(seen), sorted(values), strict=True))
    with session_factory() as session:
        from db.models import Task

        row = session.get(Task, task_id)
        assert row is not None and row.progress == max(values) and row.status.value == "processing"

    service.apply_progress(ProgressUpdate(task_id, workflow_id, status=WorkflowStatus.COMPLETED))

    def late(n: int) -> str:
        try:
            service.apply_progress(ProgressUpdate(task_id, workflow_id, progress=n))
        except ConflictError:
            return "conflict"
        return "applied"

    with ThreadPoolExecutor(max_workers=8) as pool:
        assert set(pool.map(late, range(40))) == {"conflict"}
    assert service.get(workflow_id).progress == 100
