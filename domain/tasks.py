"""Tasks: creating them, starting their workflows in Prefect, and reading them back."""

from __future__ import annotations

import asyncio
import hashlib
import json
import logging
import time
import uuid
from dataclasses import dataclass
from typing import Any

from advanced_alchemy.service import OffsetPagination
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from core.errors import ConflictError, NotFoundError
from core.settings import Settings
from core.storage.base import ObjectStore
from db.models import Task, TaskStatus, Workflow, WorkflowStatus
from db.repositories import TaskRepository, WorkflowRepository
from domain import events, lifecycle, prefect_gateway
from domain.dispatch import ENDED_PREFECT_STATES, FlowRunDispatcher
from domain.lifecycle import TaskAction, Writer
from domain.outputs import remove_attempt_outputs, result_keys
from domain.task_types import get_task_type
from domain.webhooks import check_callback_url
from domain.workflows import ProgressUpdate, WorkflowService

log = logging.getLogger(__name__)

#: Prefect state types after which a flow run does nothing more.
FINAL_PREFECT_STATES = ENDED_PREFECT_STATES
#: How long a cancel waits for Prefect to stop the run (README: "within ~15 s"), and how
#: often it looks meanwhile.
CANCEL_WAIT_S, CANCEL_POLL_S = 15.0, 0.5


