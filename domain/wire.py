"""msgspec structs derived from the contract models (`domain.contracts`).

The API decodes request bodies with msgspec (Litestar's native types) and publishes them in
its OpenAPI document, while the rules live once, in the pydantic models the flows take.
`wire_struct` builds a closed, camelCase struct with a model's fields, types, bounds,
lengths, defaults and descriptions, so the wire schema (and what the document shows) is
derived from the one definition instead of being written again. Rules that need code (the
models' validators: key checks, chapter order, tag text) run when the caller validates the
decoded values with the model, which then names the field.

Here (not in `api/`) because task payloads are decoded in the domain (`domain.task_types`),
whatever the task type, and the API's own bodies use it too (`api.schemas`).
"""

from __future__ import annotations

import types
import typing
from typing import Annotated, Any, Union

import annotated_types
import msgspec
from pydantic import BaseModel
from pydantic.fields import FieldInfo

__all__ = ["wire_struct", "wire_type"]

#: annotated-types constraints (what pydantic's `Field(ge=...)` records) -> msgspec.Meta.
_CONSTRAINTS: dict[type, tuple[str, str]] = {
    annotated_types.Ge: ("ge", "ge"),
    annotated_types.Gt: ("gt", "gt"),
    annotated_types.Le: ("le", "le"),
    annotated_types.Lt: ("lt", "lt"),
    annotated_types.MinLen: ("min_length", "min_length"),
    annotated_types.MaxLen: ("max_length", "max_length"),
}


def _constraints(metadata: list[Any] | tuple[Any, ...]) -> dict[str, Any]:
    meta: dict[str, Any] = {}
    for item in metadata:
        for constraint in item.metadata if isinstance(item, FieldInfo) else [item]:
            if type(constraint) in _CONSTRAINTS:
                attribute, keyword = _CONSTRAINTS[type(constraint)]
                meta[keyword] = getattr(constraint, attribute)
            elif isinstance(getattr(constraint, "pattern", None), str):
                # msgspec searches with `re` (where `$` also matches before a final
                # newline), pydantic matches with Rust's regex: the model's check, run
                # after decoding, is the strict one.
                meta["pattern"] = constraint.pattern
    return meta


def wire_type(annotation: Any, metadata: list[Any] | tuple[Any, ...] = ()) -> Any:
    """`annotation` with pydantic's bounds and lengths as `msgspec.Meta`, so msgspec
    enforces them while decoding and the OpenAPI document shows them. A bound on an
    optional field (`float | None = Field(ge=...)`) goes to the type that is not None."""
    origin = typing.get_origin(annotation)
    if origin is Annotated:
        base, *extra = typing.get_args(annotation)
        return wire_type(base, [*metadata, *extra])
    if origin in (Union, types.UnionType):
        members = tuple(
            arg if arg is type(None) else wire_type(arg, metadata)
            for arg in typing.get_args(annotation)
        )
        return Union[members]  # noqa: UP007
    if origin is list:
        (item,) = typing.get_args(annotation)
        converted: Any = list[wire_type(item)]  # type: ignore[misc]
    else:
        converted = annotation
    meta = _constraints(metadata)
    return Annotated[converted, msgspec.Meta(**meta)] if meta else converted


def wire_struct(
    name: str, model: type[BaseModel], *, exclude: frozenset[str] = frozenset(), doc: str = ""
) -> type[msgspec.Struct]:
    """A closed, camelCase struct with the fields, types, bounds, defaults and descriptions
    of a contract model (required fields stay required). Decoding with it checks shapes,
    types and bounds; validate the decoded values with `model` for the rest."""
    fields: list[tuple[str, Any] | tuple[str, Any, Any]] = []
    for field_name, info in model.model_fields.items():
        if field_name in exclude:
            continue
        field_type = wire_type(info.annotation, info.metadata)
        if info.description:
            field_type = Annotated[field_type, msgspec.Meta(description=info.description)]
        if info.is_required():
            fields.append((field_name, field_type))
        elif info.default_factory is not None:
            factory: Any = info.default_factory
            fields.append((field_name, field_type, msgspec.field(default_factory=factory)))
        else:
            fields.append((field_name, field_type, info.default))
    struct = msgspec.defstruct(
        name, fields, rename="camel", forbid_unknown_fields=True, kw_only=True, module=__name__
    )
    struct.__doc__ = doc
    return struct
