"""Dependency providers: the composition root's services, handed to handlers by name.

Declared once, on the app (`create_app`), for every handler. Each provider returns an
object built at start-up: nothing is built per request.
"""

from __future__ import annotations

from litestar.di import Provide

from domain.composition import Services
from domain.event_stream import EventStreamService
from domain.reprocessing import ReprocessService
from domain.tasks import TaskService
from domain.uploads import UploadService
from domain.webhooks import WebhookService
from domain.workflows import WorkflowService


def service_dependencies(services: Services) -> dict[str, Provide]:
    """`task_service`, `workflow_service`, `upload_service`, `reprocess_service`,
    `event_stream` and `webhook_service`."""

    def provide_task_service() -> TaskService:
        return services.tasks

    def provide_workflow_service() -> WorkflowService:
        return services.workflows

    def provide_upload_service() -> UploadService:
        return services.uploads

    def provide_reprocess_service() -> ReprocessService:
        return services.reprocessing

    def provide_event_stream() -> EventStreamService:
        return services.events
    def provide_webhook_service() -> WebhookService:
        return services.webhooks

    return {
        "task_service": Provide(provide_task_service, sync_to_thread=False),
        "workflow_service": Provide(provide_workflow_service, sync_to_thread=False),
        "upload_service": Provide(provide_upload_service, sync_to_thread=False),
        "reprocess_service": Provide(provide_reprocess_service, sync_to_thread=False),
        "event_stream": Provide(provide_event_stream, sync_to_thread=False),
        "webhook_service": Provide(provide_webhook_service, sync_to_thread=False),
    }
