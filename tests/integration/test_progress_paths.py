"""The progress endpoint's two paths agree, on PostgreSQL and on SQLite.

Plain reports (step, message, percentage) take a single `UPDATE ... RETURNING` per row;
everything else (status changes, results, errors, unknown or finished workflows) takes the
general path with row locks. These tests drive both through `WorkflowService` on both
databases and check the rows they leave behind.
"""

from __future__ import annotations

import uuid

import pytest
from sqlalchemy import event, text, update
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from core.errors import ConflictError, NotFoundError
from db.engine import autocommit_engine
from db.models import Task, TaskStatus, Workflow, WorkflowStatus
from domain import lifecycle
from domain.lifecycle import Writer
from domain.workflows import ProgressUpdate, WorkflowService


def _task_with_attempts(
    factory: sessionmaker[Session], attempts: int
) -> tuple[Task, list[Workflow]]:
    """A task with `attempts` workflows; the last one is current."""
    with factory.begin() as session:
        task = Task(
            type="audio_processing",
            status=TaskStatus.PENDING,
            episode_id="ep-paths",
            payload={"episodeId": "ep-paths"},
        )
        session.add(task)
        session.flush()
        workflows = []
        for attempt in range(1, attempts + 1):
            workflow = Workflow(
                name="audio-processing",
                deployment_name="audio-processing/audio-processing",
                task_id=task.id,
                attempt=attempt,
                status=WorkflowStatus.QUEUED,
                progress=0,
                parameters={},
                corrections=[],
            )
            session.add(workflow)
            session.flush()
            workflows.append(workflow)
        task.workflow_id = workflows[-1].id
        task.attempts = attempts
    return task, workflows


def test_plain_reports_move_both_rows_and_never_lower_progress(
    factory: sessionmaker[Session],
) -> None:
    service = WorkflowService(factory)
    task, (workflow,) = _task_with_attempts(factory, 1)

    # Queued: a plain report moves the step but leaves the status to the running hook.
    queued, queued_task = service.apply_progress(
        ProgressUpdate(task.id, workflow.id, progress=5, step="download", message="a\x00b")
    )
    assert (queued.status, queued.progress, queued.current_step) == (
        WorkflowStatus.QUEUED,
        5,
        "download",
    )
    assert queued.message == "a\ufffdb"  # NUL cannot be stored in PostgreSQL text
    assert (queued_task.status, queued_task.progress) == (TaskStatus.PENDING, 5)

    running, running_task = service.apply_progress(
        ProgressUpdate(task.id, workflow.id, status=WorkflowStatus.RUNNING)
    )
    assert running.started_at is not None and running_task.status is TaskStatus.PROCESSING

    moved, _ = service.apply_progress(
        ProgressUpdate(task.id, workflow.id, progress=60, step="encode:mp3_128")
    )
    back, back_task = service.apply_progress(
        ProgressUpdate(task.id, workflow.id, progress=30, step="transcribe")
    )
    assert (moved.progress, back.progress, back.current_step) == (60, 60, "transcribe")
    assert (back_task.progress, back_task.current_step) == (60, "transcribe")
    assert back.updated_at >= moved.updated_at
    assert back_task.status is TaskStatus.PROCESSING
    assert back.message == "a\ufffdb"  # a report without a message keeps the last one
    note, note_task = service.apply_progress(
        ProgressUpdate(task.id, workflow.id, message="still going")
    )
    assert (note.progress, note.current_step, note.message) == (60, "transcribe", "still going")
    assert (note_task.progress, note_task.current_step) == (60, "transcribe")

    with factory() as session:
        stored_task = session.get_one(Task, task.id)
        stored = session.get_one(Workflow, workflow.id)
        assert (stored.progress, stored.current_step, stored.status) == (
            60,
            "transcribe",
            WorkflowStatus.RUNNING,
        )
        assert (stored_task.progress, stored_task.current_step) == (60, "transcribe")
        assert stored_task.started_at is not None


