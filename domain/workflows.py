"""Workflow instances: creating them and applying progress to a workflow and its task at once."""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any, cast

from sqlalchemy import Integer, String, Table, Text, bindparam, case, func, select, true
from sqlalchemy import update as sql_update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import ConflictError, NotFoundError
from core.storage.base import ObjectStore
from db.base import utcnow
from db.engine import autocommit_engine
from db.models import Task, TaskEvent, TaskStatus, Workflow, WorkflowStatus, without_nul
from db.repositories import TaskRepository, WorkflowRepository
from domain import events, lifecycle
from domain.lifecycle import Writer
from domain.manifest import ManifestPublisher


@dataclass(frozen=True)
class ProgressUpdate:
    """One report from a running flow (or its state hooks) about a workflow."""

    task_id: uuid.UUID
    workflow_id: uuid.UUID
    progress: int | None = None
    step: str | None = None
    message: str | None = None
    status: WorkflowStatus | None = None
    result: dict[str, Any] | None = None
    error: str | None = None
    #: `transient` or `permanent`; decides whether a failed task may be retried.
    error_kind: str | None = None


_WORKFLOWS = cast(Table, Workflow.__table__)
_TASKS = cast(Table, Task.__table__)
_EVENTS = cast(Table, TaskEvent.__table__)


def _plain_workflow_update(plain: tuple[WorkflowStatus, ...]) -> Any:
    """A plain report on a workflow in one of the `plain` statuses (the lifecycle's
    `PLAIN_REPORT_STATUSES`): progress only rises, step and message when given.

    One fixed parameter per plain status (`live_0`, ...), not an expanding IN: that
    rewrites the SQL on every call. `_plain_params` fills them for one report.
    """
    return (
        sql_update(_WORKFLOWS)
        .where(
            _WORKFLOWS.c.id == bindparam("w_id"),
            _WORKFLOWS.c.task_id == bindparam("t_id"),
            _WORKFLOWS.c.status.in_(
                [bindparam(f"live_{n}", type_=_WORKFLOWS.c.status.type) for n in range(len(plain))]
            ),
        )
        .values(
            progress=case(
                (_WORKFLOWS.c.progress < bindparam("p", type_=Integer()), bindparam("p")),
                else_=_WORKFLOWS.c.progress,
            ),
            current_step=func.coalesce(
                bindparam("step", type_=String()), _WORKFLOWS.c.current_step
            ),
            message=func.coalesce(bindparam("msg", type_=Text()), _WORKFLOWS.c.message),
            updated_at=bindparam("now", type_=_WORKFLOWS.c.updated_at.type),
        )
        .returning(*_WORKFLOWS.c)
    )


#: The workflow's half of a plain report, on SQLite (PostgreSQL runs both as one statement).
_PLAIN_WORKFLOW_UPDATE = _plain_workflow_update(lifecycle.PLAIN_REPORT_STATUSES)

#: The task follows its current workflow only (an older attempt's report leaves it alone).
_PLAIN_TASK_UPDATE = (
    sql_update(_TASKS)
    .where(_TASKS.c.id == bindparam("t_id"), _TASKS.c.workflow_id == bindparam("w_id"))
    .values(
        status=bindparam("status", type_=_TASKS.c.status.type),
        progress=bindparam("progress", type_=Integer()),
        current_step=bindparam("step", type_=String()),
        updated_at=bindparam("now", type_=_TASKS.c.updated_at.type),
    )
    .returning(*_TASKS.c)
)


