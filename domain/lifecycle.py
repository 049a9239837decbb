"""The lifecycle of workflows and tasks: one table of which status may follow which, and for whom.

A workflow row is written by five kinds of writer, and each may make different moves:

* a flow's **report** (its progress posts and state hooks, `WorkflowService.apply_progress`):
  forward only; a terminal status is final, and a running workflow is never queued again;
* a **cancel** through the API: a live workflow becomes cancelled, nothing else;
* the **dispatcher** (the flow-run outbox): a queued workflow whose run could not be created
  fails, and one that failed only because Prefect's answer was lost is queued again when
  its run is found by its idempotency key;
* the **reconciler**'s correction, which takes Prefect's word: any live workflow may end, a
  queued one may be running (its hook was missed), and a terminal one may still become
  completed (Prefect's late Completed, with every output present) but nothing else, so a
  cancelled or permanently failed task is never turned into a retried one;
* a **new attempt** (create, retry, reprocess): a new row, queued.

A task's status follows its current workflow through `TASK_STATUS_FOR_WORKFLOW`, and what a
person may do with a task (cancel, retry, reprocess) depends on that status alone.

Every writer asks this module instead of comparing statuses itself, and the progress hot
path's SQL (`domain.workflows`) is generated from `PLAIN_REPORT_STATUSES` and
`TASK_STATUS_FOR_WORKFLOW`, so a change here is a change everywhere. The enums are plain
names in `core.statuses` (the columns in `db.models` store them); the rules live here only.
This module imports nothing else, so a flow process may ask it without loading SQLAlchemy.
"""

from __future__ import annotations

from collections.abc import Mapping
from enum import StrEnum
from types import MappingProxyType

from core.statuses import TaskStatus, WorkflowStatus


class Writer(StrEnum):
    """Who changes a workflow's status; each may make different moves (see the module)."""

    REPORT = "report"
    CANCEL = "cancel"
    DISPATCHER = "dispatcher"
    RECONCILER = "reconciler"
    NEW_ATTEMPT = "new attempt"


class TaskAction(StrEnum):
    """What a person (or the reprocessing flow) may ask of a task."""

    CANCEL = "cancel"
    RETRY = "retry"
    REPROCESS = "reprocess"


_QUEUED = WorkflowStatus.QUEUED
_RUNNING = WorkflowStatus.RUNNING
_COMPLETED = WorkflowStatus.COMPLETED
_FAILED = WorkflowStatus.FAILED
_CRASHED = WorkflowStatus.CRASHED
_CANCELLED = WorkflowStatus.CANCELLED

#: After one of these a flow run does nothing more; final for every writer but the
#: reconciler (Prefect's late Completed) and the dispatcher (a lost run found again).
TERMINAL_WORKFLOW_STATUSES: frozenset[WorkflowStatus] = frozenset(
    {_COMPLETED, _FAILED, _CRASHED, _CANCELLED}
)
#: A workflow in one of these may still change by itself (its run is due or going).
LIVE_WORKFLOW_STATUSES: frozenset[WorkflowStatus] = frozenset(WorkflowStatus).difference(
    TERMINAL_WORKFLOW_STATUSES
)

#: The status every attempt starts in; the dispatcher creates flow runs for these rows
#: only (the partial index `ix_workflows_undispatched` in `db.models` says the same).
WAITING_FOR_RUN = _QUEUED

#: The `from` of a new attempt: its row does not exist yet.
NEW_ROW = None

#: writer -> current status (None: no row yet) -> the statuses it may set.
_TRANSITIONS: Mapping[Writer, Mapping[WorkflowStatus | None, frozenset[WorkflowStatus]]] = {
    Writer.NEW_ATTEMPT: {NEW_ROW: frozenset({WAITING_FOR_RUN})},
    Writer.REPORT: {
        # A plain report on a queued workflow keeps it queued: the running hook starts it.
        _QUEUED: frozenset({_QUEUED, _RUNNING}) | TERMINAL_WORKFLOW_STATUSES,
        _RUNNING: frozenset({_RUNNING}) | TERMINAL_WORKFLOW_STATUSES,
    },
    Writer.CANCEL: {_QUEUED: frozenset({_CANCELLED}), _RUNNING: frozenset({_CANCELLED})},
    Writer.DISPATCHER: {
        _QUEUED: frozenset({_FAILED}),  # the flow run could not be created
        _FAILED: frozenset({_QUEUED}),  # ...but it was: found again by its idempotency key
    },
    Writer.RECONCILER: {
        _QUEUED: frozenset({_RUNNING}) | TERMINAL_WORKFLOW_STATUSES,
        _RUNNING: TERMINAL_WORKFLOW_STATUSES,
        # Only Prefect's Completed (outputs checked) lifts a terminal row; completed ->
        # completed attaches the result a lost last report never delivered.
        **{status: frozenset({_COMPLETED}) for status in TERMINAL_WORKFLOW_STATUSES},
    },
}

