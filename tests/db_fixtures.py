"""Database fixtures: one PostgreSQL database per run, migrated with Alembic, emptied per test."""

from __future__ import annotations

import secrets
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from alembic.config import Config
from sqlalchemy import Engine, event, text
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from db.engine import build_engine, build_session_factory
from tests.support.postgres import temporary_database

PROJECT_DIR = Path(__file__).resolve().parent.parent
#: Generated per run, like the secrets `audioflow up` generates: no test relies on a constant.
TEST_TOKEN = secrets.token_urlsafe(24)
#: The `Host` Litestar's TestClient sends (`http://testserver.local`).
TEST_HOST = "testserver.local"


def alembic_config(url: str) -> Config:
    config = Config(str(PROJECT_DIR / "alembic.ini"))
    config.attributes["url"] = url
    return config


@pytest.fixture(scope="session")
def pg_url() -> Iterator[str]:
    with temporary_database() as url:
        command.upgrade(alembic_config(url), "head")
        yield url


@pytest.fixture(scope="session")
def base_settings(pg_url: str, tmp_path_factory: pytest.TempPathFactory) -> Settings:
    home = tmp_path_factory.mktemp("home")
    settings = Settings.from_env()
    return replace(
        settings,
        home=home,
        database=replace(settings.database, url=pg_url),
        api=replace(settings.api, internal_token=TEST_TOKEN, allowed_hosts=(TEST_HOST,)),
        storage=replace(settings.storage, backend="local", local_dir=home / "storage"),
    )


#: Connections handed back to the shared pool in autocommit (see `engine`).
_AUTOCOMMIT_RETURNS: list[str] = []


@pytest.fixture(scope="session")
def engine(base_settings: Settings) -> Iterator[Engine]:
    """The run's engine, shared by every test. A connection given back to its pool in
    autocommit (a test that set it on a raw connection) would make later sessions'
    transactions single statements, their `FOR UPDATE` locks released at once: a
    double-sent webhook three modules later. `session_factory` fails the test that did it."""
    engine = build_engine(base_settings.database)

    @event.listens_for(engine, "checkin")
    def _on_checkin(dbapi_connection: Any, _record: Any) -> None:
        if getattr(dbapi_connection, "autocommit", False):
            dbapi_connection.autocommit = False  # the next test gets a sound connection
            _AUTOCOMMIT_RETURNS.append("a connection came back to the pool in autocommit")

    yield engine
    engine.dispose()


@pytest.fixture
def session_factory(engine: Engine) -> Iterator[sessionmaker[Session]]:
    _AUTOCOMMIT_RETURNS.clear()
    yield build_session_factory(engine)
    assert not _AUTOCOMMIT_RETURNS, "this test gave the shared pool a connection in autocommit"
    with engine.begin() as conn:
        conn.execute(text("UPDATE tasks SET workflow_id = NULL"))
        conn.execute(text("DELETE FROM workflows"))
        conn.execute(text("DELETE FROM tasks"))
