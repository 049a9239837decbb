"""Queries on `tasks` and `workflows`. Repositories read and write rows; rules live in services."""

from __future__ import annotations

import uuid
from collections.abc import Collection, Sequence
from datetime import datetime

from sqlalchemy import func, select
from sqlalchemy.orm import Session

from db.models import Task, TaskStatus, Workflow, WorkflowStatus


class TaskRepository:
    """Queries on the `tasks` table."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, task: Task) -> Task:
        self.session.add(task)
        self.session.flush()
        return task

    def get(self, task_id: uuid.UUID, *, for_update: bool = False) -> Task | None:
        stmt = select(Task).where(Task.id == task_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).one_or_none()

    def get_by_idempotency_key(self, key: str) -> Task | None:
        return self.session.scalars(select(Task).where(Task.idempotency_key == key)).one_or_none()

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
        """A page of tasks, newest first, and the total that match the filters."""
        # PostgreSQL text cannot hold NUL, so no stored value has one: a filter value with
        # NUL matches nothing (sent as is, it would be a driver error, a 500).
        if any("\x00" in value for value in (type_, episode_id) if value is not None):
            return [], 0
        if episode_ids is not None:
            episode_ids = [value for value in episode_ids if "\x00" not in value]
            if not episode_ids:
                return [], 0
        stmt = select(Task)
        if status is not None:
            stmt = stmt.where(Task.status == status)
        if type_ is not None:
            stmt = stmt.where(Task.type == type_)
        if episode_id is not None:
            stmt = stmt.where(Task.episode_id == episode_id)
        if ids is not None:
            stmt = stmt.where(Task.id.in_(list(ids)))
        if episode_ids is not None:
            stmt = stmt.where(Task.episode_id.in_(list(episode_ids)))
        if created_before is not None:
            stmt = stmt.where(Task.created_at < created_before)
        if created_after is not None:
            stmt = stmt.where(Task.created_at >= created_after)
        total = self.session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
        if offset >= total:
            # Past the end: nothing to fetch. Also keeps an offset beyond the database's
            # integer range (any `?offset=` a client sends) from becoming a driver error.
            return [], total
        page = self.session.scalars(
            stmt.order_by(Task.created_at.desc(), Task.id).limit(limit).offset(offset)
        ).all()
        return list(page), total


class WorkflowRepository:
    """Queries on the `workflows` table."""

    def __init__(self, session: Session) -> None:
        self.session = session

    def add(self, workflow: Workflow) -> Workflow:
        self.session.add(workflow)
        self.session.flush()
        return workflow

    def get(self, workflow_id: uuid.UUID, *, for_update: bool = False) -> Workflow | None:
        stmt = select(Workflow).where(Workflow.id == workflow_id)
        if for_update:
            stmt = stmt.with_for_update()
        return self.session.scalars(stmt).one_or_none()

    def get_by_instance_id(self, instance_id: str) -> Workflow | None:
        return self.session.scalars(
            select(Workflow).where(Workflow.instance_id == instance_id)
        ).one_or_none()

    def list_for_task(self, task_id: uuid.UUID) -> list[Workflow]:
        return list(
            self.session.scalars(
                select(Workflow).where(Workflow.task_id == task_id).order_by(Workflow.attempt)
            ).all()
        )

    def list_recently_ended(
        self, since: datetime, statuses: Collection[WorkflowStatus]
    ) -> list[Workflow]:
        """Ended in one of `statuses` since `since` (the ones Prefect may still correct:
        `domain.lifecycle` says which)."""
        return list(
            self.session.scalars(
                select(Workflow)
                .where(
                    Workflow.status.in_(sorted(statuses)),
                    Workflow.instance_id.is_not(None),
                    Workflow.updated_at >= since,
                )
                .order_by(Workflow.updated_at)
            ).all()
        )

    def list_completed_without_result(self, since: datetime) -> list[Workflow]:
        """Completed since `since` but with no result: the flow's last report was lost."""
        return list(
            self.session.scalars(
                select(Workflow).where(
                    Workflow.status == WorkflowStatus.COMPLETED,
                    Workflow.result.is_(None),
                    Workflow.updated_at >= since,
                )
            ).all()
        )

    def list_active(self, statuses: Collection[WorkflowStatus]) -> list[Workflow]:
        """Workflows in one of `statuses`, oldest first: the ones the database believes are
        live (`domain.lifecycle` says which), the reconciler's input."""
        return list(
            self.session.scalars(
                select(Workflow)
                .where(Workflow.status.in_(sorted(statuses)))
                .order_by(Workflow.created_at)
            ).all()
        )
