"""The declarative base, from advanced-alchemy's pieces, with the schema of migrations 0001-0003.

- The registry and its MetaData come from `advanced_alchemy.base.create_registry`: the
  library's naming convention (`pk_tasks`, `uq_tasks_idempotency_key`, ...), so constraint
  names are the same on PostgreSQL and SQLite and a migration can drop one by name.
- Timestamps are `DateTimeUTC`: aware in, aware out on both databases (SQLite stores no
  zone); a naive value is refused when it is written.
- Keys and audit columns are the library's mixins (`UUIDPrimaryKey`, `AuditColumns`), with
  two deliberate differences, both to keep the schema the migrations made:
  * `uuid.UUID` maps to SQLAlchemy's own `Uuid`, not the library's `GUID`. On PostgreSQL
    both are `UUID`; on SQLite `GUID` would be `BINARY(16)`, where every embedded database
    (`make demo`, `audioflow up`) holds the 32-character hex `Uuid` writes.
  * no `sa_orm_sentinel` column: the library adds it so that batched INSERT ... RETURNING
    can match rows to objects when the key type is its `GUID`. Our keys are made in Python
    and no insert needs RETURNING; the progress hot path returns every column of the table,
    and an extra one would cost it on every report.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime

from advanced_alchemy.base import create_registry
from advanced_alchemy.mixins import AuditColumns as _LibraryAuditColumns
from advanced_alchemy.mixins import UUIDPrimaryKey
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import MetaData, Uuid
from sqlalchemy.orm import DeclarativeBase, validates

__all__ = ["AuditColumns", "Base", "DateTimeUTC", "UUIDKey", "metadata", "orm_registry", "utcnow"]

#: advanced-alchemy's registry: its naming convention and type map (`datetime` ->
#: `DateTimeUTC`, ...), with `uuid.UUID` as SQLAlchemy's `Uuid` (see the module's docstring).
orm_registry = create_registry({uuid.UUID: Uuid()})
metadata: MetaData = orm_registry.metadata


def utcnow() -> datetime:
    """Timezone-aware now; every timestamp in the schema is UTC."""
    return datetime.now(UTC)


class Base(DeclarativeBase):
    """Base class of every model."""

    registry = orm_registry
    metadata = metadata


class UUIDKey(UUIDPrimaryKey):
    """advanced-alchemy's UUID v4 primary key (`id`), without its sentinel column."""

    __abstract__ = True
    #: Overrides the library's `_sentinel` column with nothing (see the module's docstring).
    _sentinel = None  # type: ignore[assignment]


class AuditColumns(_LibraryAuditColumns):
    """advanced-alchemy's `created_at` / `updated_at`, kept by the ORM on every write.

    The library reads a naive value given to these two as UTC; here it is refused, like
    everywhere else in the schema: a naive value is a bug (local time or UTC? nobody knows).
    """

    @validates("created_at", "updated_at")
    def validate_tz_info(self, _key: str, value: datetime) -> datetime:
        if value.tzinfo is None:
            raise ValueError("naive datetimes are not stored; use utcnow()")
        return value
