"""Checks a request passes before any handler sees it: the Host allow-list, JSON-only bodies.

* `Host`: a web page can make a browser send requests to 127.0.0.1 under its own name
  (DNS rebinding); refusing every Host not on `AUDIOFLOW_ALLOWED_HOSTS` (by default
  loopback and the host of `AUDIOFLOW_API_URL`) stops that. Litestar's own
  `AllowedHostsMiddleware` compares the whole header, port included, and answers with a
  body unlike our other errors, so this small middleware does it instead.
* JSON bodies: an endpoint that reads a JSON body takes it only as `application/json` (or
  `application/*+json`, UTF-8). A body sent as `text/plain` is what an HTML form or a
  "simple" cross-site request sends without a CORS preflight; refusing it (415) keeps
  such requests from doing anything. Checked once here for every JSON endpoint, from the
  handler's declared body, and published once in the OpenAPI document.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterable

from litestar import Request
from litestar.enums import MediaType, RequestEncodingType
from litestar.openapi.spec import OpenAPI, OpenAPIMediaType, OpenAPIResponse, Reference
from litestar.params import BodyKwarg
from litestar.response.base import ASGIResponse
from litestar.status_codes import HTTP_400_BAD_REQUEST
from litestar.types import ASGIApp, Receive, Scope, Send

from core.errors import UnsupportedMediaError

_JSON_MEDIA_TYPE = re.compile(r"application/(?:[a-z0-9.+-]+\+)?json")
_PORT = re.compile(r"[0-9]{1,5}")


def host_name(header: str) -> str | None:
    """The host part of a `Host` header (`name[:port]`, `[v6]:port`), lower-case; None
    when it is not of that shape."""
    header = header.strip().lower()
    if header.startswith("["):
        name, sep, rest = header[1:].partition("]")
        if not sep or (rest and not (rest.startswith(":") and _PORT.fullmatch(rest[1:]))):
            return None
        return name or None
    name, sep, port = header.partition(":")
    if sep and not _PORT.fullmatch(port):
        return None
    return name or None


def host_allowed(name: str, allowed: Iterable[str]) -> bool:
    """`name` is on the list, or under a `*.domain` entry; `*` allows every host."""
    for entry in allowed:
        if entry == "*" or entry == name:
            return True
        if entry.startswith("*.") and name.endswith(entry[1:]):
            return True
    return False


class AllowedHostsMiddleware:
    """400 with our error body for a `Host` header not on the allow-list (or missing)."""

    def __init__(self, app: ASGIApp, allowed: tuple[str, ...]) -> None:
        self.app = app
        self.allowed = tuple(h.strip("[]").lower() for h in allowed)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] in ("http", "websocket"):
            raw = next((v for k, v in scope["headers"] if k == b"host"), None)
            name = host_name(raw.decode("latin-1")) if raw is not None else None
            if name is None or not host_allowed(name, self.allowed):
                await _refuse_host(scope, receive, send)
                return
        await self.app(scope, receive, send)


async def _refuse_host(scope: Scope, receive: Receive, send: Send) -> None:
    body = {
        "status_code": HTTP_400_BAD_REQUEST,
        "detail": "the Host header names a host this API does not serve "
        "(see AUDIOFLOW_ALLOWED_HOSTS)",
    }
    response = ASGIResponse(
        body=json.dumps(body).encode(),
        status_code=HTTP_400_BAD_REQUEST,
        media_type=MediaType.JSON,
    )
    await response(scope, receive, send)


def _takes_json_body(request: Request) -> bool:
    data = request.route_handler.parsed_data_field
    if data is None:
        return False
    kwarg = data.kwarg_definition
    return not isinstance(kwarg, BodyKwarg) or kwarg.media_type == RequestEncodingType.JSON


def _has_body(request: Request) -> bool:
    length = request.headers.get("content-length")
    return "transfer-encoding" in request.headers or (length is not None and length != "0")


def require_json_content_type(request: Request) -> None:
    """415 for a body sent to a JSON endpoint as anything but UTF-8 JSON."""
    if not _takes_json_body(request):
        return
    content_type = request.headers.get("content-type")
    if content_type is None and not _has_body(request):
        return
    media_type, _, params = (content_type or "").partition(";")
    if not _JSON_MEDIA_TYPE.fullmatch(media_type.strip().lower()):
        shown = media_type.strip()[:100].encode("ascii", "replace").decode() or "none"
        raise UnsupportedMediaError(
            f"this endpoint takes a JSON body: send Content-Type: application/json (got {shown!r})"
        )
    for param in params.split(";"):
        name, _, value = param.partition("=")
        if name.strip().lower() == "charset" and value.strip().strip('"').lower() != "utf-8":
            raise UnsupportedMediaError("a JSON body must be UTF-8 (charset=utf-8 or none)")


def document_json_only(document: OpenAPI) -> None:
    """Declare the 415 of `require_json_content_type` on every operation with a JSON body."""
    for path_item in (document.paths or {}).values():
        for method in ("post", "put", "patch", "delete"):
            operation = getattr(path_item, method, None)
            body = getattr(operation, "request_body", None)
            if operation is None or body is None or "application/json" not in body.content:
                continue
            responses = operation.responses if operation.responses is not None else {}
            responses.setdefault(
                "415",
                OpenAPIResponse(
                    description="The body is not sent as Content-Type: application/json",
                    content={
                        "application/json": OpenAPIMediaType(
                            schema=Reference(ref="#/components/schemas/ErrorOut")
                        )
                    },
                ),
            )
            operation.responses = responses
