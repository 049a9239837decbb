"""Alembic environment: URL from the app's settings, metadata from the app's models.

A caller may hand over a live connection in `config.attributes["connection"]` (tests and
`audioflow migrate` do), or a URL in `config.attributes["url"]`.
"""

from __future__ import annotations

from alembic import context
from sqlalchemy import Connection

from core.settings import get_settings
from db import models  # noqa: F401  (registers the tables on the metadata)
from db.base import metadata
from db.engine import build_engine, is_sqlite

config = context.config


def _url() -> str:
    return str(config.attributes.get("url") or get_settings().database.url)


def _run(connection: Connection) -> None:
    context.configure(
        connection=connection,
        target_metadata=metadata,
        # SQLite cannot ALTER constraints; batch mode rebuilds the table instead.
        render_as_batch=connection.dialect.name == "sqlite",
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_offline() -> None:
    url = _url()
    context.configure(
        url=url,
        target_metadata=metadata,
        literal_binds=True,
        render_as_batch=is_sqlite(url),
        compare_type=True,
    )
    with context.begin_transaction():
        context.run_migrations()


def run_migrations_online() -> None:
    connection = config.attributes.get("connection")
    if connection is not None:
        _run(connection)
        return
    from dataclasses import replace

    engine = build_engine(replace(get_settings().database, url=_url()))
    with engine.connect() as conn:
        _run(conn)
    engine.dispose()


if context.is_offline_mode():
    run_migrations_offline()
else:
    run_migrations_online()
