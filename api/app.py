"""The application factory. Nothing heavy happens at import time; `create_app()` builds it all."""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager

from litestar import Litestar, Request, Router
from litestar.config.cors import CORSConfig
from litestar.exceptions import ValidationException
from litestar.middleware import DefineMiddleware
from litestar.openapi import OpenAPIConfig
from litestar.openapi.spec import Components
from sqlalchemy.orm import Session, sessionmaker

from api.controllers import (
    DeliveryController,
    InternalController,
    TaskController,
    WorkflowController,
    get_health,
)
from api.deps import service_dependencies
from api.docs_ui import docs_assets_router, swagger_plugin
from api.errors import EXCEPTION_HANDLERS
from api.events import EventController, end_streams_on_shutdown
from api.openapi_doc import document_task_payloads, publish_enforced_constraints
from api.reprocess import ReprocessController
from api.request_checks import (
    AllowedHostsMiddleware,
    document_json_only,
    require_json_content_type,
)
from api.security import (
    API_KEY_REQUIRED,
    INTERNAL_TOKEN_REQUIRED,
    SECURITY_SCHEMES,
    require_api_key,
    require_internal_token,
)
from api.uploads import UploadController
from core.settings import Settings, get_settings
from domain.composition import Services, build_services
from domain.dispatch import FlowRunStarter


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


def routers() -> list[Router]:
    """The public endpoints behind the API key, the flows' endpoint behind the bearer token.

    Each router carries its guard and its OpenAPI security declaration once, for every
    operation under it; `/health` stays outside both (load balancers carry no credentials).
    Built per app: Litestar binds a router to the app that registers it.
    """
    return [
        Router(
            path="/",
            guards=[require_api_key],
            security=API_KEY_REQUIRED,
            route_handlers=[
                TaskController,
                WorkflowController,
                DeliveryController,
                UploadController,
                ReprocessController,
                EventController,
            ],
        ),
        Router(
            path="/internal",
            guards=[require_internal_token],
            security=INTERNAL_TOKEN_REQUIRED,
            route_handlers=[InternalController],
        ),
    ]


def services_lifespan(
    services: Services,
) -> Callable[[Litestar], AbstractAsyncContextManager[None]]:
    """The app's lifespan: the dispatcher and the event streams' hub run while the app
    serves, and on the way out they stop, the Prefect clients close and the engine built
    for the app is disposed."""

    @asynccontextmanager
    async def lifespan(_app: Litestar) -> AsyncIterator[None]:
        services.start()
        try:
            await services.start_async()
            end_streams_on_shutdown(services.events.hub)
            yield
        finally:
            await services.stop_async()
            services.stop()
            services.dispose()

    return lifespan


def create_app(
    settings: Settings | None = None,
    *,
    session_factory: sessionmaker[Session] | None = None,
    start_flow_run: FlowRunStarter | None = None,
) -> Litestar:
    """Build the Litestar app. Refuses to build in production with development secrets.

    The services come from the composition root (`domain.composition`); `session_factory`
    and `start_flow_run` replace the built ones (tests).
    """
    settings = settings or get_settings()
    settings.validate()
    services = build_services(
        settings, session_factory=session_factory, start_flow_run=start_flow_run
    )
    app = Litestar(
        route_handlers=[*routers(), docs_assets_router(), get_health],
        dependencies=service_dependencies(services),
        exception_handlers=EXCEPTION_HANDLERS,  # type: ignore[arg-type]
        before_request=check_request,
        middleware=[DefineMiddleware(AllowedHostsMiddleware, allowed=settings.api.hosts_allowed())],
        cors_config=cors_config(settings),
        lifespan=[services_lifespan(services)],
        openapi_config=OpenAPIConfig(
            title="audioflow",
            version="0.1.0",
            description="Audio processing tasks: encoding and transcription of podcast episodes.",
            path="/schema",
            components=Components(security_schemes=dict(SECURITY_SCHEMES)),
            # Swagger UI from this API's own files (`api.docs_ui`); Scalar needs a CDN.
            render_plugins=[swagger_plugin()],
        ),
        debug=False,
    )
    publish_enforced_constraints(app.openapi_schema)
    document_json_only(app.openapi_schema)
    document_task_payloads(app.openapi_schema)
    app.state.settings = settings
    app.state.services = services
    return app
