"""The flow-run outbox: Prefect flow runs for workflows that are already committed here.

Why an outbox: creating a flow run costs Prefect's server ~20 ms of CPU (parameter schema
validation, orchestration rules, events), so a `POST /tasks` that waited for it could not
go faster than one Prefect server allows (35/s measured on 2 cores), and a Prefect restart
turned every request in that window into a failed task. Now `POST /tasks` commits the task
and its queued workflow and answers; a dispatcher thread in each API process creates the
flow runs behind it, in the order the workflows were created, and writes their ids back.

* Nothing is lost: a workflow waiting for its flow run is a row (`instance_id IS NULL`,
  `status = 'queued'`), so an API process that dies leaves it for the next one.
* No duplicates: each attempt has its own Prefect idempotency key, so two dispatchers that
  race for one row get the same flow run back; `dispatch_after` is a lease that keeps them
  from racing in the first place (claims use `FOR UPDATE SKIP LOCKED` on PostgreSQL).
* Prefect down: the row is retried with a growing back-off and its message says why it
  waits; past `AUDIOFLOW_DISPATCH_DEADLINE_S` the attempt fails as transient (and can be
  retried), so no row claims work that no flow run is doing.
* Cancelled while its flow run was being created: the run is recorded and cancelled in
  Prefect straight away, so it never starts.

Retry, reprocess and the reconciler dispatch their one workflow synchronously with the
same code (`dispatch`): their callers want the flow run's id in the answer. If Prefect
created the run but its answer was lost (every try of the client timed out or lost its
connection), the attempt failed "could not start" while its run exists; before a new
attempt, `recover_lost_run` looks that run up by its idempotency key and makes it the
attempt's again, instead of starting a second run for the task.
"""

from __future__ import annotations

import contextlib
import logging
import uuid
from collections.abc import Callable
from datetime import timedelta
from typing import cast

from sqlalchemy import Table
from sqlalchemy.orm import Session, sessionmaker

from core.errors import AudioflowError, NotFoundError, UpstreamUnavailableError
from core.settings import Settings
from db.base import utcnow
from db.models import Task, Workflow, WorkflowStatus
from db.repositories import TaskRepository, WorkflowRepository
from domain import events, lifecycle, prefect_gateway
from domain.contracts import ErrorKind
from domain.leases import lease_next_due
from domain.lifecycle import WAITING_FOR_RUN, Writer
from domain.polling_threads import PollingThreads
from domain.task_types import get_task_type
from domain.workflows import mirror_on_task

log = logging.getLogger(__name__)

#: `prefect_gateway.start_flow_run`'s signature; tests may pass their own.
FlowRunStarter = Callable[..., prefect_gateway.FlowRunInfo]

_WORKFLOWS = cast(Table, Workflow.__table__)

#: How long a claimed row is left to its dispatcher before another may take it: well over
#: one Prefect call with its retries (timeout plus ~15 s of client back-off).
LEASE_S = 60.0
#: Back-off between attempts while Prefect cannot be reached: grows with the row's age.
MIN_BACKOFF_S, MAX_BACKOFF_S = 0.5, 10.0
#: How often an idle dispatcher looks for rows other processes left (it is woken at once
#: for the tasks its own process creates).
POLL_S = 1.0


def idempotency_key_for(deployment: str, task_id: uuid.UUID, attempt: int) -> str:
    """Prefect's key for one attempt: unique per deployment, task and attempt."""
    return f"{deployment}:{task_id}:{attempt}"


#: Prefect state types after which a flow run does nothing more.
ENDED_PREFECT_STATES = frozenset({"COMPLETED", "FAILED", "CRASHED", "CANCELLED"})
#: How `_fail_to_start` begins its error: the attempt has no flow run that we know of.
FAILED_TO_START = "could not start the flow run"
#: The status `_fail_to_start` gives an attempt whose flow run could not be created.
NOT_STARTED = WorkflowStatus.FAILED


def _awaits_run(workflow: Workflow) -> bool:
    """The workflow is the dispatcher's: waiting for a flow run it has not got yet."""
    return workflow.instance_id is None and workflow.status is WAITING_FOR_RUN


def _failed_to_start(workflow: Workflow) -> bool:
    """The attempt failed only because its flow run could not be created (or so we thought),
    and the lifecycle lets the dispatcher queue it again if the run turns up."""
    return (
        workflow.instance_id is None
        and workflow.status is NOT_STARTED
        and (workflow.error or "").startswith(FAILED_TO_START)
        and lifecycle.allows(Writer.DISPATCHER, workflow.status, WAITING_FOR_RUN)
    )


