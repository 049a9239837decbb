"""The tables: `tasks` (what a client asked for), `workflows` (each Prefect run of it) and
`task_events` (what happened to a task, for webhooks and event streams).

A task keeps every workflow it ever had (one per attempt); `tasks.workflow_id` points at
the current one. The foreign keys form a cycle, so the task -> workflow one is added after
both tables exist (`use_alter`). The status enums are `core.statuses` (imported from here
too); which status may follow which is `domain.lifecycle`.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import StrEnum
from typing import Any

from sqlalchemy import (
    JSON,
    BigInteger,
    Boolean,
    Enum,
    ForeignKey,
    Identity,
    Index,
    Integer,
    String,
    Text,
    UniqueConstraint,
    Uuid,
    false,
    text,
)
from sqlalchemy.orm import Mapped, mapped_column, relationship, validates

# Re-exported: the enums are a column type here, and most code takes them from the models.
from core.statuses import TaskStatus as TaskStatus
from core.statuses import WorkflowStatus as WorkflowStatus
from db.base import AuditColumns, Base, DateTimeUTC, UUIDKey


def without_nul(value: str | None) -> str | None:
    """Free text for a text column: NUL (which PostgreSQL cannot store) becomes U+FFFD.

    Errors, messages and steps come from flows and ffmpeg output; one stray NUL in them
    must not make the report that carries them fail with a database error.
    """
    return value.replace("\x00", "\ufffd") if value is not None else None


def _enum(cls: type[StrEnum], name: str) -> Enum:
    # Stored as VARCHAR + CHECK (not a native PG enum) so adding a status is a plain migration.
    return Enum(
        cls,
        name=name,
        native_enum=False,
        create_constraint=True,
        length=16,
        values_callable=lambda members: [m.value for m in members],
        validate_strings=True,
    )


class Task(UUIDKey, AuditColumns, Base):
    """A unit of work a client asked for, e.g. `audio_processing` of one episode."""

    __tablename__ = "tasks"

    type: Mapped[str] = mapped_column(String(64), nullable=False, index=True)
    status: Mapped[TaskStatus] = mapped_column(
        _enum(TaskStatus, "task_status"), nullable=False, default=TaskStatus.PENDING, index=True
    )
    #: Denormalised from the payload so that listing and reprocessing can filter on it.
    episode_id: Mapped[str | None] = mapped_column(String(128), nullable=True, index=True)
    payload: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: `transient` errors may be retried; `permanent` ones (bad audio) never are.
    error_kind: Mapped[str | None] = mapped_column(String(16), nullable=True)
    progress: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    #: The current workflow's step, copied here so listings need no join.
    current_step: Mapped[str | None] = mapped_column(String(64), nullable=True)
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    idempotency_key: Mapped[str | None] = mapped_column(String(255), nullable=True, unique=True)
    #: SHA-256 of the request as first made (type and validated payload): what a repeat
    #: with the same `Idempotency-Key` is compared with, since reprocessing may change
    #: the payload. None on rows made before it was kept.
    request_digest: Mapped[str | None] = mapped_column(String(64), nullable=True)
    #: Where this task's events are also sent (signed webhooks, `domain.webhooks`).
    callback_url: Mapped[str | None] = mapped_column(Text, nullable=True)
    workflow_id: Mapped[uuid.UUID | None] = mapped_column(
        Uuid(),
        ForeignKey("workflows.id", use_alter=True, ondelete="SET NULL"),
        nullable=True,
    )
    workflow_instance_id: Mapped[str | None] = mapped_column(String(64), nullable=True)
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(), nullable=True)

    workflows: Mapped[list[Workflow]] = relationship(
        back_populates="task",
        foreign_keys="Workflow.task_id",
        order_by="Workflow.attempt",
        lazy="raise",
    )

    __table_args__ = (Index("ix_tasks_created_at", "created_at"),)

    @validates("error", "current_step")
    def _validate_text(self, _key: str, value: str | None) -> str | None:
        return without_nul(value)


class Workflow(UUIDKey, AuditColumns, Base):
    """One workflow instance: one run of a Prefect deployment for one task attempt."""

    __tablename__ = "workflows"

    name: Mapped[str] = mapped_column(String(64), nullable=False)
    deployment_name: Mapped[str] = mapped_column(String(255), nullable=False)
    #: The Prefect flow-run id; empty until Prefect has accepted the run.
    instance_id: Mapped[str | None] = mapped_column(String(64), nullable=True, unique=True)
    task_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False, index=True
    )
    attempt: Mapped[int] = mapped_column(Integer, nullable=False, default=1)
    status: Mapped[WorkflowStatus] = mapped_column(
        _enum(WorkflowStatus, "workflow_status"),
        nullable=False,
        default=WorkflowStatus.QUEUED,
        index=True,
    )
    progress: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    current_step: Mapped[str | None] = mapped_column(String(64), nullable=True)
    message: Mapped[str | None] = mapped_column(Text, nullable=True)
    parameters: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False, default=dict)
    result: Mapped[dict[str, Any] | None] = mapped_column(JSON(none_as_null=True), nullable=True)
    error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Corrections made by the reconciler: [{at, from, to, reason}], oldest first.
    corrections: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)
    started_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(), nullable=True)
    completed_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(), nullable=True)
    #: Outbox: a queued workflow with no flow run yet is due for dispatch at this time (NULL:
    #: at once). A dispatcher pushes it forward while it works on the row (a lease other
    #: API processes respect) and after a failed attempt (the back-off).
    dispatch_after: Mapped[datetime | None] = mapped_column(DateTimeUTC(), nullable=True)

    task: Mapped[Task] = relationship(
        back_populates="workflows", foreign_keys=[task_id], lazy="raise"
    )

    __table_args__ = (
        # Only rows waiting for a flow run are in it, so claiming the next ones stays cheap
        # however many workflows the table holds.
        Index(
            "ix_workflows_undispatched",
            "created_at",
            postgresql_where=text("instance_id IS NULL AND status = 'queued'"),
            sqlite_where=text("instance_id IS NULL AND status = 'queued'"),
        ),
    )

    @validates("message", "error", "current_step")
    def _validate_text(self, _key: str, value: str | None) -> str | None:
        return without_nul(value)


#: The type of the one event per task that holds its latest progress (upserted, not appended).
PROGRESS_EVENT = "task.progress"


class TaskEvent(Base):
    """One thing that happened to a task, in the order it happened (`id` only ever grows).

    Status changes (`task.processing`, `task.done`, ...) are appended, each in the
    transaction that made the change, with the task as `GET /tasks/{id}` shows it. Progress
    is one row per task (`task.progress`), rewritten by every report with a new `id` from
    the same sequence: so "everything after id N" still includes the latest progress, and a
    progress report stays one statement. Webhook deliveries and event streams read here.

    `id` is an identity (a sequence) on PostgreSQL and an AUTOINCREMENT rowid on SQLite:
    never reused, also after the progress row of a task is replaced. A trigger on
    PostgreSQL (migration 0004) sends `NOTIFY audioflow_task_events` for every row written.
    """

    __tablename__ = "task_events"

    id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"), Identity(), primary_key=True
    )
    task_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False
    )
    #: `task.<status>` or `task.progress`.
    type: Mapped[str] = mapped_column(String(32), nullable=False)
    #: The event's body: the task (status events) or its status, progress and step.
    data: Mapped[dict[str, Any]] = mapped_column(JSON, nullable=False)
    created_at: Mapped[datetime] = mapped_column(DateTimeUTC(), nullable=False)
    #: Outbox flag: a webhook event whose deliveries are not made yet (`domain.webhooks`).
    fanout_pending: Mapped[bool] = mapped_column(
        Boolean, nullable=False, server_default=false()
    )

    __table_args__ = (
        # The events waiting for their webhook deliveries: few, however long the log.
        Index(
            "ix_task_events_fanout",
            "id",
            postgresql_where=text("fanout_pending"),
            sqlite_where=text("fanout_pending"),
        ),
        # One task's events in order (an event stream's replay, a task's deliveries).
        Index("ix_task_events_task_id_id", "task_id", "id"),
        # The progress hot path's upsert target: at most one progress row per task.
        Index(
            "uq_task_events_progress",
            "task_id",
            unique=True,
            postgresql_where=text(f"type = '{PROGRESS_EVENT}'"),
            sqlite_where=text(f"type = '{PROGRESS_EVENT}'"),
        ),
        {"sqlite_autoincrement": True},
    )


class DeliveryStatus(StrEnum):
    """Where one webhook delivery stands."""

    PENDING = "pending"  # due now or at `next_attempt_at`
    DELIVERED = "delivered"  # a 2xx answer
    FAILED = "failed"  # every attempt of the schedule failed, or the URL is refused


class WebhookDelivery(UUIDKey, AuditColumns, Base):
    """One task event sent to one URL: its state, and every attempt (`attempt_log`).

    The row is its own outbox entry: a pending row whose `next_attempt_at` has come is
    claimed (`FOR UPDATE SKIP LOCKED`, then a lease in `next_attempt_at`) by one delivery
    thread of one API process, which records the attempt and the next one.
    """

    __tablename__ = "webhook_deliveries"

    event_id: Mapped[int] = mapped_column(
        BigInteger().with_variant(Integer(), "sqlite"),
        ForeignKey("task_events.id", ondelete="CASCADE"),
        nullable=False,
    )
    task_id: Mapped[uuid.UUID] = mapped_column(
        Uuid(), ForeignKey("tasks.id", ondelete="CASCADE"), nullable=False, index=True
    )
    event_type: Mapped[str] = mapped_column(String(32), nullable=False)
    url: Mapped[str] = mapped_column(Text, nullable=False)
    status: Mapped[DeliveryStatus] = mapped_column(
        _enum(DeliveryStatus, "delivery_status"), nullable=False, default=DeliveryStatus.PENDING
    )
    #: Attempts since the delivery was made or last redelivered (the back-off's position).
    attempts: Mapped[int] = mapped_column(Integer, nullable=False, default=0)
    next_attempt_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(), nullable=True)
    delivered_at: Mapped[datetime | None] = mapped_column(DateTimeUTC(), nullable=True)
    last_status_code: Mapped[int | None] = mapped_column(Integer, nullable=True)
    last_error: Mapped[str | None] = mapped_column(Text, nullable=True)
    #: Every attempt, oldest first: [{at, statusCode, error, durationMs, response}].
    attempt_log: Mapped[list[dict[str, Any]]] = mapped_column(JSON, nullable=False, default=list)

    __table_args__ = (
        UniqueConstraint("event_id", "url", name="uq_webhook_deliveries_event_id_url"),
        Index(
            "ix_webhook_deliveries_due",
            "next_attempt_at",
            postgresql_where=text("status = 'pending'"),
            sqlite_where=text("status = 'pending'"),
        ),
    )

    @property
    def webhook_id(self) -> str:
        """The `webhook-id` header of every attempt: one per delivery, so a receiver can
        tell a retry or a redelivery from a new message."""
        return f"msg_{self.id.hex}"

    @validates("last_error")
    def _validate_text(self, _key: str, value: str | None) -> str | None:
        return without_nul(value)
