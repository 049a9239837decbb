"""The task event log: status changes appended, progress kept as the latest value, in the
transaction (or the one statement) of the change, on PostgreSQL and on SQLite."""

from __future__ import annotations

import json
import select as io_select
import uuid
from dataclasses import replace
from typing import Any

import pytest
from sqlalchemy import create_engine
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from core.errors import ConflictError
from core.settings import Settings
from db.models import PROGRESS_EVENT, Task, TaskEvent, TaskStatus, WorkflowStatus
from db.repositories import TaskEventRepository
from domain.composition import build_services
from domain.events import NOTIFY_CHANNEL, WEBHOOK_EVENT_TYPES, EventLog
from domain.views import task_view
from domain.workflows import ProgressUpdate, WorkflowService
from tests.support.rows import pending_task


def _events(factory: sessionmaker[Session], task_id: uuid.UUID) -> list[TaskEvent]:
    return EventLog(factory).after(0, task_id=task_id)


def test_a_task_life_is_logged_in_order_with_the_task_as_get_shows_it(
    factory: sessionmaker[Session],
) -> None:
    service = WorkflowService(factory)
    log = EventLog(factory)
    task, workflow = pending_task(factory)
    other, other_workflow = pending_task(factory)
    start = log.last_id()

    service.apply_progress(ProgressUpdate(task.id, workflow.id, progress=3, step="download"))
    (progress,) = _events(factory, task.id)
    assert progress.type == PROGRESS_EVENT
    assert progress.data == {
        "taskId": str(task.id),
        "status": "pending",
        "progress": 3,
        "currentStep": "download",
        "message": None,
    }

    _, running_task = service.apply_progress(
        ProgressUpdate(task.id, workflow.id, status=WorkflowStatus.RUNNING)
    )
    service.apply_progress(
        ProgressUpdate(task.id, workflow.id, progress=40, step="encode", message="mp3")
    )
    service.apply_progress(ProgressUpdate(other.id, other_workflow.id, progress=1))
    _, done_task = service.apply_progress(
        ProgressUpdate(
            task.id, workflow.id, status=WorkflowStatus.COMPLETED, result={"outputs": {}}
        )
    )

    events = _events(factory, task.id)
    assert [e.type for e in events] == ["task.processing", "task.progress", "task.done"]
    ids = [e.id for e in events]
    assert ids == sorted(ids) and ids[0] > start
    # The progress row was rewritten with a new id (one per task), not appended.
    assert events[1].id > progress.id
    assert events[1].data["progress"] == 40 and events[1].data["status"] == "processing"
    assert events[1].data["message"] == "mp3"
    # Status events carry the task as GET /tasks/{id} shows it, once committed.
    assert events[0].data == task_view(running_task)
    assert events[2].data == task_view(done_task) == task_view(service_task(factory, task.id))
    assert events[2].data["status"] == "done" and events[2].data["result"] == {"outputs": {}}
    assert {e.type for e in events if e.type != PROGRESS_EVENT} <= WEBHOOK_EVENT_TYPES

    # All tasks, after an id: the other task's progress sits between, in id order.
    everything = log.after(start)
    assert [(e.task_id, e.type) for e in everything] == [
        (task.id, "task.processing"),
        (task.id, "task.progress"),
        (other.id, "task.progress"),
        (task.id, "task.done"),
    ]
    assert [e.id for e in everything] == sorted(e.id for e in everything)
    assert log.after(events[-1].id, task_id=task.id) == []


def test_on_postgresql_a_plain_report_takes_one_id(
    session_factory: sessionmaker[Session],
) -> None:
    """The progress upsert draws one id per report: the identity's default drew one before
    the conflict was found and the update another, so every other id was never used, and
    the event hub's poll kept asking again for each of them as a possible late commit."""
    service = WorkflowService(session_factory)
    log = EventLog(session_factory)
    task, workflow = pending_task(session_factory)
    service.apply_progress(ProgressUpdate(task.id, workflow.id, progress=1))
    first = log.last_id()
    for progress in range(2, 7):
        service.apply_progress(ProgressUpdate(task.id, workflow.id, progress=progress))
    (row,) = _events(session_factory, task.id)
    assert (row.id, row.data["progress"]) == (first + 5, 6)


