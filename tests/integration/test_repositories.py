"""The repositories (advanced-alchemy's, with our settings) on PostgreSQL and SQLite: the
filters and pages the services and the reprocessing flow rely on, rows locked on request,
SQLAlchemy's own errors, and naive datetimes refused."""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import pytest
from sqlalchemy.exc import IntegrityError, StatementError
from sqlalchemy.orm import Session, sessionmaker

from db.models import Task, TaskStatus, Workflow, WorkflowStatus
from db.repositories import TaskRepository, WorkflowRepository
from domain.lifecycle import CORRECTABLE_TERMINAL_STATUSES, LIVE_WORKFLOW_STATUSES

T0 = datetime(2026, 11, 1, 12, 0, tzinfo=UTC)


def _task(at: datetime, **values: Any) -> Task:
    values.setdefault("type", "audio_processing")
    values.setdefault("status", TaskStatus.DONE)
    return Task(payload={}, created_at=at, updated_at=at, **values)


def _workflow(task: Task, attempt: int, at: datetime, **values: Any) -> Workflow:
    values.setdefault("status", WorkflowStatus.COMPLETED)
    return Workflow(
        name="audio-processing",
        deployment_name="audio-processing/default",
        task_id=task.id,
        attempt=attempt,
        parameters={},
        corrections=[],
        created_at=at,
        updated_at=at,
        **values,
    )


@pytest.fixture
def tasks(factory: sessionmaker[Session]) -> list[Task]:
    """Five tasks a minute apart (the last two made at the same instant), oldest first."""
    made = [
        _task(T0, episode_id="ep-a", status=TaskStatus.FAILED),
        _task(T0 + timedelta(minutes=1), episode_id="ep-b"),
        _task(T0 + timedelta(minutes=2), episode_id="ep-a", type="other"),
        _task(T0 + timedelta(minutes=3), episode_id="ep-c"),
        _task(T0 + timedelta(minutes=3), episode_id=None),
    ]
    with factory.begin() as session:
        for task in made:
            TaskRepository(session).add(task)
    return made


def _ids(found: tuple[list[Task], int]) -> tuple[list[uuid.UUID], int]:
    return [t.id for t in found[0]], found[1]


def _newest_first(made: list[Task]) -> list[uuid.UUID]:
    return [t.id for t in sorted(made, key=lambda t: (-t.created_at.timestamp(), t.id))]


def test_find_pages_newest_first_with_a_stable_order(
    factory: sessionmaker[Session], tasks: list[Task]
) -> None:
    expected = _newest_first(tasks)
    with factory() as session:
        repo = TaskRepository(session)
        assert _ids(repo.find()) == (expected, 5)
        pages = [repo.find(limit=2, offset=offset) for offset in (0, 2, 4)]
        assert [t.id for page, _ in pages for t in page] == expected
        assert [total for _, total in pages] == [5, 5, 5]
        # Past the end: no rows, and still the real total (a window-function count has none).
        assert repo.find(limit=2, offset=10) == ([], 5)


def test_find_filters(factory: sessionmaker[Session], tasks: list[Task]) -> None:
    oldest, second, third, fourth, fifth = tasks
    with factory() as session:
        repo = TaskRepository(session)
        assert _ids(repo.find(status=TaskStatus.FAILED)) == ([oldest.id], 1)
        assert _ids(repo.find(type_="other")) == ([third.id], 1)
        assert _ids(repo.find(episode_id="ep-a")) == ([third.id, oldest.id], 2)
        assert _ids(repo.find(episode_ids=["ep-b", "ep-c", "ep-x"])) == (
            [fourth.id, second.id],
            2,
        )
        assert _ids(repo.find(ids=[oldest.id, fifth.id])) == ([fifth.id, oldest.id], 2)
        assert repo.find(ids=[]) == ([], 0)
        # created_after is inclusive, created_before exclusive: adjacent windows share nothing.
        boundary = third.created_at
        after = repo.find(created_after=boundary)
        before = repo.find(created_before=boundary)
        assert _ids(after) == (_newest_first([third, fourth, fifth]), 3)
        assert _ids(before) == ([second.id, oldest.id], 2)
        assert _ids(repo.find(episode_id="ep-a", status=TaskStatus.DONE, created_after=T0)) == (
            [third.id],
            1,
        )
        # An aware time in another zone is the same instant.
        plus_two = timezone(timedelta(hours=2))
        assert _ids(repo.find(created_after=boundary.astimezone(plus_two))) == _ids(after)
        # No stored value holds NUL: such a filter matches nothing instead of failing.
        assert repo.find(episode_id="ep-a\x00") == ([], 0)
        assert _ids(repo.find(episode_ids=["ep-b", "\x00"])) == ([second.id], 1)