def request_digest(type_: str, canonical: dict[str, Any], callback_url: str | None = None) -> str:
    """SHA-256 of a task request (type, validated payload, callback URL), independent of
    key order.

    Digested in the type's comparable form (`TaskType.comparable`): a field the type gained
    later is left out while it holds what its absence means, so a digest kept from before
    the field existed still matches the same request made now (a request without a
    callback URL digests as before callback URLs existed)."""
    comparable = get_task_type(type_).comparable(canonical)
    request: dict[str, Any] = {"type": type_, "payload": comparable}
    if callback_url is not None:
        request["callbackUrl"] = callback_url
    body = json.dumps(request, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


def _not_allowed(task: Task, action: TaskAction, verb: str) -> ConflictError:
    """The 409 for an action the lifecycle refuses in the task's status; names the ones
    it is allowed in ("only failed or cancelled tasks can be retried")."""
    allowed = " or ".join(status.value for status in lifecycle.task_statuses_for(action))
    return ConflictError(f"task {task.id} is {task.status.value}; only {allowed} tasks {verb}")


@dataclass(frozen=True)
class CreatedTask:
    """A task and whether this call created it (False: an idempotent replay)."""

    task: Task
    created: bool


class TaskService:
    """Creates tasks and starts one workflow per attempt (through the dispatcher).

    Built by `domain.composition`, which hands it the process's dispatcher (the one whose
    threads the API starts) and WorkflowService (every workflow write goes through it).
    """

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        *,
        dispatcher: FlowRunDispatcher,
        workflows: WorkflowService,
        store: ObjectStore | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.store = store
        self.dispatcher = dispatcher
        self.workflows = workflows
        #: Cancellations in progress in this process (one event loop), by task.
        self._cancels: dict[uuid.UUID, asyncio.Task[Task]] = {}

    # -- reads ---------------------------------------------------------------------------

    def get(self, task_id: uuid.UUID) -> Task:
        with self.session_factory() as session:
            return TaskRepository(session).get_existing(task_id)

    def list_page(
        self,
        *,
        status: TaskStatus | None = None,
        type_: str | None = None,
        episode_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> OffsetPagination[Task]:
        """One page of tasks, newest first, and how many match the filters."""
        with self.session_factory() as session:
            items, total = TaskRepository(session).find(
                status=status, type_=type_, episode_id=episode_id, limit=limit, offset=offset
            )
            return OffsetPagination(items=items, limit=limit, offset=offset, total=total)

    # -- writes --------------------------------------------------------------------------

    def create_task(
        self,
        type_: str,
        payload: Any,
        *,
        idempotency_key: str | None = None,
        callback_url: str | None = None,
    ) -> CreatedTask:
        """Store a task and its first workflow; the dispatcher starts the flow run.

        Answers as soon as both rows are committed (the task is `pending` and its
        `workflow_instance_id` empty until Prefect has accepted the run): see
        `domain.dispatch` for why. With an idempotency key, a repeat of the same
        request returns the first task; the same key with a different request (another
        callback URL too) is a conflict. A `callback_url` is checked (webhooks on, a public
        address unless allowed; 422) and receives the task's events (`domain.webhooks`).
        """
        task_type = get_task_type(type_)
        canonical = task_type.validate(payload)
        if callback_url is not None:
            check_callback_url(callback_url, self.settings.webhooks)
        if idempotency_key is not None:
            existing = self._replay(idempotency_key, type_, canonical, callback_url)
            if existing is not None:
                return CreatedTask(existing, created=False)
        try:
            with self.session_factory.begin() as session:
                task = TaskRepository(session).add(
                    Task(
                        type=type_,
                        status=lifecycle.task_status_for(lifecycle.WAITING_FOR_RUN),
                        episode_id=task_type.episode_id(canonical),
                        payload=canonical,
                        idempotency_key=idempotency_key,
                        request_digest=request_digest(type_, canonical, callback_url),
                        callback_url=callback_url,
                    )
                )
                self._new_workflow(session, task)
        except IntegrityError:
            # A concurrent request with the same key won the race: answer with its task.
            if idempotency_key is None:
                raise
            existing = self._replay(idempotency_key, type_, canonical, callback_url)
            if existing is None:
                raise
            return CreatedTask(existing, created=False)
        self.dispatcher.notify()
        return CreatedTask(task, created=True)

    def _replay(
        self, key: str, type_: str, canonical: dict[str, Any], callback_url: str | None
    ) -> Task | None:
        with self.session_factory() as session:
            existing = TaskRepository(session).get_by_idempotency_key(key)
        if existing is None:
            return None
        # The request as first made: the payload itself may have changed since (reprocessing
        # adds formats to it). Rows from before the digest was kept have only the payload.
        task_type = get_task_type(type_)
        same = (
            existing.request_digest == request_digest(type_, canonical, callback_url)
            if existing.request_digest is not None
            else existing.type == type_
            and task_type.comparable(existing.payload) == task_type.comparable(canonical)
            and existing.callback_url == callback_url
        )
        if not same:
            raise ConflictError(
                "Idempotency-Key was already used for a different request", taskId=str(existing.id)
            )
        return existing

    def _new_workflow(
        self, session: Session, task: Task, parameters: dict[str, Any] | None = None
    ) -> Workflow:
        """A queued workflow row for the task's next attempt, made current on the task.

        `parameters` overrides the flow parameters derived from the payload (reprocessing
        that only adds formats).
        """
        task_type = get_task_type(task.type)
        status = lifecycle.WAITING_FOR_RUN
        assert lifecycle.allows(Writer.NEW_ATTEMPT, lifecycle.NEW_ROW, status)
        task.attempts += 1
        workflow = WorkflowRepository(session).add(
            Workflow(
                name=task_type.workflow_name,
                deployment_name=task_type.deployment_name(self.settings),
                task_id=task.id,
                attempt=task.attempts,
                status=status,
                progress=0,
                parameters={},
                corrections=[],
            )
        )
        workflow.parameters = {
            **task_type.flow_parameters(
                str(task.id), str(workflow.id), task.payload, workflow.attempt
            ),
            **(parameters or {}),
        }
        task.workflow_id = workflow.id
        task.workflow_instance_id = None
        before = task.status
        task.status = lifecycle.task_status_for(status)
        task.progress = 0
        task.current_step = None
        # task.result is kept: outputs of earlier attempts still exist until replaced.
        task.error = None
        task.error_kind = None
        task.started_at = None
        task.completed_at = None
        session.flush()
        # A new attempt of an ended task (`task.pending`); a new task records nothing.
        events.record_status_change(session, task, before)
        return workflow

    def _recover_lost_run(self, task_id: uuid.UUID) -> Task | None:
        """The task with its current attempt's run found again (see `recover_lost_run`)."""
        with self.session_factory() as session:
            task = TaskRepository(session).get_one_or_none(id=task_id)
            workflow_id = task.workflow_id if task is not None else None
        return self.dispatcher.recover_lost_run(workflow_id) if workflow_id else None

    def retry(self, task_id: uuid.UUID) -> Task:
        """A new attempt for a failed or cancelled task (409 for any other status).

        If the failed attempt's flow run exists after all (Prefect's answer to its creation
        was lost), that run is the attempt's again and no new one is started.
        """
        recovered = self._recover_lost_run(task_id)
        if recovered is not None:
            return recovered
        with self.session_factory.begin() as session:
            task = TaskRepository(session).get_existing(task_id, with_for_update=True)
            if not lifecycle.task_allows(TaskAction.RETRY, task.status):
                raise _not_allowed(task, TaskAction.RETRY, "can be retried")
            workflow = self._new_workflow(session, task)
        return self.dispatcher.dispatch(workflow.id)

    def reprocess(self, task_id: uuid.UUID, add_formats: list[str] | None = None) -> Task:
        """A new attempt for a finished task; with `add_formats`, only those formats are made.

        The added formats join the task's payload, so the task's result ends up listing
        every format it has. A task whose last attempt's run turns out to exist (its
        creation answer was lost) gets that run back and is 409 until it ends.
        """
        self._recover_lost_run(task_id)
        task_type = None
        with self.session_factory.begin() as session:
            task = TaskRepository(session).get_existing(task_id, with_for_update=True)
            if not lifecycle.task_allows(TaskAction.REPROCESS, task.status):
                raise ConflictError(f"task {task_id} is {task.status.value}; wait for it to end")
            task_type = get_task_type(task.type)
            overrides: dict[str, Any] | None = None
            if add_formats:
                current = list(task.payload.get("encodingFormats", []))
                merged = current + [f for f in add_formats if f not in current]
                task.payload = task_type.validate({**task.payload, "encodingFormats": merged})
                if task.status is TaskStatus.DONE:
                    overrides = {
                        "encoding_formats": [f for f in add_formats if f not in current]
                        or list(add_formats),
                        "transcribe": False,
                    }
                    if (task.result or {}).get("waveform"):
                        # Drawn from the source, not a format: the one it has stays current
                        # (the task's result keeps what an attempt did not remake).
                        overrides["waveform"] = False
            workflow = self._new_workflow(session, task, overrides)
        return self.dispatcher.dispatch(workflow.id)

    async def cancel(self, task_id: uuid.UUID, *, wait_s: float = CANCEL_WAIT_S) -> Task:
        """Cancel a pending or processing task: its flow run in Prefect, then both rows.

        Waits (bounded) for Prefect to stop the run before removing the attempt's partial
        outputs (its own folder only, `remove_attempt_outputs`), so that no late upload
        lands after the clean-up. Outputs of other attempts and other tasks are never
        touched. A task that already ended is 409, also when it completed while
        the cancellation was on its way.

        Async so that the wait holds no worker thread: database and Prefect calls run in
        threads one at a time, and the wait between them is an `asyncio.sleep`. Concurrent
        cancels of one task in this process share one cancellation (one Prefect call, one
        wait) and all get its outcome.
        """
        loop = asyncio.get_running_loop()
        shared = self._cancels.get(task_id)
        if shared is None or shared.get_loop() is not loop:
            shared = loop.create_task(self._cancel(task_id, wait_s))
            self._cancels[task_id] = shared
            shared.add_done_callback(lambda done: self._forget_cancel(task_id, done))
        # Shielded: a client that hangs up does not abort the cancellation the others await.
        return await asyncio.shield(shared)

    def _forget_cancel(self, task_id: uuid.UUID, done: asyncio.Task[Task]) -> None:
        if self._cancels.get(task_id) is done:
            del self._cancels[task_id]
        if not done.cancelled():
            done.exception()  # retrieved: every awaiter got it already

    async def _cancel(self, task_id: uuid.UUID, wait_s: float) -> Task:
        workflow = await asyncio.to_thread(self._cancellable_workflow, task_id)
        stopped = True
        if workflow.instance_id:
            stopped, final = await self._stop_flow_run(workflow.instance_id, wait_s)
            if final == "COMPLETED":
                raise ConflictError(f"task {task_id} completed before it could be cancelled")
        dispatched = await asyncio.to_thread(self._mark_cancelled, task_id, workflow)
        if dispatched is not None:
            stopped, _ = await self._stop_flow_run(dispatched, wait_s)
        if not stopped:
            # A live run could still upload behind a clean-up: leave its folder. The run
            # stops at its next report or upload check (the workflow is terminal now), and
            # the retention pass removes what it left.
            log.warning("task %s cancelled; its run had not stopped, outputs left", task_id)
            return await asyncio.to_thread(self.get, task_id)
        return await asyncio.to_thread(self._remove_partial_outputs, task_id, workflow)

    def _cancellable_workflow(self, task_id: uuid.UUID) -> Workflow:
        with self.session_factory() as session:
            task = TaskRepository(session).get_existing(task_id)
            if not lifecycle.task_allows(TaskAction.CANCEL, task.status):
                raise _not_allowed(task, TaskAction.CANCEL, "can be cancelled")
            workflow = (
                WorkflowRepository(session).get_one_or_none(id=task.workflow_id)
                if task.workflow_id
                else None
            )
        if workflow is None:
            raise ConflictError(f"task {task_id} has no workflow to cancel")
        return workflow

    def _mark_cancelled(self, task_id: uuid.UUID, workflow: Workflow) -> str | None:
        """Both rows cancelled; returns a flow run recorded meanwhile that is ours to stop."""
        workflows = self.workflows
        try:
            workflows.apply_progress(
                ProgressUpdate(
                    task_id=task_id,
                    workflow_id=workflow.id,
                    status=WorkflowStatus.CANCELLED,
                    error="cancelled by request",
                    message="cancelled through the API",
                ),
                writer=Writer.CANCEL,
            )
        except ConflictError:
            # The cancellation hook may have been quicker; anything else is a real conflict.
            if workflows.get(workflow.id).status is not WorkflowStatus.CANCELLED:
                raise
        if workflow.instance_id is None:
            # Not dispatched when we looked. If the dispatcher recorded a run before our
            # update landed, it is ours to stop; if after, the dispatcher stops it itself.
            return workflows.get(workflow.id).instance_id
        return None

    def _remove_partial_outputs(self, task_id: uuid.UUID, workflow: Workflow) -> Task:
        task = self.get(task_id)
        if self.store is not None:
            removed = remove_attempt_outputs(
                self.store, workflow.parameters, result_keys(task.result)
            )
            if removed:
                log.info("cancelled task %s: removed partial outputs %s", task_id, removed)
        return task

    async def _stop_flow_run(self, flow_run_id: str, wait_s: float) -> tuple[bool, str | None]:
        """Ask Prefect to cancel; return whether the run stopped within `wait_s` (or is
        gone) and the final state type it reached."""
        api_url = self.settings.prefect.api_url
        try:
            await asyncio.to_thread(prefect_gateway.cancel_flow_run, api_url, flow_run_id)
        except NotFoundError:
            return True, None  # nothing left to stop
        deadline = time.monotonic() + wait_s
        while time.monotonic() < deadline:
            try:
                info = await asyncio.to_thread(prefect_gateway.read_flow_run, api_url, flow_run_id)
            except NotFoundError:
                return True, None
            if info.state_type in FINAL_PREFECT_STATES:
                return True, info.state_type
            await asyncio.sleep(CANCEL_POLL_S)
        log.warning("flow run %s still not cancelled after %.0f s", flow_run_id, wait_s)
        return False, None
