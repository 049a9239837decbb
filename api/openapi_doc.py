"""What the OpenAPI document must say that Litestar leaves out of it.

Litestar 2.25 builds request-body schemas from msgspec structs but drops two constraints
the app enforces: `forbid_unknown_fields` (unknown keys are a 400) and a lower bound of
zero (`ge=0` is falsy, so no `minimum` is written). Clients and schema-driven tests then
generate requests the app refuses. This adds both back to the generated document, from
the structs themselves, so the document cannot drift from what is enforced.

It also publishes each task type's payload model (`domain.task_types`): `POST /tasks`
decodes `payload` in the domain, with the task type's model, so that a wrong payload is a
422 naming the field whatever the type; Litestar sees an open object there and would
document one.
"""

from __future__ import annotations

from typing import Any

import msgspec
from litestar.openapi.spec import OpenAPI, Reference, Schema

from api.schemas import CreateTaskRequest, PresignRequest, ProgressRequest, ReprocessRequest
from domain.task_types import TASK_TYPES

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


def document_task_payloads(document: OpenAPI) -> None:
    """`CreateTaskRequest`: `type` an enum of the registered types, `payload` their models.

    The models' schemas come from msgspec itself (field names as on the wire, the
    `audioR2Key` alias, the format-name enum, the language pattern).
    """
    if document.components is None or document.components.schemas is None:
        return
    schemas: dict[str, Any] = document.components.schemas
    request = schemas.get(CreateTaskRequest.__name__)
    if not isinstance(request, Schema) or not request.properties:
        return
    models = {name: task_type.payload_model for name, task_type in TASK_TYPES.items()}
    refs, components = msgspec.json.schema_components(
        list(models.values()), ref_template="#/components/schemas/{name}"
    )
    schemas.update(components)
    references = [Reference(ref=ref["$ref"]) for ref in refs]
    type_schema = request.properties["type"]
    if isinstance(type_schema, Schema):
        type_schema.enum = list(models)
    request.properties["payload"] = Schema(
        one_of=list(references),
        description="The task type's payload: "
        + "; ".join(f"`{name}`: {model.__name__}" for name, model in models.items()),
    )
