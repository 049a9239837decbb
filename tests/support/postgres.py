"""A throwaway PostgreSQL database per test run, on the machine's server."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url
from sqlalchemy.pool import NullPool

#: The server to use; each run makes its own database on it and drops it afterwards.
ADMIN_URL = os.environ.get(
    "AUDIOFLOW_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


@contextmanager
def temporary_database(prefix: str = "audioflow_test") -> Iterator[str]:
    """Create a fresh database, yield its URL, drop it (even with connections left open)."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    # No pool: a connection kept across a PostgreSQL restart (the fault tests do one) is dead.
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    with admin.connect() as conn:
        conn.execute(text(f'CREATE DATABASE "{name}"'))
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        with admin.connect() as conn:
            conn.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
        admin.dispose()
