"""What the OpenAPI document must say that Litestar leaves out of it.

Litestar 2.25 builds request-body schemas from msgspec structs but drops two constraints
the app enforces: `forbid_unknown_fields` (unknown keys are a 400) and a lower bound of
zero (`ge=0` is falsy, so no `minimum` is written). Clients and schema-driven tests then
generate requests the app refuses. This adds both back to the generated document, from
the structs themselves, so the document cannot drift from what is enforced.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPI, Schema

from api.schemas import CreateTaskRequest, PresignRequest, ProgressRequest, ReprocessRequest

#: Every struct the API accepts as a JSON body.
REQUEST_BODIES: tuple[type[msgspec.Struct], ...] = (
    CreateTaskRequest,
    PresignRequest,
    ProgressRequest,
    ReprocessRequest,
)


def _lower_bound(type_info: msgspec.inspect.Type) -> int | float | None:
    if isinstance(type_info, msgspec.inspect.UnionType):
        bounds = [_lower_bound(t) for t in type_info.types]
        return next((b for b in bounds if b is not None), None)
    if isinstance(type_info, (msgspec.inspect.IntType, msgspec.inspect.FloatType)):
        ge: int | float | None = type_info.ge
        return ge
    return None


def publish_enforced_constraints(document: OpenAPI) -> None:
    """Close the request bodies' schemas and restore `minimum` bounds Litestar dropped."""
    schemas: dict[str, Any] = (document.components.schemas or {}) if document.components else {}
    for struct in REQUEST_BODIES:
        schema = schemas.get(struct.__name__)
        if not isinstance(schema, Schema):
            continue
        info = msgspec.inspect.type_info(struct)
        assert isinstance(info, msgspec.inspect.StructType)
        if info.forbid_unknown_fields:
            schema.additional_properties = False
        for field in info.fields:
            prop = (schema.properties or {}).get(field.encode_name)
            bound = _lower_bound(field.type)
            if isinstance(prop, Schema) and bound is not None and prop.minimum is None:
                prop.minimum = bound
