"""HTTP handlers. Thin: parse input, call one service, return a schema.

Guards, security and the services they take are declared once for all of them (see
`api.app`): the public controllers sit on a router behind the API key, the internal one on
a router behind the bearer token.
"""

from __future__ import annotations

import uuid
from typing import Annotated

from litestar import Controller, Request, Response, get, post
from litestar.datastructures import State
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, HeaderParameter, JSONBody, QueryParameter
from litestar.status_codes import (
    HTTP_200_OK,
    HTTP_201_CREATED,
    HTTP_202_ACCEPTED,
    HTTP_503_SERVICE_UNAVAILABLE,
)
from sqlalchemy import text

from api.errors import error_responses
from api.schemas import (
    CreateTaskRequest,
    DeliveryOut,
    HealthOut,
    ProgressOut,
    ProgressRequest,
    TaskOut,
    TaskPageOut,
    WorkflowOut,
)
from api.security import has_api_key
from core.errors import UpstreamUnavailableError
from db.models import TaskStatus, WorkflowStatus
from domain import prefect_gateway
from domain.composition import Services
from domain.contracts import ErrorKind
from domain.tasks import TaskService
from domain.webhooks import WebhookService
from domain.workflows import ProgressUpdate, WorkflowService


class TaskController(Controller):
    """Public task endpoints."""

    path = "/tasks"
    tags = ["tasks"]

    @post(
        "/",
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
        responses=error_responses(400, 401, 409, 422),
    )
    def create_task(
        self,
        data: JSONBody[CreateTaskRequest],
        task_service: NamedDependency[TaskService],
        idempotency_key: Annotated[
            str | None, HeaderParameter(name="Idempotency-Key", max_length=255, required=False)
        ] = None,
    ) -> Response[TaskOut]:
        """Create a task and queue its workflow. A repeated `Idempotency-Key` returns the same task.

        Answers once the task is stored: its flow run is created right behind the answer
        (`workflowInstanceId` is empty until then). If Prefect cannot be reached, the run
        is retried for `AUDIOFLOW_DISPATCH_DEADLINE_S` before the task fails as transient.
        """
        outcome = task_service.create_task(
            data.type,
            data.payload,
            idempotency_key=idempotency_key,
            callback_url=data.callback_url,
        )
        task = outcome.task
        return Response(
            TaskOut.of(task), status_code=HTTP_201_CREATED if outcome.created else HTTP_200_OK
        )

    @get("/", sync_to_thread=True, responses=error_responses(400, 401))
    def list_tasks(
        self,
        task_service: NamedDependency[TaskService],
        status: FromQuery[TaskStatus | None] = None,
        task_type: Annotated[str | None, QueryParameter(name="type", required=False)] = None,
        episode_id: Annotated[str | None, QueryParameter(name="episodeId", required=False)] = None,
        limit: Annotated[int, QueryParameter(ge=1, le=200)] = 50,
        offset: Annotated[int, QueryParameter(ge=0, le=100_000_000)] = 0,
    ) -> TaskPageOut:
        """List tasks, newest first, filtered by status, type and episode."""
        page = task_service.list_page(
            status=status, type_=task_type, episode_id=episode_id, limit=limit, offset=offset
        )
        return TaskPageOut(
            items=[TaskOut.of(t) for t in page.items],
            total=page.total,
            limit=page.limit,
            offset=page.offset,
        )

    @get("/{task_id:uuid}", sync_to_thread=True, responses=error_responses(400, 401, 404))
    def get_task(
        self, task_id: FromPath[uuid.UUID], task_service: NamedDependency[TaskService]
    ) -> TaskOut:
        """One task."""
        return TaskOut.of(task_service.get(task_id))

    @post(
        "/{task_id:uuid}/cancel",
        status_code=HTTP_200_OK,
        responses=error_responses(400, 401, 404, 409, 503),
    )
    async def cancel_task(
        self, task_id: FromPath[uuid.UUID], task_service: NamedDependency[TaskService]
    ) -> TaskOut:
        """Cancel a pending or processing task: its flow run stops, partial outputs go.

        409 if the task already ended (also if it completed while being cancelled).
        Answers once the run has stopped (at most ~15 s); concurrent cancels of one task
        share that wait and get the same answer.
        """
        return TaskOut.of(await task_service.cancel(task_id))

    @post(
        "/{task_id:uuid}/retry",
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
        responses=error_responses(400, 401, 404, 409, 503),
    )
    def retry_task(
        self, task_id: FromPath[uuid.UUID], task_service: NamedDependency[TaskService]
    ) -> TaskOut:
        """A new attempt for a failed or cancelled task (409 otherwise)."""
        task = task_service.retry(task_id)
        if task.status is TaskStatus.FAILED and task.error_kind == ErrorKind.TRANSIENT:
            raise UpstreamUnavailableError(task.error or "could not start", taskId=str(task.id))
        return TaskOut.of(task)

    @get("/{task_id:uuid}/workflows", sync_to_thread=True, responses=error_responses(400, 401, 404))
    def list_task_workflows(
        self, task_id: FromPath[uuid.UUID], workflow_service: NamedDependency[WorkflowService]
    ) -> list[WorkflowOut]:
        """Every workflow (attempt) of a task, oldest first."""
        return [WorkflowOut.of(w) for w in workflow_service.list_for_task(task_id)]

    @get(
        "/{task_id:uuid}/deliveries", sync_to_thread=True, responses=error_responses(400, 401, 404)
    )
    def list_task_deliveries(
        self, task_id: FromPath[uuid.UUID], webhook_service: NamedDependency[WebhookService]
    ) -> list[DeliveryOut]:
        """Every webhook delivery of the task's events, with each attempt (oldest first)."""
        return [DeliveryOut.of(d) for d in webhook_service.list_for_task(task_id)]


