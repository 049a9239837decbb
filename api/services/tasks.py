"""Tasks: creating them, starting their workflows in Prefect, and reading them back."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm import Session, sessionmaker

from api import prefect_gateway
from api.services.workflows import mirror_on_task
from api.task_types import get_task_type
from core.errors import ConflictError, NotFoundError, UpstreamUnavailableError
from core.settings import Settings
from db.base import utcnow
from db.models import Task, TaskStatus, Workflow, WorkflowStatus
from db.repositories import TaskRepository, WorkflowRepository

log = logging.getLogger(__name__)

#: `start_flow_run`'s signature; tests and the reconciler may pass their own.
FlowRunStarter = Callable[..., prefect_gateway.FlowRunInfo]


@dataclass(frozen=True)
class CreatedTask:
    """A task and whether this call created it (False: an idempotent replay)."""

    task: Task
    created: bool


@dataclass(frozen=True)
class TaskPage:
    """One page of a task listing."""

    items: list[Task]
    total: int
    limit: int
    offset: int


def idempotency_key_for(deployment: str, task_id: uuid.UUID, attempt: int) -> str:
    """Prefect's key for one attempt: unique per deployment, task and attempt."""
    return f"{deployment}:{task_id}:{attempt}"


class TaskService:
    """Creates tasks and starts one workflow per attempt."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        start_flow_run: FlowRunStarter = prefect_gateway.start_flow_run,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.start_flow_run = start_flow_run

    # -- reads ---------------------------------------------------------------------------

    def get(self, task_id: uuid.UUID) -> Task:
        with self.session_factory() as session:
            task = TaskRepository(session).get(task_id)
            if task is None:
                raise NotFoundError(f"task {task_id} not found")
            return task

    def list(
        self,
        *,
        status: TaskStatus | None = None,
        type_: str | None = None,
        episode_id: str | None = None,
        limit: int = 50,
        offset: int = 0,
    ) -> TaskPage:
        with self.session_factory() as session:
            items, total = TaskRepository(session).list(
                status=status, type_=type_, episode_id=episode_id, limit=limit, offset=offset
            )
            return TaskPage(items=items, total=total, limit=limit, offset=offset)

    # -- writes --------------------------------------------------------------------------

    def create_task(
        self, type_: str, payload: Any, *, idempotency_key: str | None = None
    ) -> CreatedTask:
        """Store a task and its first workflow, then start the workflow's flow run.

        With an idempotency key, a repeat of the same request returns the first task; the
        same key with a different request is a conflict.
        """
        task_type = get_task_type(type_)
        canonical = task_type.validate(payload)
        if idempotency_key is not None:
            existing = self._replay(idempotency_key, type_, canonical)
            if existing is not None:
                return CreatedTask(existing, created=False)
        try:
            with self.session_factory.begin() as session:
                task = TaskRepository(session).add(
                    Task(
                        type=type_,
                        status=TaskStatus.PENDING,
                        episode_id=task_type.episode_id(canonical),
                        payload=canonical,
                        idempotency_key=idempotency_key,
                    )
                )
                workflow = self._new_workflow(session, task)
        except IntegrityError:
            # A concurrent request with the same key won the race: answer with its task.
            if idempotency_key is None:
                raise
            existing = self._replay(idempotency_key, type_, canonical)
            if existing is None:
                raise
            return CreatedTask(existing, created=False)
        return CreatedTask(self._start(task, workflow), created=True)

    def _replay(self, key: str, type_: str, canonical: dict[str, Any]) -> Task | None:
        with self.session_factory() as session:
            existing = TaskRepository(session).get_by_idempotency_key(key)
        if existing is None:
            return None
        if existing.type != type_ or existing.payload != canonical:
            raise ConflictError(
                "Idempotency-Key was already used for a different request", taskId=str(existing.id)
            )
        return existing

    def _new_workflow(self, session: Session, task: Task) -> Workflow:
        """A queued workflow row for the task's next attempt, made current on the task."""
        task_type = get_task_type(task.type)
        task.attempts += 1
        workflow = WorkflowRepository(session).add(
            Workflow(
                name=task_type.workflow_name,
                deployment_name=task_type.deployment_name(self.settings),
                task_id=task.id,
                attempt=task.attempts,
                status=WorkflowStatus.QUEUED,
                progress=0,
                parameters={},
                corrections=[],
            )
        )
        workflow.parameters = task_type.flow_parameters(
            str(task.id), str(workflow.id), task.payload
        )
        task.workflow_id = workflow.id
        task.workflow_instance_id = None
        task.status = TaskStatus.PENDING
        task.progress = 0
        task.current_step = None
        task.result = None
        task.error = None
        task.error_kind = None
        task.started_at = None
        task.completed_at = None
        session.flush()
        return workflow

    def _start(self, task: Task, workflow: Workflow) -> Task:
        """Ask Prefect for the flow run; record its id, or record why there is none.

        If Prefect cannot be reached the attempt fails at once with a transient error, so
        no row ever claims work that no flow run is doing; the reprocessing deployment (or
        `POST /tasks/{id}/retry`) starts a new attempt later.
        """
        episode = task.episode_id or "task"
        try:
            info = self.start_flow_run(
                self.settings.prefect.api_url,
                workflow.deployment_name,
                workflow.parameters,
                idempotency_key=idempotency_key_for(
                    workflow.deployment_name, task.id, workflow.attempt
                ),
                name=f"{episode}-{str(task.id)[:8]}-a{workflow.attempt}",
                tags=[f"task:{task.id}", f"episode:{episode}", f"type:{task.type}"],
                timeout_s=self.settings.prefect.trigger_timeout_s,
            )
        except UpstreamUnavailableError as exc:
            log.warning("could not start a flow run for task %s: %s", task.id, exc.detail)
            return self._fail_to_start(task.id, workflow.id, exc.detail)
        with self.session_factory.begin() as session:
            stored_workflow = WorkflowRepository(session).get(workflow.id, for_update=True)
            stored_task = TaskRepository(session).get(task.id, for_update=True)
            assert stored_workflow is not None and stored_task is not None
            stored_workflow.instance_id = info.id
            if stored_task.workflow_id == stored_workflow.id:
                stored_task.workflow_instance_id = info.id
            session.flush()
            return stored_task

    def _fail_to_start(self, task_id: uuid.UUID, workflow_id: uuid.UUID, reason: str) -> Task:
        with self.session_factory.begin() as session:
            workflow = WorkflowRepository(session).get(workflow_id, for_update=True)
            task = TaskRepository(session).get(task_id, for_update=True)
            assert workflow is not None and task is not None
            workflow.status = WorkflowStatus.FAILED
            workflow.error = f"could not start the flow run: {reason}"
            workflow.completed_at = utcnow()
            mirror_on_task(task, workflow)
            task.error_kind = "transient"
            session.flush()
            return task
