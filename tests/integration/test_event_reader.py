"""The event streams' read of the log (`EventReader.read`), which every open stream makes at
each wake-up: on PostgreSQL one statement on the autocommit pool (no ping, no transaction),
and a connection the server dropped costs one retry, not the stream."""

from __future__ import annotations

from typing import Any

from sqlalchemy import event, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import QueuePool

from db.engine import autocommit_engine
from db.models import Task, TaskStatus, Workflow, WorkflowStatus
from domain.event_stream import EventFilter, EventReader
from domain.workflows import ProgressUpdate, WorkflowService


def _task_with_events(factory: sessionmaker[Session]) -> Task:
    """A task whose workflow reported `running` (a status event) and then progress."""
    with factory.begin() as session:
        task = Task(type="audio_processing", status=TaskStatus.PENDING, episode_id="ep-reader",
                    payload={"episodeId": "ep-reader"})
        session.add(task)
        session.flush()
        workflow = Workflow(name="audio-processing",
                            deployment_name="audio-processing/audio-processing",
                            task_id=task.id, attempt=1, status=WorkflowStatus.QUEUED,
                            progress=0, parameters={}, corrections=[])
        session.add(workflow)
        session.flush()
        task.workflow_id = workflow.id
    service = WorkflowService(factory)
    service.apply_progress(ProgressUpdate(task.id, workflow.id, status=WorkflowStatus.RUNNING))
    service.apply_progress(ProgressUpdate(task.id, workflow.id, progress=40, step="encode"))
    return task


def test_on_postgresql_a_read_is_one_statement_on_the_autocommit_pool(
    session_factory: sessionmaker[Session],
) -> None:
    task = _task_with_events(session_factory)
    reader = EventReader(session_factory)
    main = session_factory.kw["bind"]
    hot = autocommit_engine(main)
    assert hot is not None
    statements: list[str] = []
    main_checkouts: list[Any] = []
    listener = lambda *args: statements.append(args[2])  # noqa: E731 (conn, cursor, statement, ...)
    checkout = lambda *args: main_checkouts.append(args)  # noqa: E731
    event.listen(hot, "before_cursor_execute", listener)
    event.listen(main.pool, "checkout", checkout)
    try:
        events = reader.read(EventFilter(task_id=task.id))
    finally:
        event.remove(hot, "before_cursor_execute", listener)
        event.remove(main.pool, "checkout", checkout)
    assert [(e.type, e.data["status"]) for e in events] == [
        ("task.processing", "processing"),
        ("task.progress", "processing"),
    ]
    assert events[1].data["progress"] == 40
    assert len(statements) == 1 and statements[0].lstrip().upper().startswith("SELECT")
    assert main_checkouts == []  # the pre-pinged pool is not touched


def test_on_postgresql_a_read_survives_the_server_dropping_its_connections(
    session_factory: sessionmaker[Session],
) -> None:
    task = _task_with_events(session_factory)
    reader = EventReader(session_factory)
    assert len(reader.read(EventFilter(task_id=task.id))) == 2  # the pool is warm
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
    events = reader.read(EventFilter(task_id=task.id))
    assert [e.type for e in events] == ["task.processing", "task.progress"]
    assert disconnects == [True]  # the dead connection was hit once, then the read retried