def _single_statement_progress(
    plain: tuple[WorkflowStatus, ...] = lifecycle.PLAIN_REPORT_STATUSES,
    task_status_for: Mapping[WorkflowStatus, TaskStatus] = lifecycle.TASK_STATUS_FOR_WORKFLOW,
    *,
    for_hub: bool = False,
) -> Any:
    """Both plain-report updates as one PostgreSQL statement (data-modifying CTEs).

    Run in autocommit, a report is one round trip: no BEGIN, no second UPDATE, no COMMIT
    (a single statement is atomic). The task's update reads the workflow's new values, so
    PostgreSQL runs the workflow's first: the same lock order as everywhere else. A task
    that follows another attempt matches nothing in `t`; the outer join still returns the
    workflow. SQLite has no UPDATE in a CTE and keeps the two statements.

    Made from the lifecycle's table: the workflow's update matches the plain statuses,
    and the task's status is a CASE with one branch per plain status (no ELSE: `w` holds
    no other row, and a NULL would fail the NOT NULL column rather than guess).

    `for_hub`: the statement also returns what this process's event hub needs to hand the
    event to its streams at once (`events.CommittedEvent`); run while some stream is open.
    """
    w = _plain_workflow_update(plain).cte("w")
    t = (
        sql_update(_TASKS)
        .where(_TASKS.c.id == w.c.task_id, _TASKS.c.workflow_id == w.c.id)
        .values(
            status=case(
                *((w.c.status == status.value, task_status_for[status].value) for status in plain)
            ),
            progress=w.c.progress,
            current_step=w.c.current_step,
            updated_at=w.c.updated_at,
        )
        .returning(*_TASKS.c)
        .cte("t")
    )
    e = events.progress_upsert_cte(t, w)
    if not for_hub:
        return (
            select(*(c.label(f"w_{c.name}") for c in w.c), *(c.label(f"t_{c.name}") for c in t.c))
            .select_from(w.outerjoin(t, true()))
            .add_cte(e)
        )
    # For this process's event hub (`events.CommittedEvent`): the task's newest status
    # event as the statement's snapshot shows it (a subquery does not see the CTEs'
    # writes); the hub checks the status the row shows against what it handed out last.
    last_status_event = (
        select(func.coalesce(func.max(_EVENTS.c.id), 0))
        .where(_EVENTS.c.task_id == w.c.task_id, _EVENTS.c.type != events.PROGRESS_EVENT)
        .scalar_subquery()
    )
    return select(
        *(c.label(f"w_{c.name}") for c in w.c),
        *(c.label(f"t_{c.name}") for c in t.c),
        e.c.id.label("e_id"),
        last_status_event.label("e_after_id"),
    ).select_from(w.outerjoin(t, true()).outerjoin(e, true()))


_SINGLE_STATEMENT_PROGRESS = _single_statement_progress()
#: The same, with what the event hub needs (a subquery and the new id: with a second
#: subquery, 0.2-0.3 ms more of PostgreSQL's CPU per report in bench scenario 6), run only
#: while some stream is open here.
_SINGLE_STATEMENT_PROGRESS_FOR_HUB = _single_statement_progress(for_hub=True)
_W_COLUMNS = [c.name for c in _WORKFLOWS.c]
_T_COLUMNS = [c.name for c in _TASKS.c]


def _plain_params(
    status: WorkflowStatus | None,
    plain: tuple[WorkflowStatus, ...] = lifecycle.PLAIN_REPORT_STATUSES,
) -> dict[str, WorkflowStatus]:
    """The `live_n` parameters of the plain statements for a report with `status`.

    A report without a status matches every plain status; one that names a status
    matches rows already in it only (a `running` report on a queued row is a transition,
    which the general path makes). The statuses repeat to fill every parameter.
    """
    matches = lifecycle.plain_report_matches(status)
    return {f"live_{n}": matches[n % len(matches)] for n in range(len(plain))}


#: The same, made once for every status a plain report may name (None: it names none):
#: the hot path runs for almost every report.
_PLAIN_PARAMS: dict[WorkflowStatus | None, dict[str, WorkflowStatus]] = {
    status: _plain_params(status)
    for status in (None, *WorkflowStatus)
    if lifecycle.plain_report_matches(status)
}


def _refusal(workflow: Workflow, new_status: WorkflowStatus, writer: Writer) -> ConflictError:
    """The 409 for a status change the lifecycle refuses to `writer`. A report's or a
    cancel's on a terminal workflow names the status: that tells a running flow
    (`flows.progress`) that the database has given up on its run."""
    if writer is Writer.RECONCILER:
        return ConflictError(
            f"workflow {workflow.id} is {workflow.status.value}; "
            f"a correction cannot make it {new_status.value}"
        )
    if lifecycle.is_terminal(workflow.status):
        return ConflictError(
            f"workflow {workflow.id} is already {workflow.status.value}; "
            "a terminal status is final",
            status=workflow.status.value,
        )
    if new_status is WorkflowStatus.QUEUED:
        return ConflictError(
            f"workflow {workflow.id} is {workflow.status.value}; it cannot be queued again"
        )
    return ConflictError(
        f"workflow {workflow.id} is {workflow.status.value}; it cannot become {new_status.value}"
    )


