"""A run the database has given up on is ended in Prefect too, before any retry starts;
a run waiting for a transcription slot is waiting, not stale. Real Prefect server, PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
from litestar.testing import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.states import Pending, Running
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.concurrency import TRANSCRIPTION_TAG, tag_limit_name
from core.settings import Settings
from core.storage import build_store
from db.base import utcnow
from db.models import Workflow
from domain import prefect_gateway
from domain.reconciler import Reconciler
from flows.steps.transcription import transcribe_source
from tests.integration.conftest import AUTH, create_task
from tests.support.prefect_runs import live_runs

PAYLOAD = {"episodeId": "ep-given-up", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_64"]}


def _running_and_stale(
    client: TestClient,
    prefect: SyncPrefectClient,
    session_factory: sessionmaker[Session],
) -> dict[str, Any]:
    """A task whose run is Running in Prefect and whose row has not moved for 5 minutes."""
    task = create_task(client, PAYLOAD)
    body = {"taskId": task["id"], "workflowId": task["workflowId"], "status": "running"}
    assert client.post("/internal/workflow-progress", json=body, headers=AUTH).status_code == 200
    prefect.set_flow_run_state(uuid.UUID(task["workflowInstanceId"]), Running(), force=True)
    with session_factory.begin() as session:
        session.execute(
            update(Workflow)
            .where(Workflow.id == uuid.UUID(task["workflowId"]))
            .values(updated_at=utcnow() - timedelta(minutes=5))
        )
    return task


def test_a_stale_run_is_ended_in_prefect_before_its_retry_starts(
    client: TestClient,
    prefect: SyncPrefectClient,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    task = _running_and_stale(client, prefect, session_factory)
    reconciler = Reconciler(
        session_factory, settings, build_store(settings.storage), stale_after_s=60, retry_base_s=0
    )
    report = reconciler.reconcile()
    assert [c.to_status for c in report.corrections] == ["crashed"]
    state = prefect.read_flow_run(uuid.UUID(task["workflowInstanceId"])).state
    assert state is not None and state.type.value == "CRASHED"

    assert len(reconciler.retry_transient_failures().retries) == 1
    row = client.get(f"/tasks/{task['id']}").json()
    assert row["attempts"] == 2
    assert live_runs(prefect, task["id"]) == [row["workflowInstanceId"]]  # never two


def test_if_prefect_cannot_end_the_run_the_row_stays_and_no_retry_starts(
    client: TestClient,
    prefect: SyncPrefectClient,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    task = _running_and_stale(client, prefect, session_factory)
    # Reads reach Prefect; the write that would end the run does not (a dead address).
    dead = replace(settings, prefect=replace(settings.prefect, api_url="http://127.0.0.1:9/api"))
    reconciler = Reconciler(
        session_factory,
        dead,
        build_store(settings.storage),
        read_flow_run=lambda _url, run_id: prefect_gateway.read_flow_run(
            settings.prefect.api_url, run_id
        ),
        waits_for_slot=lambda *_: False,
        stale_after_s=60,
        retry_base_s=0,
    )
    report = reconciler.reconcile()
    assert report.corrections == []
    assert any("could not end its flow run" in s for s in report.skipped)
    row = client.get(f"/tasks/{task['id']}").json()
    assert row["status"] == "processing" and row["attempts"] == 1
    assert reconciler.retry_transient_failures().retries == []
    assert live_runs(prefect, task["id"]) == [task["workflowInstanceId"]]


@pytest.fixture
def transcription_slots_taken(prefect: SyncPrefectClient) -> Iterator[None]:
    """Every slot of the transcription limit held, as by other runs' transcriptions."""
    limit = prefect.read_global_concurrency_limit_by_name(tag_limit_name(TRANSCRIPTION_TAG))
    response = prefect.increment_concurrency_slots_with_lease(
        names=[limit.name], slots=limit.limit, mode="concurrency", lease_duration=600
    )
    lease_id = uuid.UUID(response.json()["lease_id"])
    try:
        yield
    finally:
        prefect.release_concurrency_slots_with_lease(lease_id)


def test_a_run_waiting_for_a_transcription_slot_is_not_stale(
    client: TestClient,
    prefect: SyncPrefectClient,
    settings: Settings,
    session_factory: sessionmaker[Session],
    transcription_slots_taken: None,
) -> None:
    task = _running_and_stale(client, prefect, session_factory)
    run_id = uuid.UUID(task["workflowInstanceId"])
    # The transcribe step of this run, held before it starts by the full limit.
    prefect.create_task_run(transcribe_source, run_id, dynamic_key="0", state=Pending())
    reconciler = Reconciler(
        session_factory, settings, build_store(settings.storage), stale_after_s=60
    )
    assert reconciler.reconcile().corrections == []
    assert client.get(f"/tasks/{task['id']}").json()["status"] == "processing"
    state = prefect.read_flow_run(run_id).state
    assert state is not None and state.type.value == "RUNNING"


def test_a_pending_tagged_step_without_a_full_limit_does_not_hide_a_dead_run(
    client: TestClient,
    prefect: SyncPrefectClient,
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    """A process that died while its step was Pending holds no slot: the run is stale."""
    task = _running_and_stale(client, prefect, session_factory)
    run_id = uuid.UUID(task["workflowInstanceId"])
    prefect.create_task_run(transcribe_source, run_id, dynamic_key="0", state=Pending())
    reconciler = Reconciler(
        session_factory, settings, build_store(settings.storage), stale_after_s=60
    )
    assert [c.to_status for c in reconciler.reconcile().corrections] == ["crashed"]
