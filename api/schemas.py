"""Wire schemas: msgspec structs, camelCase on the wire, separate from the ORM models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Annotated, Any, Literal

import msgspec

from db.models import Task, Workflow

WorkflowStatusName = Literal["queued", "running", "completed", "failed", "crashed", "cancelled"]
ErrorKind = Literal["transient", "permanent"]


class CreateTaskRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /tasks` body."""

    type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    payload: dict[str, Any]


class ProgressRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /internal/workflow-progress` body: any subset of the fields after the ids."""

    task_id: uuid.UUID
    workflow_id: uuid.UUID
    progress: Annotated[int, msgspec.Meta(ge=0, le=100)] | None = None
    step: Annotated[str, msgspec.Meta(max_length=64)] | None = None
    message: Annotated[str, msgspec.Meta(max_length=4000)] | None = None
    status: WorkflowStatusName | None = None
    result: dict[str, Any] | None = None
    error: Annotated[str, msgspec.Meta(max_length=20000)] | None = None
    error_kind: ErrorKind | None = None


class TaskOut(msgspec.Struct, rename="camel"):
    """A task as clients see it."""

    id: uuid.UUID
    type: str
    status: str
    episode_id: str | None
    payload: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    error_kind: str | None
    progress: int
    current_step: str | None
    attempts: int
    idempotency_key: str | None
    workflow_id: uuid.UUID | None
    workflow_instance_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, task: Task) -> TaskOut:
        return cls(
            id=task.id,
            type=task.type,
            status=task.status.value,
            episode_id=task.episode_id,
            payload=task.payload,
            result=task.result,
            error=task.error,
            error_kind=task.error_kind,
            progress=task.progress,
            current_step=task.current_step,
            attempts=task.attempts,
            idempotency_key=task.idempotency_key,
            workflow_id=task.workflow_id,
            workflow_instance_id=task.workflow_instance_id,
            created_at=task.created_at,
            updated_at=task.updated_at,
            started_at=task.started_at,
            completed_at=task.completed_at,
        )


class TaskPageOut(msgspec.Struct, rename="camel"):
    """`GET /tasks`: one page, newest first."""

    items: list[TaskOut]
    total: int
    limit: int
    offset: int


class WorkflowOut(msgspec.Struct, rename="camel"):
    """A workflow instance (one Prefect flow run of one task attempt)."""

    id: uuid.UUID
    name: str
    deployment_name: str
    instance_id: str | None
    task_id: uuid.UUID
    attempt: int
    status: str
    progress: int
    current_step: str | None
    message: str | None
    parameters: dict[str, Any]
    result: dict[str, Any] | None
    error: str | None
    corrections: list[dict[str, Any]]
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None

    @classmethod
    def of(cls, workflow: Workflow) -> WorkflowOut:
        return cls(
            id=workflow.id,
            name=workflow.name,
            deployment_name=workflow.deployment_name,
            instance_id=workflow.instance_id,
            task_id=workflow.task_id,
            attempt=workflow.attempt,
            status=workflow.status.value,
            progress=workflow.progress,
            current_step=workflow.current_step,
            message=workflow.message,
            parameters=workflow.parameters,
            result=workflow.result,
            error=workflow.error,
            corrections=workflow.corrections,
            created_at=workflow.created_at,
            updated_at=workflow.updated_at,
            started_at=workflow.started_at,
            completed_at=workflow.completed_at,
        )


class ProgressOut(msgspec.Struct, rename="camel"):
    """What the progress endpoint answers: both rows after the update."""

    workflow: WorkflowOut
    task: TaskOut


class HealthOut(msgspec.Struct, rename="camel", omit_defaults=True):
    """`GET /health`: up or down for anyone; what is down only for callers with the API key."""

    status: Literal["ok", "unavailable"]
    #: `ok` or why not (API key holders only).
    database: str | None = None
    #: `ok` or why not (API key holders only).
    prefect: str | None = None


class UploadOut(msgspec.Struct, rename="camel"):
    """`POST /uploads`: where the audio was stored and what it is."""

    key: str
    size: int
    duration_s: float
    codec: str
    channels: int
    sample_rate: int


class PresignRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /uploads/presign` body."""

    filename: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    #: Exact size of the file in bytes; signed into the URL (the store refuses any other).
    #: Over AUDIOFLOW_MAX_UPLOAD_BYTES is a 413.
    size: Annotated[int, msgspec.Meta(ge=1)]
    #: Seconds the URL stays valid; default and upper bound AUDIOFLOW_PRESIGN_MAX_EXPIRES_S
    #: (3600 unless set; more is a 422). The schema's bound is S3's own limit.
    expires_in: Annotated[int, msgspec.Meta(ge=60, le=7 * 24 * 3600)] | None = None


class PresignOut(msgspec.Struct, rename="camel"):
    """A URL to PUT the file to directly, sending `headers` as given (they are signed);
    then create the task with `key`."""

    key: str
    url: str
    method: str
    expires_in: int
    headers: dict[str, str]


class ReprocessRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /reprocess`: start a reprocessing run (see `flows/reprocessing.py`)."""

    reconcile: bool = True
    retry_failed: bool = True
    task_ids: list[uuid.UUID] = msgspec.field(default_factory=list)
    episode_ids: list[Annotated[str, msgspec.Meta(min_length=1, max_length=128)]] = msgspec.field(
        default_factory=list
    )
    status: Literal["done", "failed", "cancelled"] | None = None
    created_after: datetime | None = None
    created_before: datetime | None = None
    add_formats: list[str] = msgspec.field(default_factory=list)
    dry_run: bool = False
    limit: Annotated[int, msgspec.Meta(ge=1, le=100_000)] = 1000
    stale_after_s: Annotated[float, msgspec.Meta(ge=30, le=86_400)] = 600


class ReprocessOut(msgspec.Struct, rename="camel"):
    """The reprocessing flow run that was started; watch it in the Prefect UI."""

    flow_run_id: str
    flow_run_name: str
    parameters: dict[str, Any]


class ErrorOut(msgspec.Struct):
    """Every error body: Litestar's own (400, 401, 405) and the domain errors' (404, 409, ...)."""

    status_code: int
    detail: str
    #: Validation problems (a list, for 400) or facts about the error (e.g. `taskId` on a 503).
    extra: Any = None
