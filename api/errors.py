"""The one place where domain errors become HTTP responses."""

from __future__ import annotations

import logging

from litestar import Request, Response
from litestar.openapi.datastructures import ResponseSpec
from litestar.status_codes import (
    HTTP_400_BAD_REQUEST,
    HTTP_401_UNAUTHORIZED,
    HTTP_404_NOT_FOUND,
    HTTP_409_CONFLICT,
    HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    HTTP_422_UNPROCESSABLE_ENTITY,
    HTTP_429_TOO_MANY_REQUESTS,
    HTTP_503_SERVICE_UNAVAILABLE,
    HTTP_507_INSUFFICIENT_STORAGE,
)
from sqlalchemy.exc import OperationalError

from api.schemas import ErrorOut
from core.errors import (
    AudioflowError,
    BusyError,
    ConflictError,
    InsufficientStorageError,
    InvalidInputError,
    NotFoundError,
    PayloadTooLargeError,
    QueueFullError,
    UnsupportedMediaError,
    UpstreamUnavailableError,
)
from core.settings import SettingsError

log = logging.getLogger(__name__)

STATUS_FOR_ERROR: dict[type[AudioflowError], int] = {
    NotFoundError: HTTP_404_NOT_FOUND,
    ConflictError: HTTP_409_CONFLICT,
    InvalidInputError: HTTP_422_UNPROCESSABLE_ENTITY,
    UpstreamUnavailableError: HTTP_503_SERVICE_UNAVAILABLE,
    PayloadTooLargeError: HTTP_413_REQUEST_ENTITY_TOO_LARGE,
    UnsupportedMediaError: HTTP_415_UNSUPPORTED_MEDIA_TYPE,
    InsufficientStorageError: HTTP_507_INSUFFICIENT_STORAGE,
    BusyError: HTTP_503_SERVICE_UNAVAILABLE,
    QueueFullError: HTTP_429_TOO_MANY_REQUESTS,
}


#: What each error status means, for the OpenAPI document.
ERROR_MEANINGS: dict[int, str] = {
    HTTP_400_BAD_REQUEST: "Malformed request: the body or a parameter failed validation",
    HTTP_401_UNAUTHORIZED: "Missing or wrong credentials",
    HTTP_404_NOT_FOUND: "No such task or workflow",
    HTTP_409_CONFLICT: "Not possible in the current state (or an Idempotency-Key reused)",
    HTTP_413_REQUEST_ENTITY_TOO_LARGE: "Upload larger than AUDIOFLOW_MAX_UPLOAD_BYTES",
    HTTP_415_UNSUPPORTED_MEDIA_TYPE: "The upload is not decodable audio",
    HTTP_422_UNPROCESSABLE_ENTITY: "Well-formed but not acceptable (e.g. an unknown format)",
    HTTP_429_TOO_MANY_REQUESTS: "Too much already queued; retry after `Retry-After` seconds",
    HTTP_503_SERVICE_UNAVAILABLE: "Prefect or storage cannot be reached, or the API is busy; "
    "retry later (after `Retry-After` seconds when given)",
    HTTP_507_INSUFFICIENT_STORAGE: "A disk of the server is full; nothing was stored, retry later",
}


def error_responses(*codes: int) -> dict[int, ResponseSpec]:
    """OpenAPI entries for the error statuses a handler can answer, with the error body."""
    return {
        code: ResponseSpec(
            data_container=ErrorOut, description=ERROR_MEANINGS[code], generate_examples=False
        )
        for code in codes
    }


def status_for(exc: AudioflowError) -> int:
    """The HTTP status of a domain error (its nearest registered base class)."""
    for cls in type(exc).__mro__:
        if cls in STATUS_FOR_ERROR:
            return STATUS_FOR_ERROR[cls]
    return HTTP_422_UNPROCESSABLE_ENTITY


def domain_error_handler(_: Request, exc: AudioflowError) -> Response[dict[str, object]]:
    """Render a domain error as `{status_code, detail, extra?}` like Litestar's own errors."""
    code = status_for(exc)
    body: dict[str, object] = {"status_code": code, "detail": exc.detail}
    if exc.extra:
        body["extra"] = exc.extra
    headers = {"Retry-After": str(exc.retry_after_s)} if isinstance(exc, BusyError) else None
    return Response(body, status_code=code, headers=headers)


def settings_error_handler(_: Request, exc: SettingsError) -> Response[dict[str, object]]:
    """A misconfiguration found while serving a request: say which variable, not a bare 500."""
    return Response(
        {"status_code": HTTP_503_SERVICE_UNAVAILABLE, "detail": str(exc)},
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
    )


def database_error_handler(_: Request, exc: OperationalError) -> Response[dict[str, object]]:
    """The database is unreachable (down, restarting, out of connections): 503, not a 500.

    Nothing was changed; the client may retry. The driver's message goes to the log only.
    """
    log.warning("database unavailable: %s", exc.orig)
    return Response(
        {
            "status_code": HTTP_503_SERVICE_UNAVAILABLE,
            "detail": "the database is unavailable; nothing was changed, try again shortly",
        },
        status_code=HTTP_503_SERVICE_UNAVAILABLE,
    )


EXCEPTION_HANDLERS = {
    AudioflowError: domain_error_handler,
    SettingsError: settings_error_handler,
    OperationalError: database_error_handler,
}