def _is_plain_progress(update: ProgressUpdate) -> bool:
    """A report that only moves a live workflow along, changing no status (the bulk)."""
    return (
        update.status in _PLAIN_PARAMS
        and update.result is None
        and update.error is None
        and update.error_kind is None
    )


def merge_results(
    previous: dict[str, Any] | None, new: dict[str, Any] | None
) -> dict[str, Any] | None:
    """A task's result after an attempt: earlier outputs stay unless the attempt remade them.

    An attempt that only adds a format (reprocessing the back catalogue) must not make the
    task forget the formats and transcript it already had.
    """
    if new is None:
        return previous
    if previous is None:
        return new
    merged = {**previous, **new}
    merged["outputs"] = {**previous.get("outputs", {}), **new.get("outputs", {})}
    if "transcript" not in new and "transcript" in previous:
        merged["transcript"] = previous["transcript"]
    return merged


def mirror_on_task(task: Task, workflow: Workflow) -> None:
    """Make the task follow its current workflow (status, progress, step, result, error)."""
    if task.workflow_id != workflow.id:
        return  # an older attempt: its news no longer describe the task
    now = utcnow()
    status = lifecycle.task_status_for(workflow.status)
    task.status = status
    task.progress = workflow.progress
    task.current_step = workflow.current_step
    if status is TaskStatus.PROCESSING and task.started_at is None:
        task.started_at = workflow.started_at or now
    if lifecycle.is_terminal(workflow.status):
        task.completed_at = workflow.completed_at or now
        if workflow.status is WorkflowStatus.COMPLETED:
            task.result = merge_results(task.result, workflow.result)
            task.error = None
            task.error_kind = None
        else:
            task.error = workflow.error
    else:
        task.completed_at = None