def test_get_one_or_none_locks_and_finds_by_key(factory: sessionmaker[Session]) -> None:
    with factory.begin() as session:
        task = TaskRepository(session).add(_task(T0, idempotency_key="key-1"))
    with factory.begin() as session:
        repo = TaskRepository(session)
        locked = repo.get_one_or_none(id=task.id, with_for_update=True)
        assert locked is not None and locked.id == task.id
        assert repo.get_one_or_none(id=uuid.uuid4()) is None
        found = repo.get_by_idempotency_key("key-1")
        assert found is not None and found.id == task.id
        assert repo.get_by_idempotency_key("key-2") is None


def test_add_raises_sqlalchemys_integrity_error(factory: sessionmaker[Session]) -> None:
    """`TaskService.create_task` catches SQLAlchemy's IntegrityError (the idempotency race):
    the library must not wrap it in its own exception type."""
    with factory.begin() as session:
        TaskRepository(session).add(_task(T0, idempotency_key="same"))
    with pytest.raises(IntegrityError), factory.begin() as session:
        TaskRepository(session).add(_task(T0, idempotency_key="same"))


def test_workflow_queries(factory: sessionmaker[Session]) -> None:
    since = T0 + timedelta(hours=1)
    with factory.begin() as session:
        task = TaskRepository(session).add(_task(T0))
        repo = WorkflowRepository(session)
        third = repo.add(_workflow(task, 3, since, status=WorkflowStatus.RUNNING))
        first = repo.add(
            _workflow(task, 1, T0, status=WorkflowStatus.FAILED, instance_id="run-old")
        )
        second = repo.add(
            _workflow(task, 2, since, status=WorkflowStatus.CRASHED, instance_id="run-2")
        )
        fourth = repo.add(
            _workflow(task, 4, since + timedelta(seconds=1), status=WorkflowStatus.CANCELLED)
        )
        fifth = repo.add(_workflow(task, 5, since, status=WorkflowStatus.COMPLETED))
        sixth = repo.add(
            _workflow(task, 6, since, status=WorkflowStatus.COMPLETED, result={"outputs": {}})
        )
        seventh = repo.add(_workflow(task, 7, T0, status=WorkflowStatus.QUEUED))
    with factory() as session:
        repo = WorkflowRepository(session)
        all_ids = [first.id, second.id, third.id, fourth.id, fifth.id, sixth.id, seventh.id]
        assert [w.id for w in repo.list_for_task(task.id)] == all_ids
        assert repo.list_for_task(uuid.uuid4()) == []
        # Ended since `since` with a flow run: not the older one, not the run-less one.
        ended = repo.list_recently_ended(since, CORRECTABLE_TERMINAL_STATUSES)
        assert [w.id for w in ended] == [second.id]
        assert [w.id for w in repo.list_completed_without_result(since)] == [fifth.id]
        assert [w.id for w in repo.list_active(LIVE_WORKFLOW_STATUSES)] == [seventh.id, third.id]
        found = repo.get_by_instance_id("run-2")
        assert found is not None and found.id == second.id
        assert repo.get_by_instance_id("run-x") is None


def test_naive_datetimes_are_refused_and_aware_ones_come_back_in_utc(
    factory: sessionmaker[Session],
) -> None:
    naive = datetime(2026, 11, 1, 12, 0)
    with pytest.raises(ValueError, match="naive"):
        _task(naive)
    task = _task(T0)
    with factory.begin() as session:
        TaskRepository(session).add(task)
    with pytest.raises(StatementError, match="tzinfo is required"), factory.begin() as session:
        stored = TaskRepository(session).get_one_or_none(id=task.id)
        assert stored is not None
        stored.started_at = naive
        session.flush()
    with pytest.raises(StatementError, match="tzinfo is required"), factory() as session:
        TaskRepository(session).find(created_after=naive)

    plus_two = timezone(timedelta(hours=2))
    with factory.begin() as session:
        stored = TaskRepository(session).get_one_or_none(id=task.id)
        assert stored is not None
        stored.started_at = T0.astimezone(plus_two)
    with factory() as session:
        again = TaskRepository(session).get_one_or_none(id=task.id)
        assert again is not None and again.started_at == T0
        assert again.started_at.utcoffset() == timedelta(0)
        assert again.created_at == T0 and again.created_at.tzinfo is not None
