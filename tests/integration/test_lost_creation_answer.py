"""Retry finds a flow run whose creation answer was lost (by its idempotency key) instead of
starting a second one. Real Prefect server behind a TCP proxy that lets requests through
and loses the answers; PostgreSQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace

import pytest
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.states import Failed
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from core.storage import build_store
from db.models import TaskStatus, WorkflowStatus
from domain.composition import build_services
from domain.dispatch import idempotency_key_for
from domain.reconciler import Reconciler
from domain.tasks import TaskService
from domain.workflows import ProgressUpdate, WorkflowService
from tests.support.prefect_runs import live_runs
from tests.support.tcp_proxy import TcpProxy, tcp_proxy

PAYLOAD = {"episodeId": "ep-lost", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_64"]}


@pytest.fixture
def proxy(settings: Settings) -> Iterator[TcpProxy]:
    base = settings.prefect.api_url.rsplit("/api", 1)[0]
    with tcp_proxy(base) as running:
        yield running


def _failed_attempt(
    service: TaskService, session_factory: sessionmaker[Session], prefect: SyncPrefectClient
) -> uuid.UUID:
    """A task whose first attempt ran and failed transiently (here and in Prefect)."""
    task = service.create_task("audio_processing", PAYLOAD).task
    assert task.workflow_id is not None
    task = service.dispatcher.dispatch(task.workflow_id)
    assert task.workflow_instance_id and task.workflow_id
    prefect.set_flow_run_state(uuid.UUID(task.workflow_instance_id), Failed(), force=True)
    WorkflowService(session_factory).apply_progress(
        ProgressUpdate(
            task_id=task.id,
            workflow_id=task.workflow_id,
            status=WorkflowStatus.FAILED,
            error="storage down",
            error_kind="transient",
        )
    )
    return task.id


@pytest.mark.parametrize("second_try", ["api", "reconciler"])
def test_a_retry_whose_answer_was_lost_is_found_not_started_twice(
    settings: Settings,
    session_factory: sessionmaker[Session],
    proxy: TcpProxy,
    prefect: SyncPrefectClient,
    second_try: str,
) -> None:
    proxied = replace(settings, prefect=replace(settings.prefect, api_url=f"{proxy.url}/api"))
    service = build_services(proxied, session_factory=session_factory).tasks
    task_id = _failed_attempt(service, session_factory, prefect)

    proxy.lose_answers = True
    lost = service.retry(task_id)
    proxy.lose_answers = False
    # Prefect created attempt 2's run; the API never heard of it.
    assert lost.status is TaskStatus.FAILED and lost.error_kind == "transient"
    assert lost.workflow_instance_id is None and lost.attempts == 2
    created = prefect.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"task:{task_id}"]))
    )
    key = idempotency_key_for(settings.prefect.audio_deployment, task_id, 2)
    (orphan,) = [r for r in created if r.idempotency_key == key]

    if second_try == "api":
        again = service.retry(task_id)
    else:  # the reprocessing run's automatic retry of a transient failure
        reconciler = Reconciler(
            session_factory, proxied, build_store(settings.storage), retry_base_s=0
        )
        assert len(reconciler.retry_transient_failures().retries) == 1
        again = service.get(task_id)
    assert again.attempts == 2, "a second run was started instead of finding the first"
    assert again.status is TaskStatus.PENDING
    assert again.workflow_instance_id == str(orphan.id)
    assert live_runs(prefect, task_id) == [str(orphan.id)]