def service_task(factory: sessionmaker[Session], task_id: uuid.UUID) -> Task:
    with factory() as session:
        return session.get_one(Task, task_id)


def test_refused_changes_and_older_attempts_log_nothing(factory: sessionmaker[Session]) -> None:
    service = WorkflowService(factory)
    task, workflow = pending_task(factory)
    service.apply_progress(ProgressUpdate(task.id, workflow.id, status=WorkflowStatus.CANCELLED))
    before = _events(factory, task.id)
    assert [e.type for e in before] == ["task.cancelled"]
    for refused in (
        ProgressUpdate(task.id, workflow.id, status=WorkflowStatus.RUNNING),
        ProgressUpdate(task.id, workflow.id, progress=50),  # the hot path matches nothing
    ):
        with pytest.raises(ConflictError):  # a terminal status is final
            service.apply_progress(refused)
    assert [e.id for e in _events(factory, task.id)] == [e.id for e in before]


def test_corrections_log_the_status_they_make(factory: sessionmaker[Session]) -> None:
    service = WorkflowService(factory)
    task, workflow = pending_task(factory)
    service.apply_progress(ProgressUpdate(task.id, workflow.id, status=WorkflowStatus.RUNNING))
    corrected = service.correct(
        workflow.id, WorkflowStatus.CRASHED, "lost", error="gone", error_kind="transient"
    )
    assert corrected is not None
    events = _events(factory, task.id)
    assert [e.type for e in events] == ["task.processing", "task.failed"]
    assert events[-1].data["errorKind"] == "transient" and events[-1].data["error"] == "gone"


def test_on_postgresql_status_events_are_notified_at_commit_and_progress_is_not(
    session_factory: sessionmaker[Session],
) -> None:
    """Migration 0006: a progress report sends no NOTIFY (a notifying commit holds a
    database-wide lock through its WAL flush; event streams poll for progress). A progress
    notification, committed first, would arrive before the status event's."""
    service = WorkflowService(session_factory)
    task, workflow = pending_task(session_factory)
    # A connection of its own, closed at the end: one of the pool's, left in autocommit and
    # listening, would turn later tests' transactions into single statements (their `FOR
    # UPDATE` locks gone at once).
    own = create_engine(session_factory.kw["bind"].url, poolclass=NullPool)
    listener: Any = own.raw_connection()
    try:
        listener.dbapi_connection.autocommit = True
        with listener.cursor() as cursor:
            cursor.execute(f"LISTEN {NOTIFY_CHANNEL}")
        service.apply_progress(ProgressUpdate(task.id, workflow.id, progress=9))
        service.apply_progress(ProgressUpdate(task.id, workflow.id, status=WorkflowStatus.RUNNING))
        received: list[dict[str, object]] = []
        raw = listener.dbapi_connection
        while not received:
            ready, _, _ = io_select.select([raw], [], [], 10)
            assert ready, f"no notification; got {received}"
            raw.poll()
            while raw.notifies:
                received.append(json.loads(raw.notifies.pop(0).payload))
    finally:
        listener.close()
        own.dispose()
    events = _events(session_factory, task.id)
    assert [e.type for e in events] == ["task.progress", "task.processing"]
    status = events[1]
    assert received == [{"id": status.id, "taskId": str(task.id), "type": "task.processing"}]
    with session_factory() as session:
        assert TaskEventRepository(session).last_id() == max(e.id for e in events)


def test_a_flow_run_that_cannot_be_created_logs_the_failure(
    base_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """The dispatcher's write: Prefect unreachable (no URL), the attempt fails at once."""
    unreachable = replace(base_settings, prefect=replace(base_settings.prefect, api_url=""))
    services = build_services(unreachable, session_factory=session_factory)
    task = services.tasks.create_task(
        "audio_processing",
        {"episodeId": "ep-events", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_64"]},
    ).task
    assert task.workflow_id is not None
    failed = services.dispatcher.dispatch(task.workflow_id)
    assert failed.status is TaskStatus.FAILED
    (event,) = _events(session_factory, task.id)  # creation itself logs nothing
    assert event.type == "task.failed" and event.data == task_view(failed)
    assert event.data["errorKind"] == "transient"
