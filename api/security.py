"""Guards: an API key for public endpoints (when configured) and a bearer token for internal ones.

Both compare in constant time, and neither token is ever echoed in a response or a log.
"""

from __future__ import annotations

import hmac

from litestar.connection import ASGIConnection
from litestar.exceptions import NotAuthorizedException
from litestar.handlers.base import BaseRouteHandler
from litestar.openapi.spec import SecurityRequirement, SecurityScheme

from core.settings import Settings

#: The two credentials, as the OpenAPI document describes them (Swagger's "Authorize").
SECURITY_SCHEMES: dict[str, SecurityScheme] = {
    "apiKey": SecurityScheme(
        type="apiKey",
        name="X-API-Key",
        security_scheme_in="header",
        description="AUDIOFLOW_API_KEY; required when it is set (always in production)",
    ),
    "internalToken": SecurityScheme(
        type="http",
        scheme="bearer",
        description="AUDIOFLOW_INTERNAL_TOKEN; for the flows' progress reports only",
    ),
}
API_KEY_REQUIRED: list[SecurityRequirement] = [{"apiKey": []}]
INTERNAL_TOKEN_REQUIRED: list[SecurityRequirement] = [{"internalToken": []}]


def _settings(connection: ASGIConnection) -> Settings:
    settings: Settings = connection.app.state.settings
    return settings


def _same(given: str, expected: str) -> bool:
    return hmac.compare_digest(given.encode(), expected.encode())


def require_api_key(connection: ASGIConnection, _: BaseRouteHandler) -> None:
    """Public endpoints: `X-API-Key` must match `AUDIOFLOW_API_KEY` when that is set."""
    expected = _settings(connection).api.api_key
    if not expected:
        return
    given = connection.headers.get("x-api-key")
    if given is None:
        raise NotAuthorizedException("missing X-API-Key header")
    if not _same(given, expected):
        raise NotAuthorizedException("invalid API key")


def has_api_key(connection: ASGIConnection) -> bool:
    """Whether the request carries the configured API key (False when none is configured):
    for endpoints open to all that tell key holders more."""
    expected = _settings(connection).api.api_key
    given = connection.headers.get("x-api-key")
    return bool(expected) and given is not None and _same(given, expected)


def require_internal_token(connection: ASGIConnection, _handler: BaseRouteHandler) -> None:
    """The internal endpoint: `Authorization: Bearer <AUDIOFLOW_INTERNAL_TOKEN>`."""
    expected = _settings(connection).internal_token
    header = connection.headers.get("authorization")
    if header is None:
        raise NotAuthorizedException("missing bearer token")
    scheme, _sep, token = header.partition(" ")
    if scheme.lower() != "bearer" or not token:
        raise NotAuthorizedException("expected 'Authorization: Bearer <token>'")
    if not _same(token.strip(), expected):
        raise NotAuthorizedException("invalid internal token")
