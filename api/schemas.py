"""Wire schemas: msgspec structs, camelCase on the wire, separate from the ORM models."""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import msgspec

from domain.contracts import ErrorKind, ReprocessParameters
from domain.uploads import PresignedUpload, UploadedAudio, UploadedImage
from domain.views import OutStruct as OutStruct
from domain.views import TaskOut as TaskOut
from domain.wire import wire_struct

WorkflowStatusName = Literal["queued", "running", "completed", "failed", "crashed", "cancelled"]


class CreateTaskRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /tasks` body."""

    type: Annotated[str, msgspec.Meta(min_length=1, max_length=64)]
    payload: dict[str, Any]
    #: An http(s) URL that receives the task's events as signed webhooks (needs
    #: AUDIOFLOW_WEBHOOK_SECRET; loopback and private addresses are refused unless
    #: AUDIOFLOW_WEBHOOK_ALLOW_PRIVATE=true). Part of what an idempotent repeat must match.
    callback_url: Annotated[str, msgspec.Meta(min_length=1, max_length=2048)] | None = None


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


class TaskPageOut(msgspec.Struct, rename="camel"):
    """`GET /tasks`: one page, newest first."""

    items: list[TaskOut]
    total: int
    limit: int
    offset: int


class WorkflowOut(OutStruct):
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


class UploadOut(UploadedAudio):
    """`POST /uploads`: where the audio was stored and what it is."""


class ImageUploadOut(UploadedImage):
    """`POST /uploads/images`: where the image was stored and what its bytes are; use `key`
    as `metadata.coverKey` or a chapter's `imageKey`."""


class PresignRequest(msgspec.Struct, rename="camel", forbid_unknown_fields=True):
    """`POST /uploads/presign` body."""

    filename: Annotated[str, msgspec.Meta(min_length=1, max_length=255)]
    #: Exact size of the file in bytes; signed into the URL (the store refuses any other).
    #: Over AUDIOFLOW_MAX_UPLOAD_BYTES is a 413.
    size: Annotated[int, msgspec.Meta(ge=1)]
    #: Seconds the URL stays valid; default and upper bound AUDIOFLOW_PRESIGN_MAX_EXPIRES_S
    #: (3600 unless set; more is a 422). The schema's bound is S3's own limit.
    expires_in: Annotated[int, msgspec.Meta(ge=60, le=7 * 24 * 3600)] | None = None


class PresignOut(PresignedUpload):
    """A URL to PUT the file to directly, sending `headers` as given (they are signed);
    then create the task with `key`."""


if TYPE_CHECKING:

    class ReprocessRequest(msgspec.Struct):
        """What type checkers see; the fields are those of `ReprocessParameters`."""

else:
    #: `POST /reprocess` body: the fields of `domain.contracts.ReprocessParameters` that a
    #: request may set, in camelCase.
    ReprocessRequest = wire_struct(
        "ReprocessRequest",
        ReprocessParameters,
        exclude=ReprocessParameters.WORKER_ONLY,
        doc="`POST /reprocess`: start a reprocessing run (see `flows/reprocessing.py`).",
    )


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


class DeliveryOut(OutStruct):
    """One task event sent (or being sent) to one URL, with every attempt."""

    id: uuid.UUID
    #: The `webhook-id` header of each attempt (a receiver deduplicates on it).
    webhook_id: str
    event_id: int
    event_type: str
    task_id: uuid.UUID
    url: str
    #: `pending`, `delivered` or `failed` (the retry schedule is spent, or the URL refused).
    status: str
    #: Attempts since the delivery was made or last redelivered.
    attempts: int
    next_attempt_at: datetime | None
    delivered_at: datetime | None
    last_status_code: int | None
    last_error: str | None
    #: Every attempt, oldest first: `at`, `statusCode`, `error`, `durationMs`, `response`
    #: (the first 256 characters of the answer).
    attempt_log: list[dict[str, Any]]
    created_at: datetime
