"""Alembic migrations: up and down on both databases, and in agreement with the models."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import create_engine, inspect

from db.base import metadata
from tests.db_fixtures import alembic_config
from tests.support.postgres import temporary_database


def _diff(url: str) -> list[object]:
    engine = create_engine(url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(context, metadata)
    engine.dispose()
    return list(diff)


def _tables(url: str) -> set[str]:
    engine = create_engine(url)
    names = set(inspect(engine).get_table_names())
    engine.dispose()
    return names


@pytest.fixture(params=["postgresql", "sqlite"])
def empty_db(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    if request.param == "sqlite":
        yield f"sqlite:///{tmp_path / 'migrate.db'}"
    else:
        with temporary_database("audioflow_migrate") as url:
            yield url


def test_upgrade_matches_models_and_downgrade_empties(empty_db: str) -> None:
    config = alembic_config(empty_db)
    command.upgrade(config, "head")
    assert {"tasks", "workflows"} <= _tables(empty_db)
    assert _diff(empty_db) == [], "models and migrations disagree; write a migration"

    command.downgrade(config, "base")
    assert _tables(empty_db) <= {"alembic_version"}

    command.upgrade(config, "head")  # and back up again, as a deploy after a rollback would
    assert _diff(empty_db) == []