class DeliveryController(Controller):
    """Webhook deliveries."""

    path = "/deliveries"
    tags = ["webhooks"]

    @post(
        "/{delivery_id:uuid}/redeliver",
        sync_to_thread=True,
        status_code=HTTP_202_ACCEPTED,
        responses=error_responses(400, 401, 404, 409),
    )
    def redeliver(
        self, delivery_id: FromPath[uuid.UUID], webhook_service: NamedDependency[WebhookService]
    ) -> DeliveryOut:
        """Send a delivered or failed delivery again (same `webhook-id`, a fresh retry
        schedule); 409 while it is pending. Answers at once: watch its `attemptLog`."""
        return DeliveryOut.of(webhook_service.redeliver(delivery_id))


class WorkflowController(Controller):
    """Public workflow endpoints."""

    path = "/workflows"
    tags = ["workflows"]

    @get("/{workflow_id:uuid}", sync_to_thread=True, responses=error_responses(400, 401, 404))
    def get_workflow(
        self, workflow_id: FromPath[uuid.UUID], workflow_service: NamedDependency[WorkflowService]
    ) -> WorkflowOut:
        """One workflow instance."""
        return WorkflowOut.of(workflow_service.get(workflow_id))


class InternalController(Controller):
    """Endpoints for the flows (the internal router puts them behind the bearer token)."""

    path = "/"
    tags = ["internal"]

    @post(
        "/workflow-progress",
        sync_to_thread=True,
        status_code=HTTP_200_OK,
        responses=error_responses(400, 401, 404, 409),
    )
    def report_workflow_progress(
        self,
        data: JSONBody[ProgressRequest],
        workflow_service: NamedDependency[WorkflowService],
    ) -> ProgressOut:
        """Apply a flow's progress report to its workflow and task together; this process's
        event streams get it at once (progress is not notified: `domain.events`), handed
        over by the workflow service."""
        workflow, task = workflow_service.apply_progress(
            ProgressUpdate(
                task_id=data.task_id,
                workflow_id=data.workflow_id,
                progress=data.progress,
                step=data.step,
                message=data.message,
                status=WorkflowStatus(data.status) if data.status is not None else None,
                result=data.result,
                error=data.error,
                error_kind=data.error_kind,
            )
        )
        return ProgressOut(workflow=WorkflowOut.of(workflow), task=TaskOut.of(task))


@get("/health", tags=["health"], sync_to_thread=True)
def get_health(request: Request, state: State) -> Response[HealthOut]:
    """Whether the database and Prefect answer (503 when either does not).

    Open to load balancers, so anonymous callers learn only up or down: driver and client
    exception text says what runs where. With the API key the body says what is down.
    """
    services: Services = state.services
    try:
        with services.session_factory() as session:
            session.execute(text("SELECT 1"))
        database = "ok"
    except Exception as exc:
        database = f"unreachable: {type(exc).__name__}"
    prefect_problem = prefect_gateway.check_health(services.settings.prefect.api_url)
    prefect = "ok" if prefect_problem is None else f"unreachable: {prefect_problem}"
    healthy = database == "ok" and prefect == "ok"
    body = HealthOut(status="ok" if healthy else "unavailable")
    if has_api_key(request):
        body = HealthOut(status=body.status, database=database, prefect=prefect)
    return Response(
        body,
        status_code=HTTP_200_OK if healthy else HTTP_503_SERVICE_UNAVAILABLE,
    )
