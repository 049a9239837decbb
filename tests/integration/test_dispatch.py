"""The flow-run outbox (`domain.dispatch`), on PostgreSQL and SQLite, against real Prefect.

`POST /tasks` only commits rows; these tests drive the dispatcher that creates the flow
runs behind it: in order, once each, through a Prefect outage, after a crash, and when a
task is cancelled before or while its run is created.
"""

from __future__ import annotations

import asyncio
import threading
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from datetime import timedelta
from typing import Any

from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.errors import UpstreamUnavailableError
from core.settings import Settings
from db.base import utcnow
from db.models import TaskStatus, Workflow, WorkflowStatus
from domain import prefect_gateway
from domain.composition import build_services
from domain.dispatch import FlowRunDispatcher
from domain.tasks import TaskService
from tests.support.waiting import wait_for

PAYLOAD = {"episodeId": "ep-dispatch", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_64"]}


def _service(factory: sessionmaker[Session], settings: Settings, **kwargs: Any) -> TaskService:
    """A TaskService whose dispatcher thread is not running: the test drives it."""
    return build_services(settings, session_factory=factory, **kwargs).tasks


def _create(service: TaskService, episode: str = "ep-dispatch") -> uuid.UUID:
    task = service.create_task("audio_processing", PAYLOAD | {"episodeId": episode}).task
    assert task.status is TaskStatus.PENDING and task.workflow_instance_id is None
    return task.id


def _runs_for(prefect: SyncPrefectClient, task_id: uuid.UUID) -> list[Any]:
    return list(
        prefect.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"task:{task_id}"]))
        )
    )


def _drain(dispatcher: FlowRunDispatcher) -> int:
    count = 0
    while dispatcher.dispatch_due():
        count += 1
    return count


def test_create_commits_rows_and_the_dispatcher_starts_runs_in_order(
    factory: sessionmaker[Session], settings: Settings, prefect: SyncPrefectClient
) -> None:
    started: list[str] = []

    def recording(*args: Any, **kwargs: Any) -> prefect_gateway.FlowRunInfo:
        started.append(args[2]["params"]["task_id"])
        return prefect_gateway.start_flow_run(*args, **kwargs)

    service = _service(factory, settings, start_flow_run=recording)
    ids = [_create(service, f"ep-order-{n}") for n in range(3)]
    assert all(_runs_for(prefect, i) == [] for i in ids)  # nothing in Prefect yet

    assert _drain(service.dispatcher) == 3
    assert started == [str(i) for i in ids]  # oldest first
    for task_id in ids:
        task = service.get(task_id)
        (run,) = _runs_for(prefect, task_id)
        assert task.workflow_instance_id == str(run.id)
        assert service.get(task_id).status is TaskStatus.PENDING
        with factory() as session:
            workflow = session.get(Workflow, task.workflow_id)
            assert workflow is not None
            assert workflow.instance_id == str(run.id) and workflow.dispatch_after is None
        assert run.parameters["params"]["workflow_id"] == str(task.workflow_id)
    assert not service.dispatcher.dispatch_due()  # nothing left


def test_prefect_outage_backs_off_then_dispatches(
    factory: sessionmaker[Session], settings: Settings, prefect: SyncPrefectClient
) -> None:
    down = threading.Event()
    down.set()

    def flaky(*args: Any, **kwargs: Any) -> prefect_gateway.FlowRunInfo:
        if down.is_set():
            raise UpstreamUnavailableError("Prefect API unreachable: ConnectError")
        return prefect_gateway.start_flow_run(*args, **kwargs)

    service = _service(factory, settings, start_flow_run=flaky)
    task_id = _create(service)
    assert service.dispatcher.dispatch_due()  # tried, failed, backed off
    task = service.get(task_id)
    assert task.status is TaskStatus.PENDING and task.workflow_instance_id is None
    with factory() as session:
        workflow = session.get(Workflow, task.workflow_id)
        assert workflow is not None
        assert workflow.status is WorkflowStatus.QUEUED
        assert workflow.message is not None and "waiting for Prefect" in workflow.message
        assert workflow.dispatch_after is not None and workflow.dispatch_after > utcnow()
    assert not service.dispatcher.dispatch_due()  # not due again before its back-off

    down.clear()  # Prefect is back; make the row due rather than wait out the back-off
    with factory.begin() as session:
        session.execute(
            update(Workflow).where(Workflow.id == task.workflow_id).values(dispatch_after=None)
        )
    assert service.dispatcher.dispatch_due()
    (run,) = _runs_for(prefect, task_id)
    assert service.get(task_id).workflow_instance_id == str(run.id)