class WorkflowService:
    """Tracks workflow instances; every write to a workflow row goes through here."""

    def __init__(
        self, session_factory: sessionmaker[Session], store: ObjectStore | None = None
    ) -> None:
        self.session_factory = session_factory
        #: With a store, a task's completion also publishes its episode's manifest.
        self.manifests = ManifestPublisher(session_factory, store) if store is not None else None
        bind = session_factory.kw.get("bind")
        #: On PostgreSQL, plain reports run as one autocommitted statement.
        self._autocommit = autocommit_engine(bind) if isinstance(bind, Engine) else None
        #: This process's event streams (the hub, set by `build_services`): told of each
        #: report this service applied.
        self.event_sink: events.EventSink | None = None

    def get(self, workflow_id: uuid.UUID) -> Workflow:
        with self.session_factory() as session:
            return WorkflowRepository(session).get_existing(workflow_id)

    def list_for_task(self, task_id: uuid.UUID) -> list[Workflow]:
        with self.session_factory() as session:
            TaskRepository(session).get_existing(task_id)
            return WorkflowRepository(session).list_for_task(task_id)

    def apply_progress(
        self, update: ProgressUpdate, *, writer: Writer = Writer.REPORT
    ) -> tuple[Workflow, Task]:
        """Apply one update to the workflow and its task in a single transaction.

        Rules: progress never goes backwards (a lower value is ignored, not an error);
        a status change the lifecycle refuses to `writer` (a flow's report, or a cancel)
        is 409 and changes nothing, in particular any change of a terminal status; a
        workflow that is not the task's is 409; unknown ids are 404.
        """
        if writer is Writer.REPORT and _is_plain_progress(update):
            applied = self._apply_plain_progress(update)
            if applied is not None:
                return applied
            # No live workflow matched: the general path finds out why (404, 409) or
            # applies the queued -> running transition the plain path leaves to it.
        with self.session_factory.begin() as session:
            # Row locks in one order everywhere (workflow, then task) so writers never deadlock.
            # `Session.get`, not the repositories' reads: 0.1-0.2 ms less CPU per status
            # change (1.19 against 1.33-1.39 ms for the transaction with both reads).
            workflow = session.get(Workflow, update.workflow_id, with_for_update=True)
            if workflow is None:
                raise NotFoundError(f"workflow {update.workflow_id} not found")
            if workflow.task_id != update.task_id:
                TaskRepository(session).get_existing(update.task_id)
                raise ConflictError(
                    f"workflow {update.workflow_id} does not belong to task {update.task_id}"
                )
            task = session.get(Task, update.task_id, with_for_update=True)
            assert task is not None  # the foreign key guarantees it
            new_status = update.status or workflow.status
            if not lifecycle.allows(writer, workflow.status, new_status):
                raise _refusal(workflow, new_status, writer)
            before = task.status
            self._apply(workflow, update, new_status)
            mirror_on_task(task, workflow)
            if update.error_kind is not None and task.workflow_id == workflow.id:
                task.error_kind = update.error_kind
            session.flush()
            event = events.record_status_change(session, task, before)
        self._tell_streams(event)
        self._publish_if_done(workflow, task)
        return workflow, task

    def _tell_streams(self, event: events.CommittedEvent | None) -> None:
        """After a commit: this process's streams get the status event at once (or read
        the log, when there is none)."""
        if self.event_sink is None:
            return
        if event is None:
            self.event_sink.look_now()
        else:
            self.event_sink.committed(event)

    def _publish_if_done(self, workflow: Workflow, task: Task) -> None:
        """After a committed completion of the task's current workflow: the manifest."""
        if (
            self.manifests is not None
            and workflow.status is WorkflowStatus.COMPLETED
            and task.workflow_id == workflow.id
        ):
            self.manifests.publish_quietly(task.episode_id)

    def _apply_plain_progress(self, update: ProgressUpdate) -> tuple[Workflow, Task] | None:
        """The hot path: one `UPDATE ... RETURNING` per row, no read before the write.

        Almost every report is a running flow's step and percentage. The row's own
        conditions (the task's workflow, still live) stand in for the reads and checks of
        the general path; when they match nothing, None sends the update there. Rows are
        locked in the same order as everywhere else (workflow, then task). The statements
        are Core and built once: the ORM's UPDATE ... RETURNING cost twice the CPU.

        Hand-written on purpose, not advanced-alchemy's repositories: in one run of
        `python -m bench.progress_probe 1000` (PostgreSQL, 2026-11-29) a report took 0.39 ms
        CPU / 3.0 ms wall here and 1.62 ms CPU / 6.3 ms wall on the general path (the
        repositories' `get_one_or_none(with_for_update=True)` for both rows, ORM flush).
        """
        params = {
            "w_id": update.workflow_id,
            "t_id": update.task_id,
            **_PLAIN_PARAMS[update.status],
            "p": update.progress,
            "step": without_nul(update.step),
            "msg": without_nul(update.message),
            "now": utcnow(),
        }
        if self._autocommit is not None:
            return self._apply_plain_progress_pg(self._autocommit, update, params)
        with self.session_factory.begin() as session:
            row = session.execute(_PLAIN_WORKFLOW_UPDATE, params).one_or_none()
            if row is None:
                return None
            workflow = Workflow(**row._asdict())
            task_row = session.execute(
                _PLAIN_TASK_UPDATE,
                {
                    "t_id": update.task_id,
                    "w_id": workflow.id,
                    "status": lifecycle.task_status_for(workflow.status),
                    "progress": workflow.progress,
                    "step": workflow.current_step,
                    "now": workflow.updated_at,
                },
            ).one_or_none()
            if task_row is None:  # an older attempt's news: the task follows another workflow
                return workflow, session.get_one(Task, update.task_id)
            task = Task(**task_row._asdict())
            events.replace_progress_sqlite(
                session,
                task.id,
                events.progress_data(
                    task.id, task.status, task.progress, task.current_step, workflow.message
                ),
                workflow.updated_at,
            )
        if self.event_sink is not None:
            self.event_sink.look_now()
        return workflow, task

    def _apply_plain_progress_pg(
        self, engine: Engine, update: ProgressUpdate, params: dict[str, Any]
    ) -> tuple[Workflow, Task] | None:
        """The hot path on PostgreSQL: one statement, one round trip (see above).

        A connection the server dropped (a restart) fails once and is retried on a new one:
        applying a plain report twice leaves the same rows (progress only rises).
        """
        sink = self.event_sink
        for_hub = sink is not None and sink.streaming
        statement = _SINGLE_STATEMENT_PROGRESS_FOR_HUB if for_hub else _SINGLE_STATEMENT_PROGRESS
        for attempt in (1, 2):
            try:
                with engine.connect() as conn:
                    row = conn.execute(statement, params).one_or_none()
                break
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        if row is None:
            return None
        values = row._mapping
        workflow = Workflow(**{name: values[f"w_{name}"] for name in _W_COLUMNS})
        if values["t_id"] is None:  # an older attempt's news: the task follows another workflow
            with self.session_factory() as session:
                return workflow, session.get_one(Task, update.task_id)
        task = Task(**{name: values[f"t_{name}"] for name in _T_COLUMNS})
        if sink is not None and not for_hub:
            sink.look_now()  # a stream opened meanwhile: it reads the log
        elif sink is not None:
            sink.committed(
                events.CommittedEvent(
                    event_id=values["e_id"],
                    task_id=task.id,
                    type=events.PROGRESS_EVENT,
                    data=events.progress_data(
                        task.id, task.status, task.progress, task.current_step, workflow.message
                    ),
                    task_type=task.type,
                    episode_id=task.episode_id,
                    after_id=values["e_after_id"],
                )
            )
        return workflow, task

    def correct(
        self,
        workflow_id: uuid.UUID,
        status: WorkflowStatus,
        reason: str,
        *,
        error: str | None = None,
        error_kind: str | None = None,
        result: dict[str, Any] | None = None,
        expected: WorkflowStatus | None = None,
    ) -> tuple[Workflow, Task] | None:
        """The reconciler's write: set a status even over a terminal one, and record why.

        `expected` guards against a race: if the row changed since the caller looked
        (a late hook landed first), nothing is written and None is returned. A correction
        the lifecycle refuses to the reconciler (e.g. a cancelled workflow made crashed)
        is a 409 and writes nothing.
        """
        with self.session_factory.begin() as session:
            workflow = WorkflowRepository(session).get_existing(workflow_id, with_for_update=True)
            task = TaskRepository(session).get_one_or_none(
                id=workflow.task_id, with_for_update=True
            )
            assert task is not None
            if expected is not None and workflow.status is not expected:
                return None
            if not lifecycle.allows(Writer.RECONCILER, workflow.status, status):
                raise _refusal(workflow, status, Writer.RECONCILER)
            now = utcnow()
            workflow.corrections = [
                *workflow.corrections,
                {
                    "at": now.isoformat(),
                    "from": workflow.status.value,
                    "to": status.value,
                    "reason": reason,
                },
            ]
            if lifecycle.is_terminal(status):
                workflow.completed_at = now
            else:
                workflow.completed_at = None
            if status is WorkflowStatus.RUNNING and workflow.started_at is None:
                workflow.started_at = now
            if status is WorkflowStatus.COMPLETED:
                workflow.progress = 100
                workflow.error = None
            if result is not None:
                workflow.result = result
            if error is not None:
                workflow.error = error
            workflow.message = reason
            workflow.status = status
            workflow.updated_at = now
            before = task.status
            mirror_on_task(task, workflow)
            if error_kind is not None and task.workflow_id == workflow.id:
                task.error_kind = error_kind
            session.flush()
            event = events.record_status_change(session, task, before)
        self._tell_streams(event)
        self._publish_if_done(workflow, task)
        return workflow, task

    @staticmethod
    def _apply(workflow: Workflow, update: ProgressUpdate, new_status: WorkflowStatus) -> None:
        now = utcnow()
        if update.progress is not None:
            workflow.progress = max(workflow.progress, update.progress)
        if new_status is WorkflowStatus.COMPLETED:
            workflow.progress = 100
        if update.step is not None:
            workflow.current_step = update.step
        if update.message is not None:
            workflow.message = update.message
        if update.result is not None:
            workflow.result = update.result
        if update.error is not None:
            workflow.error = update.error
        if new_status is WorkflowStatus.RUNNING and workflow.started_at is None:
            workflow.started_at = now
        if lifecycle.is_terminal(new_status):
            workflow.completed_at = now
            if workflow.started_at is None and new_status is WorkflowStatus.COMPLETED:
                workflow.started_at = now
        workflow.status = new_status
        # Touch the row even when nothing else changed: updated_at is the liveness signal.
        workflow.updated_at = now