def test_reports_that_match_no_live_workflow_get_the_general_answers(
    factory: sessionmaker[Session],
) -> None:
    service = WorkflowService(factory)
    task, (old, current) = _task_with_attempts(factory, 2)
    other, (foreign,) = _task_with_attempts(factory, 1)

    # An older attempt's report updates that workflow only; the task follows the current one.
    old_row, task_row = service.apply_progress(ProgressUpdate(task.id, old.id, progress=40))
    assert old_row.progress == 40
    assert task_row.progress == 0 and task_row.workflow_id == current.id

    with pytest.raises(NotFoundError):
        service.apply_progress(ProgressUpdate(task.id, uuid.uuid4(), progress=1))
    with pytest.raises(NotFoundError):
        service.apply_progress(ProgressUpdate(uuid.uuid4(), foreign.id, progress=1))
    with pytest.raises(ConflictError):  # a workflow of another task
        service.apply_progress(ProgressUpdate(task.id, foreign.id, progress=1))

    service.apply_progress(ProgressUpdate(task.id, current.id, status=WorkflowStatus.RUNNING))
    service.apply_progress(ProgressUpdate(task.id, current.id, status=WorkflowStatus.COMPLETED))
    with pytest.raises(ConflictError):  # terminal is final, also for plain reports
        service.apply_progress(ProgressUpdate(task.id, current.id, progress=10, step="late"))

    with factory() as session:
        done = session.get_one(Workflow, current.id)
        assert (done.status, done.progress, done.current_step) == (
            WorkflowStatus.COMPLETED,
            100,
            None,
        )
        assert session.get_one(Task, task.id).status is TaskStatus.DONE
        untouched = session.get_one(Workflow, foreign.id)
        assert (untouched.progress, untouched.status) == (0, WorkflowStatus.QUEUED)
        assert session.get_one(Task, other.id).progress == 0


def test_on_postgresql_a_plain_report_is_one_statement_without_a_transaction(
    session_factory: sessionmaker[Session],
) -> None:
    """The hot path's shape, counted at the driver: one statement, autocommit, no ping."""
    service = WorkflowService(session_factory)
    task, (workflow,) = _task_with_attempts(session_factory, 1)
    hot = autocommit_engine(session_factory.kw["bind"])
    assert hot is not None
    statements: list[str] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731 (conn, cursor, statement, ...)
    event.listen(hot, "before_cursor_execute", listener)
    try:
        service.apply_progress(ProgressUpdate(task.id, workflow.id, progress=7, step="download"))
    finally:
        event.remove(hot, "before_cursor_execute", listener)
    assert len(statements) == 1, statements
    assert statements[0].lstrip().upper().startswith("WITH")
    with hot.connect() as conn:
        assert conn.connection.dbapi_connection.autocommit is True  # type: ignore[union-attr]


def test_on_postgresql_a_report_survives_the_server_dropping_its_connections(
    session_factory: sessionmaker[Session],
) -> None:
    """No pre-ping on the hot path: a connection killed by the server (a restart, a
    failover) fails once and the report is retried on a fresh one."""
    service = WorkflowService(session_factory)
    task, (workflow,) = _task_with_attempts(session_factory, 1)
    service.apply_progress(ProgressUpdate(task.id, workflow.id, progress=10))  # pool warm
    hot = autocommit_engine(session_factory.kw["bind"])
    assert hot is not None and isinstance(hot.pool, QueuePool) and hot.pool.checkedin() >= 1
    disconnects: list[bool] = []
    event.listen(hot, "handle_error", lambda ctx: disconnects.append(ctx.is_disconnect))
    with session_factory.kw["bind"].connect() as admin:
        killed = admin.execute(
            text(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                "WHERE datname = current_database() AND pid <> pg_backend_pid()"
            )
        ).scalar()
    assert killed and killed >= 1
    moved, moved_task = service.apply_progress(
        ProgressUpdate(task.id, workflow.id, progress=20, step="encode:mp3_128")
    )
    assert (moved.progress, moved_task.progress, moved.current_step) == (20, 20, "encode:mp3_128")
    assert disconnects == [True]  # the dead connection was hit once, then retried