def _locked_rows(session: Session, workflow_id: uuid.UUID) -> tuple[Workflow, Task]:
    """The workflow and its task, locked in the order every writer uses (workflow first)."""
    workflow = WorkflowRepository(session).get_one_or_none(id=workflow_id, with_for_update=True)
    if workflow is None:
        raise NotFoundError(f"workflow {workflow_id} is gone")
    task = TaskRepository(session).get_one_or_none(id=workflow.task_id, with_for_update=True)
    assert task is not None  # the foreign key guarantees it
    return workflow, task


class FlowRunDispatcher:
    """Creates the flow runs of queued workflows; runs as a thread in each API process."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        start_flow_run: FlowRunStarter = prefect_gateway.start_flow_run,
        *,
        poll_s: float = POLL_S,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.start_flow_run = start_flow_run
        self.poll_s = poll_s
        self.deadline_s = settings.prefect.dispatch_deadline_s
        self.threads = settings.prefect.dispatch_threads
        self._threads = PollingThreads[None](
            "audioflow-dispatcher",
            lambda _: self.dispatch_due(),
            contextlib.nullcontext,
            poll_s=poll_s,
        )

    # -- the background loop (domain.polling_threads) ----------------------------------------

    def start(self) -> None:
        """Start the dispatcher threads (the app's startup hook); idempotent.

        Several threads, because one flow-run creation is mostly waiting for Prefect's
        server: with one thread runs were created at 18/s in bench/, below what Prefect
        takes when asked by several callers at once.
        """
        if self.threads == 0 and not self._threads.running:
            log.warning(
                "AUDIOFLOW_DISPATCH_THREADS=0: this process creates no flow runs; another API "
                "process on the same database must, or new tasks stay queued"
            )
        self._threads.start(self.threads)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop after the current flow runs (the app's shutdown hook); the rest stay queued."""
        self._threads.stop(timeout_s)

    def notify(self) -> None:
        """A workflow was committed: one idle thread looks now rather than at its next poll."""
        self._threads.notify()

    def dispatch_due(self) -> bool:
        """Dispatch the oldest due workflow, if any; False when none is due."""
        if self._threads.stopping:
            return False
        workflow_id = self._claim()
        if workflow_id is None:
            return False
        try:
            self.dispatch(workflow_id, give_up_at_once=False)
        except AudioflowError as exc:  # e.g. a row that changed under us: it says why
            log.warning("dispatching workflow %s: %s", workflow_id, exc.detail)
        return True

    def _claim(self) -> uuid.UUID | None:
        """Lease the oldest due workflow that has no flow run (one short transaction)."""
        now = utcnow()
        with self.session_factory.begin() as session:
            workflow_id = lease_next_due(
                session,
                _WORKFLOWS,
                _WORKFLOWS.c.instance_id.is_(None),
                _WORKFLOWS.c.status == WAITING_FOR_RUN,
                due=_WORKFLOWS.c.dispatch_after,
                order_by=_WORKFLOWS.c.created_at,
                now=now,
                lease_s=LEASE_S,
            )
        return cast("uuid.UUID | None", workflow_id)

    # -- one workflow ----------------------------------------------------------------------

    def dispatch(self, workflow_id: uuid.UUID, *, give_up_at_once: bool = True) -> Task:
        """Create the workflow's flow run and record its id; return the task as it now is.

        If Prefect cannot be reached: with `give_up_at_once` (a caller waiting for the
        answer) the attempt fails as transient at once; otherwise the row waits for the next
        try until the dispatch deadline has passed.
        """
        with self.session_factory() as session:
            workflow = WorkflowRepository(session).get_one_or_none(id=workflow_id)
            task = (
                TaskRepository(session).get_one_or_none(id=workflow.task_id) if workflow else None
            )
        if workflow is None or task is None:
            raise NotFoundError(f"workflow {workflow_id} is gone")
        if not _awaits_run(workflow):
            return task  # done already (by another dispatcher), or cancelled before its run
        episode = task.episode_id or "task"
        try:
            parameters = get_task_type(task.type).flow_run_parameters(workflow.parameters)
        except ValueError as exc:  # a row no version of the API wrote: no run can take it
            log.warning("workflow %s has invalid parameters: %s", workflow.id, exc)
            return self._fail_to_start(workflow.id, f"invalid flow parameters: {exc}")
        try:
            info = self.start_flow_run(
                self.settings.prefect.api_url,
                workflow.deployment_name,
                parameters,
                idempotency_key=idempotency_key_for(
                    workflow.deployment_name, task.id, workflow.attempt
                ),
                name=f"{episode}-{str(task.id)[:8]}-a{workflow.attempt}",
                tags=[f"task:{task.id}", f"episode:{episode}", f"type:{task.type}"],
                timeout_s=self.settings.prefect.trigger_timeout_s,
            )
        except UpstreamUnavailableError as exc:
            age = (utcnow() - workflow.created_at).total_seconds()
            if give_up_at_once or age >= self.deadline_s:
                log.warning("could not start a flow run for task %s: %s", task.id, exc.detail)
                return self._fail_to_start(workflow.id, exc.detail)
            return self._back_off(workflow.id, age, exc.detail)
        return self._record(workflow.id, info.id)

    def recover_lost_run(self, workflow_id: uuid.UUID) -> Task | None:
        """The task again with its attempt's flow run, if that attempt failed to start only
        because Prefect's answer was lost; None when there is nothing to recover.

        Raises UpstreamUnavailableError when Prefect cannot be asked: the caller must not
        start another attempt then (it could be the task's second live run).
        """
        with self.session_factory() as session:
            workflow = WorkflowRepository(session).get_one_or_none(id=workflow_id)
            task = (
                TaskRepository(session).get_one_or_none(id=workflow.task_id) if workflow else None
            )
        if workflow is None or task is None or not _failed_to_start(workflow):
            return None
        key = idempotency_key_for(workflow.deployment_name, task.id, workflow.attempt)
        info = prefect_gateway.find_flow_run(
            self.settings.prefect.api_url, key, timeout_s=self.settings.prefect.trigger_timeout_s
        )
        if info is None or info.state_type in ENDED_PREFECT_STATES:
            return None  # never created, or over: a new attempt is right
        with self.session_factory.begin() as session:
            workflow, task = _locked_rows(session, workflow_id)
            if not _failed_to_start(workflow):
                return None  # changed meanwhile (another caller recovered it)
            now = utcnow()
            workflow.corrections = [
                *workflow.corrections,
                {
                    "at": now.isoformat(),
                    "from": workflow.status.value,
                    "to": WAITING_FOR_RUN.value,
                    "reason": f"its flow run {info.id} was found by its idempotency key "
                    "(Prefect's answer to the creation had been lost)",
                },
            ]
            workflow.status = WAITING_FOR_RUN
            workflow.instance_id = info.id
            workflow.error = None
            workflow.completed_at = None
            workflow.dispatch_after = None
            workflow.message = f"flow run {info.id} recovered by its idempotency key"
            workflow.updated_at = now
            before = task.status
            mirror_on_task(task, workflow)
            if task.workflow_id == workflow.id:
                task.workflow_instance_id = info.id
                task.error = None
                task.error_kind = None
            session.flush()
            events.record_status_change(session, task, before)
        log.info("recovered flow run %s of workflow %s by its key", info.id, workflow_id)
        return task

    def _record(self, workflow_id: uuid.UUID, flow_run_id: str) -> Task:
        """Write the flow run's id on both rows; cancel the run if the workflow ended meanwhile."""
        with self.session_factory.begin() as session:
            workflow, task = _locked_rows(session, workflow_id)
            orphan = lifecycle.is_terminal(workflow.status) and workflow.instance_id is None
            if workflow.instance_id is None:
                workflow.instance_id = flow_run_id
                workflow.dispatch_after = None
                if task.workflow_id == workflow.id:
                    task.workflow_instance_id = flow_run_id
            session.flush()
        if orphan:
            # Cancelled (or failed) while Prefect was creating the run: stop it before a
            # worker starts it. Best effort; the reconciler sees the rest.
            try:
                prefect_gateway.cancel_unstarted_flow_run(
                    self.settings.prefect.api_url,
                    flow_run_id,
                    f"audioflow workflow {workflow_id} ended before its run started",
                )
            except AudioflowError as exc:
                log.warning("could not cancel orphan flow run %s: %s", flow_run_id, exc.detail)
        return task

    def _back_off(self, workflow_id: uuid.UUID, age_s: float, reason: str) -> Task:
        delay = min(MAX_BACKOFF_S, max(MIN_BACKOFF_S, age_s / 4))
        with self.session_factory.begin() as session:
            workflow, task = _locked_rows(session, workflow_id)
            if _awaits_run(workflow):
                workflow.dispatch_after = utcnow() + timedelta(seconds=delay)
                workflow.message = f"waiting for Prefect (next try in {delay:.1f} s): {reason}"
            session.flush()
        return task

    def _fail_to_start(self, workflow_id: uuid.UUID, reason: str) -> Task:
        """The attempt fails as transient: its flow run could not be created in time.

        Only while the row still waits for its run and the lifecycle allows it: a cancel
        or a recorded run that landed meanwhile wins.
        """
        with self.session_factory.begin() as session:
            workflow, task = _locked_rows(session, workflow_id)
            if _awaits_run(workflow) and lifecycle.allows(
                Writer.DISPATCHER, workflow.status, NOT_STARTED
            ):
                workflow.status = NOT_STARTED
                workflow.error = f"{FAILED_TO_START}: {reason}"
                workflow.completed_at = utcnow()
                workflow.dispatch_after = None
                before = task.status
                mirror_on_task(task, workflow)
                if task.workflow_id == workflow.id:
                    task.error_kind = ErrorKind.TRANSIENT
                events.record_status_change(session, task, before)
            session.flush()
        return task