#: How a task's status follows its current workflow's.
TASK_STATUS_FOR_WORKFLOW: Mapping[WorkflowStatus, TaskStatus] = MappingProxyType(
    {
        _QUEUED: TaskStatus.PENDING,
        _RUNNING: TaskStatus.PROCESSING,
        _COMPLETED: TaskStatus.DONE,
        _FAILED: TaskStatus.FAILED,
        _CRASHED: TaskStatus.FAILED,
        _CANCELLED: TaskStatus.CANCELLED,
    }
)

#: The task statuses of a live current workflow: the task is still being worked on.
LIVE_TASK_STATUSES: frozenset[TaskStatus] = frozenset(
    TASK_STATUS_FOR_WORKFLOW[status] for status in LIVE_WORKFLOW_STATUSES
)

#: action -> the task statuses it is allowed in.
_TASK_ACTIONS: Mapping[TaskAction, frozenset[TaskStatus]] = {
    TaskAction.CANCEL: frozenset({TaskStatus.PENDING, TaskStatus.PROCESSING}),
    # Done is not retried (nothing failed); reprocess makes a new attempt of a done task.
    TaskAction.RETRY: frozenset({TaskStatus.FAILED, TaskStatus.CANCELLED}),
    TaskAction.REPROCESS: frozenset({TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED}),
}


def allows(writer: Writer, current: WorkflowStatus | None, new: WorkflowStatus) -> bool:
    """Whether `writer` may set a workflow in `current` (None: a new row) to `new`."""
    return new in _TRANSITIONS[writer].get(current, frozenset())


def is_terminal(status: WorkflowStatus) -> bool:
    """A terminal workflow's run does nothing more (see `TERMINAL_WORKFLOW_STATUSES`)."""
    return status in TERMINAL_WORKFLOW_STATUSES


def task_status_for(status: WorkflowStatus) -> TaskStatus:
    """The status a task shows while `status` is its current workflow's."""
    return TASK_STATUS_FOR_WORKFLOW[status]


def task_is_live(status: TaskStatus) -> bool:
    """The task's current workflow is queued or running: its outputs may still change."""
    return status in LIVE_TASK_STATUSES


def task_allows(action: TaskAction, status: TaskStatus) -> bool:
    """Whether `action` may be asked of a task in `status`."""
    return status in _TASK_ACTIONS[action]


def task_statuses_for(action: TaskAction) -> tuple[TaskStatus, ...]:
    """The task statuses `action` is allowed in, in the enum's order (for messages)."""
    return tuple(status for status in TaskStatus if status in _TASK_ACTIONS[action])


#: Statuses a report may leave unchanged: the rows a plain report (step, progress,
#: message, no status change) lands on. The progress hot path matches exactly these, and
#: its SQL sets the task status from `TASK_STATUS_FOR_WORKFLOW` for each of them.
PLAIN_REPORT_STATUSES: tuple[WorkflowStatus, ...] = tuple(
    status for status in WorkflowStatus if allows(Writer.REPORT, status, status)
)


def plain_report_matches(status: WorkflowStatus | None) -> tuple[WorkflowStatus, ...]:
    """The workflow statuses a plain report with `status` (None: none given) may land on
    without a transition; empty when the report changes the status (the general path's)."""
    if status is None:
        return PLAIN_REPORT_STATUSES
    return (status,) if status in PLAIN_REPORT_STATUSES else ()


#: Terminal statuses the reconciler may still move to another status: it looks at
#: recently ended workflows in these (a completed one only when its result is missing).
CORRECTABLE_TERMINAL_STATUSES: frozenset[WorkflowStatus] = frozenset(
    current
    for current in TERMINAL_WORKFLOW_STATUSES
    if any(allows(Writer.RECONCILER, current, new) for new in WorkflowStatus if new is not current)
)
