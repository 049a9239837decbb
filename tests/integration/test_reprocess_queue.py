"""`POST /reprocess` (case 4 of issue 10): a repeat returns the queued run, and the runs
waiting to start are bounded. Real Prefect server with no worker, so runs stay queued."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from litestar.testing import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
)
from prefect.client.schemas.objects import StateType
from prefect.states import Running
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import Settings


def _queued(prefect: SyncPrefectClient) -> list[str]:
    runs = prefect.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            tags=FlowRunFilterTags(all_=["reprocessing", "on-demand"]),
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
            ),
        )
    )
    return [str(r.id) for r in runs]


@pytest.fixture
def empty_queue(prefect: SyncPrefectClient) -> Iterator[None]:
    """No on-demand reprocessing run waiting (other tests of the session leave some)."""
    for run_id in _queued(prefect):
        prefect.delete_flow_run(uuid.UUID(run_id))
    yield
    for run_id in _queued(prefect):
        prefect.delete_flow_run(uuid.UUID(run_id))


@pytest.fixture
def small_queue_client(
    settings: Settings, session_factory: sessionmaker[Session], empty_queue: None
) -> Iterator[TestClient]:
    bounded = replace(settings, prefect=replace(settings.prefect, reprocess_queue_max=3))
    with TestClient(app=create_app(bounded, session_factory=session_factory)) as client:
        yield client


def test_the_same_parameters_return_the_queued_run(
    client: TestClient, prefect: SyncPrefectClient, empty_queue: None
) -> None:
    body = {"status": "failed", "createdAfter": "2026-01-01T00:00:00Z", "dryRun": True}
    first = client.post("/reprocess", json=body)
    assert first.status_code == 201, first.text
    again = client.post("/reprocess", json=body)
    assert again.status_code == 200, again.text
    assert again.json()["flowRunId"] == first.json()["flowRunId"]
    assert _queued(prefect) == [first.json()["flowRunId"]]
    other = client.post("/reprocess", json={**body, "dryRun": False})
    assert other.status_code == 201 and other.json()["flowRunId"] != first.json()["flowRunId"]


def test_many_requests_queue_a_bounded_number_of_runs(
    small_queue_client: TestClient, prefect: SyncPrefectClient
) -> None:
    """What the fuzzer did: every call with new parameters used to queue another run."""
    answers = [
        small_queue_client.post("/reprocess", json={"limit": n, "dryRun": True})
        for n in range(1, 13)
    ]
    assert [a.status_code for a in answers] == [201] * 3 + [429] * 9
    refused = answers[-1]
    assert refused.headers["Retry-After"].isdigit()
    assert "AUDIOFLOW_REPROCESS_QUEUE_MAX" in refused.json()["detail"]
    queued = _queued(prefect)
    assert sorted(queued) == sorted(a.json()["flowRunId"] for a in answers[:3])

    # A run that starts leaves the queue: there is room for one more.
    prefect.set_flow_run_state(uuid.UUID(queued[0]), Running(), force=True)
    assert small_queue_client.post("/reprocess", json={"limit": 99}).status_code == 201
    assert small_queue_client.post("/reprocess", json={"limit": 98}).status_code == 429