def test_past_the_deadline_the_attempt_fails_as_transient(
    factory: sessionmaker[Session], settings: Settings
) -> None:
    dead = replace(
        settings,
        prefect=replace(settings.prefect, api_url="http://127.0.0.1:9/api", dispatch_deadline_s=0),
    )
    service = _service(factory, dead)
    task_id = _create(service)
    assert service.dispatcher.dispatch_due()
    task = service.get(task_id)
    assert task.status is TaskStatus.FAILED and task.error_kind == "transient"
    assert task.error is not None and "could not start the flow run" in task.error
    assert not service.dispatcher.dispatch_due()  # a failed workflow is never dispatched


def test_cancelled_before_dispatch_never_gets_a_run(
    factory: sessionmaker[Session], settings: Settings, prefect: SyncPrefectClient
) -> None:
    service = _service(factory, settings)
    task_id = _create(service)
    assert asyncio.run(service.cancel(task_id)).status is TaskStatus.CANCELLED
    assert not service.dispatcher.dispatch_due()
    assert _runs_for(prefect, task_id) == []


def test_cancelled_while_its_run_is_created_the_run_is_cancelled(
    factory: sessionmaker[Session], settings: Settings, prefect: SyncPrefectClient
) -> None:
    """The race the outbox opens: the client cancels while Prefect is creating the run."""
    holder: dict[str, TaskService] = {}

    def cancel_meanwhile(*args: Any, **kwargs: Any) -> prefect_gateway.FlowRunInfo:
        info = prefect_gateway.start_flow_run(*args, **kwargs)
        task_id = uuid.UUID(args[2]["params"]["task_id"])
        asyncio.run(holder["service"].cancel(task_id))  # lands first
        return info

    service = holder["service"] = _service(factory, settings, start_flow_run=cancel_meanwhile)
    task_id = _create(service)
    assert service.dispatcher.dispatch_due()
    task = service.get(task_id)
    assert task.status is TaskStatus.CANCELLED
    (run,) = _runs_for(prefect, task_id)
    assert run.state is not None and run.state.type.value == "CANCELLED"
    with factory() as session:
        workflow = session.get(Workflow, task.workflow_id)
        assert workflow is not None and workflow.instance_id == str(run.id)  # for the UI link


def test_a_claim_left_by_a_dead_dispatcher_is_taken_after_its_lease(
    factory: sessionmaker[Session], settings: Settings, prefect: SyncPrefectClient
) -> None:
    service = _service(factory, settings)
    task_id = _create(service)
    workflow_id = service.get(task_id).workflow_id
    claimed = service.dispatcher._claim()  # a dispatcher claims the row, then dies
    assert claimed == workflow_id
    assert not service.dispatcher.dispatch_due()  # leased: nobody else takes it
    with factory.begin() as session:  # the lease runs out
        session.execute(
            update(Workflow)
            .where(Workflow.id == workflow_id)
            .values(dispatch_after=utcnow() - timedelta(seconds=1))
        )
    assert service.dispatcher.dispatch_due()
    assert len(_runs_for(prefect, task_id)) == 1


def test_two_dispatchers_share_the_rows_and_start_each_run_once(
    session_factory: sessionmaker[Session], settings: Settings, prefect: SyncPrefectClient
) -> None:
    """Two API processes' dispatchers on PostgreSQL: SKIP LOCKED claims, one run per task."""
    service = _service(session_factory, settings)
    ids = [_create(service, f"ep-pair-{n}") for n in range(12)]
    first = FlowRunDispatcher(session_factory, settings)
    second = FlowRunDispatcher(session_factory, settings)
    with ThreadPoolExecutor(max_workers=2) as pool:
        counts = list(pool.map(_drain, [first, second]))
    assert sum(counts) == 12, counts
    for task_id in ids:
        (run,) = _runs_for(prefect, task_id)
        assert service.get(task_id).workflow_instance_id == str(run.id)


def test_the_thread_dispatches_rows_committed_while_no_api_ran(
    factory: sessionmaker[Session], settings: Settings, prefect: SyncPrefectClient
) -> None:
    """Rows left by a stopped API process are picked up when a dispatcher starts."""
    service = _service(factory, settings)
    left = _create(service, "ep-left")
    dispatcher = FlowRunDispatcher(factory, settings, poll_s=0.2)
    dispatcher.start()
    try:
        wait_for("the left-over task's run", lambda: service.get(left).workflow_instance_id, 30)
        fresh = _create(service, "ep-fresh")
        dispatcher.notify()
        wait_for("the new task's run", lambda: service.get(fresh).workflow_instance_id, 30)
    finally:
        dispatcher.stop()
    assert len(_runs_for(prefect, left)) == 1 and len(_runs_for(prefect, fresh)) == 1
