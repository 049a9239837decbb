"""How a task is shown outside: the body of `GET /tasks/{id}`, of webhooks and of events.

Here, not in `api/`, because the domain writes it too: every status event in `task_events`
carries the task as `GET /tasks/{id}` returns it (`domain.events`), in the transaction that
changed it. The API's schemas re-export these structs.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from enum import Enum
from typing import Any, Self

import msgspec

__all__ = ["OutStruct", "TaskOut", "task_view"]


class OutStruct(msgspec.Struct, rename="camel"):
    """A response struct whose fields are named as the attributes of the object it shows
    (an ORM row, a domain result): `of()` copies them by name, so a field added to both
    sides needs no third edit, and a status enum goes out as its value."""

    @classmethod
    def of(cls, source: object) -> Self:
        """The struct with each field read from the attribute of the same name on `source`."""
        values: dict[str, Any] = {}
        for name in cls.__struct_fields__:
            value = getattr(source, name)
            values[name] = value.value if isinstance(value, Enum) else value
        return cls(**values)


class TaskOut(OutStruct):
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
    #: Where the task's events are also sent (signed webhooks); None: only the
    #: server-wide AUDIOFLOW_WEBHOOK_URLS.
    callback_url: str | None
    workflow_id: uuid.UUID | None
    workflow_instance_id: str | None
    created_at: datetime
    updated_at: datetime
    started_at: datetime | None
    completed_at: datetime | None


def task_view(task: object) -> dict[str, Any]:
    """The task as `GET /tasks/{id}` returns it, as JSON values (camelCase keys, ISO times)."""
    view: dict[str, Any] = msgspec.to_builtins(TaskOut.of(task))
    return view
