"""`POST /tasks/{id}/cancel` waits for the run to stop without holding a worker thread, and
concurrent cancels of one task share that wait. The real app (its requests sent from
several threads at once), PostgreSQL and a real Prefect server; the test plays the worker
that stops the run."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from concurrent.futures import Future, ThreadPoolExecutor, wait
from pathlib import Path
from typing import Any

import httpx
import pytest
from litestar.concurrency import set_asyncio_executor
from litestar.testing import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.states import Cancelled, Running

from core.keys import attempt_prefix
from core.settings import Settings
from core.storage import build_store
from db.models import TaskStatus
from domain import prefect_gateway
from tests.integration.conftest import create_task
from tests.support.prefect_runs import run_state
from tests.support.waiting import wait_for

EPISODE = "ep-cancel"
PAYLOAD = {"episodeId": EPISODE, "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_64"]}


def _running_task(client: TestClient, prefect: SyncPrefectClient) -> dict[str, Any]:
    """A task whose flow run Prefect holds as Running (no worker: the test is the worker)."""
    task = create_task(client, PAYLOAD)
    prefect.set_flow_run_state(uuid.UUID(task["workflowInstanceId"]), Running(), force=True)
    return task


def _stop_like_a_worker(prefect: SyncPrefectClient, run_id: str) -> None:
    """Wait for the cancel request to reach Prefect, then end the run as a worker would."""
    wait_for(
        f"run {run_id} to be cancelling",
        lambda: run_state(prefect, run_id) in ("CANCELLING", "CANCELLED"),
        60,
    )
    prefect.set_flow_run_state(uuid.UUID(run_id), Cancelled(), force=True)


def test_concurrent_cancels_of_one_task_share_one_wait(
    client: TestClient, prefect: SyncPrefectClient, monkeypatch: pytest.MonkeyPatch
) -> None:
    asked: list[str] = []
    real_cancel = prefect_gateway.cancel_flow_run

    def counted_cancel(api_url: str, flow_run_id: str, **kwargs: Any) -> str:
        asked.append(flow_run_id)
        return real_cancel(api_url, flow_run_id, **kwargs)

    monkeypatch.setattr(prefect_gateway, "cancel_flow_run", counted_cancel)
    task = _running_task(client, prefect)
    run_id = task["workflowInstanceId"]
    with ThreadPoolExecutor(6) as pool:
        cancels = [pool.submit(client.post, f"/tasks/{task['id']}/cancel") for _ in range(6)]
        _stop_like_a_worker(prefect, run_id)
        responses = [f.result() for f in cancels]
    assert [r.status_code for r in responses] == [200] * 6, [r.text for r in responses]
    bodies = [r.json() for r in responses]
    assert all(b == bodies[0] for b in bodies)
    assert bodies[0]["status"] == "cancelled"
    assert asked == [run_id]  # one request to Prefect for the six cancels


@pytest.fixture
def two_handler_threads() -> Iterator[None]:
    """The pool that runs sync handlers, shrunk below the number of cancels that will wait."""
    with ThreadPoolExecutor(2, thread_name_prefix="handler") as executor:
        set_asyncio_executor(executor)
        try:
            yield
        finally:
            set_asyncio_executor(None)


def test_waiting_cancels_hold_no_worker_thread(
    client: TestClient, prefect: SyncPrefectClient, two_handler_threads: None
) -> None:
    with ThreadPoolExecutor(4) as pool:
        tasks = [_running_task(client, prefect) for _ in range(3)]
        cancels: list[Future[httpx.Response]] = [
            pool.submit(client.post, f"/tasks/{t['id']}/cancel") for t in tasks
        ]
        wait_for(
            "every run to be cancelling",
            lambda: all(
                run_state(prefect, t["workflowInstanceId"]) == "CANCELLING" for t in tasks
            ),
            60,
        )
        read = client.get(f"/tasks/{tasks[0]['id']}")
        # Served while the three cancels still wait for their runs to stop.
        assert read.status_code == 200
        assert not any(f.done() for f in cancels)
        for t in tasks:
            _stop_like_a_worker(prefect, t["workflowInstanceId"])
        wait(cancels)
    assert [f.result().json()["status"] for f in cancels] == ["cancelled"] * 3


def test_cancel_removes_the_attempts_folder_only_once_its_run_stopped(
    client: TestClient, prefect: SyncPrefectClient, settings: Settings, tmp_path: Path
) -> None:
    store = build_store(settings.storage)
    blob = tmp_path / "partial.mp3"
    blob.write_bytes(b"partial output")

    def partial_output(task: dict[str, Any]) -> str:
        key = f"{attempt_prefix(EPISODE, task['id'], 'a1')}audio/mp3_64.mp3"
        store.put_file(key, blob)
        return key

    # No worker ever stops this run: the cancel answers after its wait and leaves the
    # folder, which a live run could still be writing to.
    stuck = _running_task(client, prefect)
    stuck_key = partial_output(stuck)
    service = client.app.state.services.tasks
    cancelled = asyncio.run(service.cancel(uuid.UUID(stuck["id"]), wait_s=1.0))
    assert cancelled.status is TaskStatus.CANCELLED
    assert run_state(prefect, stuck["workflowInstanceId"]) == "CANCELLING"
    assert store.exists(stuck_key)

    # A run that stops: its attempt's folder is removed, the other task's stays.
    stopped = _running_task(client, prefect)
    stopped_key = partial_output(stopped)
    with ThreadPoolExecutor(1) as pool:
        answer = pool.submit(client.post, f"/tasks/{stopped['id']}/cancel")
        _stop_like_a_worker(prefect, stopped["workflowInstanceId"])
        assert answer.result().status_code == 200, answer.result().text
    assert not store.exists(stopped_key)
    assert store.exists(stuck_key)
