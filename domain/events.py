"""The task event log (`task_events`): what webhooks deliver and event streams replay.

Every change of a task's status appends one event, in the transaction that made the
change, with the task as `GET /tasks/{id}` then shows it (`domain.views.task_view`); so an
event exists if and only if its change was committed. The writers call
`record_status_change` after they have applied the change: the general progress path and
the reconciler's corrections (`domain.workflows`), the dispatcher's failed start and
recovered run (`domain.dispatch`) and a new attempt (`domain.tasks`).

Progress is kept as one row per task (`task.progress`), rewritten by each report with a
new id: a plain report (`WorkflowService._apply_plain_progress`) stays one statement on
PostgreSQL (its task update, then this upsert, as data-modifying CTEs) and adds one to
the SQLite path. A plain report never changes a status (the lifecycle's
`PLAIN_REPORT_STATUSES` are the ones a report may leave unchanged, and the task shows
its workflow's), so it writes progress only.

Ids come from one sequence and only grow. Within one task they also follow commit order:
every writer takes the task's row lock before its event gets an id. Across tasks, a
transaction may commit after another that got a later id: a reader of "everything after
id N" over all tasks should look again a little behind its last id.

On PostgreSQL a trigger (migration 0004, narrowed by 0006) sends `NOTIFY
audioflow_task_events` with `{"id", "taskId", "type"}` for each status event written,
delivered when the writer commits. Progress is not notified: a notifying transaction holds
a database-wide lock from its commit through its WAL flush, which serialised the progress
hot path (bench scenario 6: 0.71-0.79x its rate); event streams' hub polls the log for it
instead (`domain.event_stream`), and the API process that applied a report hands the
event to its own hub (`CommittedEvent`), as it does a status change's.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import Any, Protocol, cast

from sqlalchemy import Table, bindparam, delete, func, insert, literal_column, select, text, true
from sqlalchemy.dialects import postgresql
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.sql.selectable import CTE

from db.base import utcnow
from db.models import PROGRESS_EVENT, Task, TaskEvent, TaskStatus
from db.repositories import TaskEventRepository, TaskRepository
from domain.views import task_view

__all__ = [
    "NOTIFY_CHANNEL",
    "PROGRESS_EVENT",
    "WEBHOOK_EVENT_TYPES",
    "CommittedEvent",
    "EventLog",
    "EventSink",
    "progress_data",
    "record_status_change",
    "status_event_type",
]

#: The PostgreSQL channel the trigger on `task_events` notifies.
NOTIFY_CHANNEL = "audioflow_task_events"

_EVENTS = cast(Table, TaskEvent.__table__)


def status_event_type(status: TaskStatus) -> str:
    """`task.processing`, `task.done`, ...: the type of the event a change to `status` is."""
    return f"task.{status.value}"


#: The events webhooks deliver (the issue's list); a new attempt's `task.pending` and
#: progress are in the log for event streams only.
WEBHOOK_EVENT_TYPES: frozenset[str] = frozenset(
    status_event_type(status)
    for status in (
        TaskStatus.PROCESSING,
        TaskStatus.DONE,
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
    )
)


#: A status event appended (Core: no ORM object per event), and its id.
_APPEND_STATUS_EVENT = (
    insert(_EVENTS)
    .values(
        task_id=bindparam("task_id"),
        type=bindparam("type"),
        data=bindparam("data", type_=_EVENTS.c.data.type),
        created_at=bindparam("created_at", type_=_EVENTS.c.created_at.type),
        fanout_pending=bindparam("fanout_pending"),
    )
    .returning(_EVENTS.c.id)
)
#: The task's newest event (0: none).
_NEWEST_OF_TASK = select(func.coalesce(func.max(_EVENTS.c.id), 0)).where(
    _EVENTS.c.task_id == bindparam("task_id")
)


def record_status_change(session: Session, task: Task, before: TaskStatus) -> CommittedEvent | None:
    """Append the task's status event if its status is no longer `before`; the event as
    written (for this process's event hub, once the transaction has committed).

    Call after applying the change, inside its transaction, with the task's row locked
    (every writer does). Flushes first, so the event shows the task as committed
    (`updatedAt` included).
    """
    if task.status is before:
        return None
    session.flush()
    event_type = status_event_type(task.status)
    data = task_view(task)
    # Under the task's row lock: no other event of the task can commit meanwhile.
    after_id = session.execute(_NEWEST_OF_TASK, {"task_id": task.id}).scalar_one()
    event_id = session.execute(
        _APPEND_STATUS_EVENT,
        {
            "task_id": task.id,
            "type": event_type,
            "data": data,
            "created_at": utcnow(),
            # Webhook events wait for their deliveries (`domain.webhooks` makes them).
            "fanout_pending": event_type in WEBHOOK_EVENT_TYPES,
        },
    ).scalar_one()
    return CommittedEvent(event_id, task.id, event_type, data, task.type, task.episode_id, after_id)


def progress_data(
    task_id: uuid.UUID, status: TaskStatus, progress: int, step: str | None, message: str | None
) -> dict[str, Any]:
    """A progress event's body (the SQLite path; PostgreSQL's statement builds the same)."""
    return {
        "taskId": str(task_id),
        "status": status.value,
        "progress": progress,
        "currentStep": step,
        "message": message,
    }


@dataclass(frozen=True)
class CommittedEvent:
    """An event as its writer committed it: what the event hub of the process that wrote
    it may hand its streams at once, without reading the log
    (`domain.event_stream.EventHub.committed`)."""

    event_id: int
    task_id: uuid.UUID
    type: str
    #: The event's body, as the log holds it.
    data: dict[str, Any]
    task_type: str
    episode_id: str | None
    #: An event of the task a stream must have been handed before this one (0: none): for
    #: a status event the task's newest before it, read under the task's row lock; for a
    #: plain report's progress its newest status event as the statement's snapshot saw it.
    #: A status change committed after that snapshot, before the report got the row lock,
    #: is not counted: the hub then finds the report's status differs from the one the
    #: task's streams last got, and polls.
    after_id: int


class EventSink(Protocol):
    """Where a writer tells this process's event streams what it committed (the hub)."""

    @property
    def streaming(self) -> bool:
        """Some stream is open in this process: a writer that can tell its events does."""

    def look_now(self) -> None:
        """Something was committed: read the log now."""

    def committed(self, event: CommittedEvent) -> None:
        """An event was committed (see `CommittedEvent`)."""