def _set_status(factory: sessionmaker[Session], workflow: Workflow, status: WorkflowStatus) -> None:
    with factory.begin() as session:
        session.execute(
            update(Workflow).where(Workflow.id == workflow.id).values(status=status.value)
        )


@pytest.mark.parametrize("status", list(WorkflowStatus))
def test_a_plain_report_in_each_status_does_what_the_lifecycle_says(
    factory: sessionmaker[Session], status: WorkflowStatus
) -> None:
    """The hot path's SQL (PostgreSQL: one generated statement; SQLite: two) against the
    table: a plain report lands on the statuses a report may keep, and the task then shows
    the status the lifecycle maps them to; on any other it is refused and changes nothing."""
    service = WorkflowService(factory)
    task, (workflow,) = _task_with_attempts(factory, 1)
    _set_status(factory, workflow, status)
    report = ProgressUpdate(task.id, workflow.id, progress=12, step="encode:mp3_64")
    if lifecycle.allows(Writer.REPORT, status, status):
        moved, moved_task = service.apply_progress(report)
        assert (moved.status, moved.progress, moved.current_step) == (status, 12, "encode:mp3_64")
        assert moved_task.status is lifecycle.task_status_for(status)
        # A report that names the status it keeps takes the same path, with the same rows.
        named, named_task = service.apply_progress(
            ProgressUpdate(task.id, workflow.id, progress=13, status=status)
        )
        assert (named.status, named.progress, named_task.status) == (
            status,
            13,
            lifecycle.task_status_for(status),
        )
    else:
        with pytest.raises(ConflictError) as refused:
            service.apply_progress(report)
        assert refused.value.extra == {"status": status.value}  # what tells a flow to stop
    with factory() as session:
        stored_task = session.get_one(Task, task.id)
        stored = session.get_one(Workflow, workflow.id)
        assert stored.status is status
        if lifecycle.allows(Writer.REPORT, status, status):
            assert (stored.progress, stored_task.progress) == (13, 13)
            assert stored_task.status is lifecycle.task_status_for(status)
        else:
            assert (stored.progress, stored_task.progress) == (0, 0)


def test_writers_outside_the_table_are_refused_and_change_nothing(
    factory: sessionmaker[Session],
) -> None:
    service = WorkflowService(factory)
    task, (workflow,) = _task_with_attempts(factory, 1)
    # A cancel may cancel, nothing else.
    with pytest.raises(ConflictError):
        service.apply_progress(
            ProgressUpdate(task.id, workflow.id, status=WorkflowStatus.RUNNING),
            writer=Writer.CANCEL,
        )
    service.apply_progress(
        ProgressUpdate(task.id, workflow.id, status=WorkflowStatus.CANCELLED, error="by request"),
        writer=Writer.CANCEL,
    )
    # The reconciler may lift a terminal row to completed only: never cancelled -> crashed.
    with pytest.raises(ConflictError) as refused:
        service.correct(workflow.id, WorkflowStatus.CRASHED, "stale", error="presumed dead")
    assert "correction cannot make it crashed" in refused.value.detail
    with factory() as session:
        stored = session.get_one(Workflow, workflow.id)
        assert (stored.status, stored.error, stored.corrections) == (
            WorkflowStatus.CANCELLED,
            "by request",
            [],
        )
        assert session.get_one(Task, task.id).status is TaskStatus.CANCELLED
    corrected = service.correct(workflow.id, WorkflowStatus.COMPLETED, "Prefect: Completed")
    assert corrected is not None and corrected[1].status is TaskStatus.DONE
