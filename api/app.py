"""The application factory. Nothing heavy happens at import time; `create_app()` builds it all."""

from __future__ import annotations

from litestar import Litestar, Request
from litestar.config.cors import CORSConfig
from litestar.exceptions import ValidationException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.plugins import ScalarRenderPlugin, SwaggerRenderPlugin
from litestar.openapi.spec import Components
from sqlalchemy.orm import Session, sessionmaker

from api.controllers import InternalController, TaskController, WorkflowController, get_health
from api.errors import EXCEPTION_HANDLERS
from api.openapi_doc import publish_enforced_constraints
from api.reprocess import ReprocessController
from api.request_checks import (
    AllowedHostsMiddleware,
    document_json_only,
    require_json_content_type,
)
from api.security import SECURITY_SCHEMES
from api.uploads import UploadController
from core.settings import Settings, get_settings
from core.storage import build_store
from db.engine import build_engine, build_session_factory
from domain import prefect_gateway
from domain.dispatch import FlowRunStarter
from domain.reprocessing import ReprocessService
from domain.tasks import TaskService
from domain.uploads import UploadService
from domain.workflows import WorkflowService


def refuse_nul_in_headers(request: Request) -> None:
    """400 for a header value with a NUL character (RFC 9110 5.5: reject or replace).

    Real servers drop such requests before they reach the app; refusing it here too keeps
    a value like an `Idempotency-Key` from reaching PostgreSQL, whose text cannot hold NUL.
    """
    for name, value in request.headers.items():
        if "\x00" in value:
            raise ValidationException(f"header {name!r} contains a NUL character")


def check_request(request: Request) -> None:
    """Every request's checks before its handler (one hook: Litestar runs only the last)."""
    refuse_nul_in_headers(request)
    require_json_content_type(request)


def cors_config(settings: Settings) -> CORSConfig | None:
    """CORS only for the origins AUDIOFLOW_CORS_ORIGINS names; none: no CORS headers."""
    if not settings.api.cors_origins:
        return None
    return CORSConfig(
        allow_origins=list(settings.api.cors_origins),
        allow_methods=["GET", "POST"],
        allow_headers=["Content-Type", "X-API-Key", "Idempotency-Key"],
    )


def create_app(
    settings: Settings | None = None,
    *,
    session_factory: sessionmaker[Session] | None = None,
    start_flow_run: FlowRunStarter | None = None,
) -> Litestar:
    """Build the Litestar app. Refuses to build in production with development secrets."""
    settings = settings or get_settings()
    settings.validate()
    if session_factory is None:
        session_factory = build_session_factory(build_engine(settings.database))
    store = build_store(settings.storage)
    task_service = TaskService(
        session_factory,
        settings,
        start_flow_run or prefect_gateway.start_flow_run,
        store=store,
    )
    app = Litestar(
        route_handlers=[
            TaskController,
            WorkflowController,
            UploadController,
            ReprocessController,
            InternalController,
            get_health,
        ],
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        before_request=check_request,
        middleware=[DefineMiddleware(AllowedHostsMiddleware, allowed=settings.api.hosts_allowed())],
        cors_config=cors_config(settings),
        # Zero-argument hooks: Litestar passes the app to hooks that take an argument.
        on_startup=[lambda: task_service.dispatcher.start()],
        on_shutdown=[lambda: task_service.dispatcher.stop(), prefect_gateway.close_clients],
        openapi_config=OpenAPIConfig(
            title="audioflow",
            version="0.1.0",
            description="Audio processing tasks: encoding and transcription of podcast episodes.",
            path="/schema",
            components=Components(security_schemes=dict(SECURITY_SCHEMES)),
            render_plugins=[SwaggerRenderPlugin(), ScalarRenderPlugin()],
        ),
        debug=False,
    )
    publish_enforced_constraints(app.openapi_schema)
    document_json_only(app.openapi_schema)
    app.state.settings = settings
    app.state.session_factory = session_factory
    app.state.task_service = task_service
    app.state.workflow_service = WorkflowService(session_factory, store)
    app.state.upload_service = UploadService(
        store,
        settings.api.max_upload_bytes,
        max_duration_s=settings.media.max_duration_s,
        checks=settings.api.upload_checks,
        spool_dir=settings.temp_dir,
        presign_max_expires_s=settings.api.presign_max_expires_s,
    )
    app.state.reprocess_service = ReprocessService(settings)
    return app