def progress_upsert_cte(t: CTE, w: CTE) -> CTE:
    """PostgreSQL: the progress hot path's third CTE, after the workflow's (`w`) and the
    task's (`t`) updates: the task's progress row, inserted or rewritten with a new id.

    Nothing when `t` updated nothing (an older attempt's report). It returns the new id
    (the statement joins it to report the event to this process's hub). The body's keys
    are `progress_data`'s.
    """
    data = func.json_build_object(
        literal_column("'taskId'"),
        t.c.id,
        literal_column("'status'"),
        t.c.status,
        literal_column("'progress'"),
        t.c.progress,
        literal_column("'currentStep'"),
        t.c.current_step,
        literal_column("'message'"),
        w.c.message,
    )
    # The new id is taken once, in the row itself: the identity's default would draw one
    # before the conflict is found and the update another, leaving every other id unused,
    # which the event hub's poll must then treat as a possible late commit (`HOLE_S`).
    rows = select(
        func.nextval(literal_column("'task_events_id_seq'")),
        t.c.id,
        literal_column(f"'{PROGRESS_EVENT}'"),
        data,
        t.c.updated_at,
    ).select_from(t.join(w, true()))
    statement = postgresql.insert(_EVENTS).from_select(
        ["id", "task_id", "type", "data", "created_at"], rows
    )
    statement = statement.on_conflict_do_update(
        index_elements=[_EVENTS.c.task_id],
        index_where=text(f"type = '{PROGRESS_EVENT}'"),
        set_={
            "id": statement.excluded.id,
            "data": statement.excluded.data,
            "created_at": statement.excluded.created_at,
        },
    )
    return statement.returning(_EVENTS.c.id).cte("e")


def replace_progress_sqlite(
    session: Session, task_id: uuid.UUID, data: dict[str, Any], now: Any
) -> None:
    """SQLite: the task's progress row replaced by a new one (AUTOINCREMENT: a new id)."""
    session.execute(
        delete(_EVENTS).where(_EVENTS.c.task_id == task_id, _EVENTS.c.type == PROGRESS_EVENT)
    )
    session.execute(
        insert(_EVENTS).values(task_id=task_id, type=PROGRESS_EVENT, data=data, created_at=now)
    )


class EventLog:
    """Reads the event log: what event streams replay and webhook deliveries start from."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory

    def after(
        self, after_id: int, *, task_id: uuid.UUID | None = None, limit: int = 500
    ) -> list[TaskEvent]:
        """Events with an id above `after_id` (0: from the start), oldest first, at most
        `limit`; only `task_id`'s when given (404 for an unknown task)."""
        with self.session_factory() as session:
            if task_id is not None:
                TaskRepository(session).get_existing(task_id)
            return TaskEventRepository(session).after(after_id, task_id=task_id, limit=limit)

    def last_id(self) -> int:
        """The highest event id so far (0 when none): a new subscriber's starting point."""
        with self.session_factory() as session:
            return TaskEventRepository(session).last_id()
