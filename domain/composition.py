"""The composition root: settings, engine and sessions, store, Prefect gateway and services.

The one module that constructs the domain's parts and hands each its collaborators. The API
(`api.app.create_app`) and the flows (`flows.reprocessing`) both build their services here,
so a service is wired the same way in every process: before, the API built an engine, a
store and its services, the reprocessing flow built its own engine and a second TaskService
(with a second dispatcher), and `TaskService.cancel()` built a WorkflowService per call.

What is built once per `build_services` call and shared by every service of that call: one
session factory (one engine), one store, one WorkflowService, one flow-run dispatcher, one
webhook deliverer. Their threads run only between `start()` and `stop()` (the API's
lifespan); the flows never start them and dispatch synchronously through the same object.
"""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy.engine import Engine
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings, get_settings
from core.storage import build_store, get_store
from core.storage.base import ObjectStore
from db.engine import build_engine, build_session_factory
from domain import prefect_gateway
from domain.dispatch import FlowRunDispatcher, FlowRunStarter
from domain.event_stream import EventHub, EventReader, EventStreamService
from domain.reprocessing import ReprocessService
from domain.tasks import TaskService
from domain.uploads import UploadService
from domain.webhooks import WebhookDeliverer, WebhookService
from domain.workflows import WorkflowService


@dataclass(frozen=True)
class Services:
    """Everything a process needs to serve requests or run a flow's domain work."""

    settings: Settings
    session_factory: sessionmaker[Session]
    store: ObjectStore
    dispatcher: FlowRunDispatcher
    workflows: WorkflowService
    tasks: TaskService
    uploads: UploadService
    reprocessing: ReprocessService
    #: Event streams; their hub (LISTEN connection) runs between the API's
    #: `start_async()` and `stop_async()` only.
    events: EventStreamService
    #: Webhook deliveries: the threads (`start`/`stop`) and the API's reads and redeliveries.
    webhook_deliverer: WebhookDeliverer
    webhooks: WebhookService
    #: The engine built here, disposed by `dispose()`; None when the caller brought its own
    #: sessions (their engine is the caller's to close).
    engine: Engine | None = None

    def start(self) -> None:
        """Start the dispatcher's and the webhook deliverer's threads (the API's lifespan;
        the flows do not call it)."""
        self.dispatcher.start()
        self.webhook_deliverer.start()

    async def start_async(self) -> None:
        """Start what runs in the server's event loop: the event streams' hub."""
        await self.events.hub.start()

    async def stop_async(self) -> None:
        await self.events.hub.stop()

    def stop(self) -> None:
        """Stop the dispatcher threads and close this process's Prefect clients.

        Queued workflows and pending deliveries stay rows: the next process takes them.
        """
        self.webhook_deliverer.stop()
        self.dispatcher.stop()
        prefect_gateway.close_clients()

    def dispose(self) -> None:
        """Close the database connections of the engine built here (if any)."""
        if self.engine is not None:
            self.engine.dispose()


def build_services(
    settings: Settings | None = None,
    *,
    session_factory: sessionmaker[Session] | None = None,
    store: ObjectStore | None = None,
    start_flow_run: FlowRunStarter | None = None,
) -> Services:
    """Build settings, sessions, store and services, each collaborator once.

    Without `settings`, the process's settings (`get_settings()`) and the process's shared
    store (`get_store()`, also what the flow steps use, so one worker process has one boto3
    client). With `settings`, a store of its own from `settings.storage` (tests, tools).
    `session_factory`, `store` and `start_flow_run` replace the built ones (tests).
    """
    if settings is None:
        settings = get_settings()
        store = store or get_store()
    elif store is None:
        store = build_store(settings.storage)
    engine = None
    if session_factory is None:
        engine = build_engine(settings.database)
        session_factory = build_session_factory(engine)
    dispatcher = FlowRunDispatcher(
        session_factory, settings, start_flow_run or prefect_gateway.start_flow_run
    )
    workflows = WorkflowService(session_factory, store)
    reader = EventReader(session_factory)
    webhook_deliverer = WebhookDeliverer(session_factory, settings.webhooks)
    hub = EventHub(settings.database.url, reader, on_event=webhook_deliverer.event_committed)
    workflows.event_sink = hub
    return Services(
        settings=settings,
        session_factory=session_factory,
        store=store,
        dispatcher=dispatcher,
        workflows=workflows,
        tasks=TaskService(
            session_factory, settings, dispatcher=dispatcher, workflows=workflows, store=store
        ),
        uploads=UploadService(
            store,
            settings.api.max_upload_bytes,
            max_duration_s=settings.media.max_duration_s,
            checks=settings.api.upload_checks,
            spool_dir=settings.temp_dir,
            presign_max_expires_s=settings.api.presign_max_expires_s,
            cover_max_bytes=settings.media.cover_max_bytes,
        ),
        reprocessing=ReprocessService(settings),
        events=EventStreamService(hub, reader),
        webhook_deliverer=webhook_deliverer,
        webhooks=WebhookService(session_factory, webhook_deliverer),
        engine=engine,
    )
