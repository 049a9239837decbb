"""Dependency providers: the composition root's services, handed to handlers by name.

Declared once, on the app (`create_app`), for every handler. Each provider returns an
object built at start-up: nothing is built per request.
"""

from __future__ import annotations

from collections.abc import Callable

from litestar.di import Provide

from domain.composition import Services


def service_dependencies(services: Services) -> dict[str, Provide]:
    """`task_service`, `workflow_service`, `upload_service`, `reprocess_service`,
    `event_stream` and `webhook_service`."""
    providers: dict[str, Callable[[], object]] = {
        "task_service": lambda: services.tasks,
        "workflow_service": lambda: services.workflows,
        "upload_service": lambda: services.uploads,
        "reprocess_service": lambda: services.reprocessing,
        "event_stream": lambda: services.events,
        "webhook_service": lambda: services.webhooks,
    }
    return {name: Provide(provide, sync_to_thread=False) for name, provide in providers.items()}
