"""The models' base is advanced-alchemy's, minus what would change the migrated schema."""

from __future__ import annotations

from advanced_alchemy.base import convention
from advanced_alchemy.types import DateTimeUTC
from sqlalchemy import Uuid

from db.base import metadata
from db.models import Task, Workflow


def test_the_library_naming_convention_names_the_constraints() -> None:
    assert dict(metadata.naming_convention) == dict(convention)
    names = {c.name for table in metadata.tables.values() for c in table.constraints}
    assert {"pk_tasks", "uq_tasks_idempotency_key", "fk_workflows_task_id_tasks"} <= names


def test_keys_and_timestamps_keep_the_migrated_types() -> None:
    for model in (Task, Workflow):
        table = model.__table__
        assert isinstance(table.c.id.type, Uuid) and table.c.id.primary_key
        # advanced-alchemy adds this column for its GUID keys; the migrations never made it.
        assert "sa_orm_sentinel" not in table.c
        for name in ("created_at", "updated_at", "started_at", "completed_at"):
            assert isinstance(table.c[name].type, DateTimeUTC)
        assert not table.c.created_at.nullable and not table.c.updated_at.nullable
