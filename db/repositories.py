"""Queries on `tasks` and `workflows`. Repositories read and write rows; rules live in services.

Both are advanced-alchemy's `SQLAlchemySyncRepository`: callers use its `get_one_or_none`
(`with_for_update=True` to lock the row), `get_many`, `get_many_and_count` (the name
`list_and_count` had until advanced-alchemy 1.10) and its filters; the methods here only
name the queries the services share. See `AudioflowRepository` for the settings.
"""

from __future__ import annotations

import functools
import uuid
from collections.abc import Collection, Sequence
from datetime import datetime
from typing import Any

from advanced_alchemy.filters import (
    BeforeAfter,
    CollectionFilter,
    LimitOffset,
    NotNullFilter,
    NullFilter,
    OnBeforeAfter,
    OrderBy,
    StatementFilter,
)
from advanced_alchemy.repository import ModelT, SQLAlchemySyncRepository
from sqlalchemy import Select, func, select
from sqlalchemy.orm import Session

from core.errors import NotFoundError
from db.models import Task, TaskEvent, TaskStatus, Workflow, WorkflowStatus

#: Newest first; the id breaks ties so that pages never overlap.
NEWEST_FIRST = (OrderBy("created_at", "desc"), OrderBy("id", "asc"))


class AudioflowRepository(SQLAlchemySyncRepository[ModelT]):
    """advanced-alchemy's repository with the settings the services rely on.

    - SQLAlchemy's own exceptions, not the library's wrappers: services catch
      `IntegrityError` (an idempotency race) and `DBAPIError` (a dropped connection).
    - No refresh after `add` (a SELECT per row): every column is known once flushed.
    - A count query and a page query, not `count(*) OVER ()`: the window function counts
      nothing when the page is past the end (the total must still be right), and it makes
      PostgreSQL read every matching row where the page alone reads `limit` of them from
      the `created_at` index.
    """

    count_with_window_function = False
    #: What a missing row is called in the NotFoundError (a 404's message).
    noun: str = "row"

    def __init__(self, session: Session, **kwargs: Any) -> None:
        # Arguments, not class attributes: the library's __init__ defaults both.
        kwargs.setdefault("wrap_exceptions", False)
        kwargs.setdefault("auto_refresh", False)
        # A repository is made per session, so per call: the base `SELECT` built once per
        # model saves a third of what the library adds to a lookup (4 of 11 us).
        kwargs.setdefault("statement", self._base_statement())
        super().__init__(session=session, **kwargs)

    def get_existing(self, item_id: uuid.UUID, *, with_for_update: bool = False) -> ModelT:
        """The row with this id, or NotFoundError ("task <id> not found"): one wording for
        every 404 a service raises for a missing row."""
        row = self.get_one_or_none(id=item_id, with_for_update=with_for_update)
        if row is None:
            raise NotFoundError(f"{self.noun} {item_id} not found")
        return row

    @classmethod
    @functools.cache
    def _base_statement(cls) -> Select[tuple[ModelT]]:
        return select(cls.model_type)


class TaskRepository(AudioflowRepository[Task]):
    """Queries on the `tasks` table."""

    model_type = Task
    noun = "task"

    def get_by_idempotency_key(self, key: str) -> Task | None:
        """The task first made with this `Idempotency-Key`, if any."""
        return self.get_one_or_none(idempotency_key=key)

    def find(
        self,
        *,
        status: TaskStatus | None = None,
        type_: str | None = None,
        episode_id: str | None = None,
        ids: Sequence[uuid.UUID] | None = None,
        episode_ids: Sequence[str] | None = None,
        created_before: datetime | None = None,
        created_after: datetime | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> tuple[list[Task], int]:
        """A page of tasks, newest first, and the total that match the filters.

        `created_after` is inclusive, `created_before` exclusive (adjacent windows never
        share a task).
        """
        # PostgreSQL text cannot hold NUL, so no stored value has one: a filter value with
        # NUL matches nothing (sent as is, it would be a driver error, a 500).
        if any("\x00" in value for value in (type_, episode_id) if value is not None):
            return [], 0
        if episode_ids is not None:
            episode_ids = [value for value in episode_ids if "\x00" not in value]
            if not episode_ids:
                return [], 0
        filters: list[StatementFilter] = [
            CollectionFilter("id", list(ids) if ids is not None else None),
            CollectionFilter("episode_id", episode_ids),
            OnBeforeAfter("created_at", on_or_before=None, on_or_after=created_after),
            BeforeAfter("created_at", before=created_before, after=None),
            *NEWEST_FIRST,
            LimitOffset(limit=limit, offset=offset),
        ]
        criteria: dict[str, Any] = {
            name: value
            for name, value in (("status", status), ("type", type_), ("episode_id", episode_id))
            if value is not None
        }
        items, total = self.get_many_and_count(*filters, **criteria)
        return list(items), total


class WorkflowRepository(AudioflowRepository[Workflow]):
    """Queries on the `workflows` table."""

    model_type = Workflow
    noun = "workflow"

    def get_by_instance_id(self, instance_id: str) -> Workflow | None:
        """The workflow of a Prefect flow run."""
        return self.get_one_or_none(instance_id=instance_id)

    def list_for_task(self, task_id: uuid.UUID) -> list[Workflow]:
        """Every attempt of a task, oldest first."""
        return list(self.get_many(OrderBy("attempt", "asc"), task_id=task_id))

    def list_recently_ended(
        self, since: datetime, statuses: Collection[WorkflowStatus]
    ) -> list[Workflow]:
        """Ended in one of `statuses` since `since` (the ones Prefect may still correct:
        `domain.lifecycle` says which)."""
        return list(
            self.get_many(
                CollectionFilter("status", sorted(statuses)),
                NotNullFilter("instance_id"),
                OnBeforeAfter("updated_at", on_or_before=None, on_or_after=since),
                OrderBy("updated_at", "asc"),
            )
        )

    def list_completed_without_result(self, since: datetime) -> list[Workflow]:
        """Completed since `since` but with no result: the flow's last report was lost."""
        return list(
            self.get_many(
                NullFilter("result"),
                OnBeforeAfter("updated_at", on_or_before=None, on_or_after=since),
                status=WorkflowStatus.COMPLETED,
            )
        )

    def list_active(self, statuses: Collection[WorkflowStatus]) -> list[Workflow]:
        """Workflows in one of `statuses`, oldest first: the ones the database believes are
        live (`domain.lifecycle` says which), the reconciler's input."""
        return list(
            self.get_many(
                CollectionFilter("status", sorted(statuses)),
                OrderBy("created_at", "asc"),
            )
        )


class TaskEventRepository(AudioflowRepository[TaskEvent]):
    """Queries on the `task_events` table (the task event log, `domain.events`)."""

    model_type = TaskEvent
    noun = "event"

    def after(
        self, after_id: int, *, task_id: uuid.UUID | None = None, limit: int = 500
    ) -> list[TaskEvent]:
        """Events with an id above `after_id`, oldest first; one task's with `task_id`."""
        query = select(TaskEvent).where(TaskEvent.id > after_id)
        if task_id is not None:
            query = query.where(TaskEvent.task_id == task_id)
        return list(self.session.scalars(query.order_by(TaskEvent.id).limit(limit)))

    def last_id(self) -> int:
        """The highest id written so far (0 when there is none): where a new reader starts."""
        return int(self.session.scalar(select(func.coalesce(func.max(TaskEvent.id), 0))) or 0)
