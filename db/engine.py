"""Engines and sessions for PostgreSQL (production, tests) and SQLite (embedded default).

SQLite is tuned so that the API and the flows can write at once: WAL journal, a busy
timeout, and `BEGIN IMMEDIATE` for writers so that a read-then-write transaction takes the
write lock up front instead of failing with "database is locked" when it upgrades.

Readers must not queue for that lock: under WAL a reader sees the last committed state
whatever a writer is doing. So sessions begin by intent: `session_factory.begin()` (how
every service writes) takes the write lock at once; a plain `session_factory()`, whose
transaction begins by itself on its first query (how every service reads), starts a
deferred transaction that never asks for the write lock unless it writes.
"""

from __future__ import annotations

import threading
import weakref
from pathlib import Path
from typing import Any

from sqlalchemy import Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.orm import Session, SessionTransaction, SessionTransactionOrigin, sessionmaker

from core.settings import DatabaseSettings


def is_sqlite(url: str) -> bool:
    """True for any SQLite URL."""
    return make_url(url).get_backend_name() == "sqlite"


#: Execution option on the connections of SQLite sessions: their BEGIN is issued by the
#: session (`_begin_by_intent`), which knows whether it is a reader or a writer.
_SESSION_BEGINS = "audioflow_session_begins"


def _configure_sqlite(engine: Engine, busy_timeout_ms: int) -> None:
    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_connection: Any, _record: Any) -> None:
        # Let SQLAlchemy, not pysqlite, decide when transactions begin.
        dbapi_connection.isolation_level = None
        cursor = dbapi_connection.cursor()
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute(f"PRAGMA busy_timeout={int(busy_timeout_ms)}")
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        if conn.get_execution_options().get(_SESSION_BEGINS):
            return  # a session's connection: `_begin_by_intent` issues the BEGIN
        conn.exec_driver_sql("BEGIN IMMEDIATE")


def _begin_by_intent(_session: Session, transaction: SessionTransaction, conn: Any) -> None:
    """A SQLite session's BEGIN: IMMEDIATE when the session was begun explicitly (a writer),
    DEFERRED when it began by itself on a query (a reader, which then never takes the lock)."""
    if transaction.nested or transaction.parent is not None:
        return  # a savepoint or subtransaction inside a transaction already begun
    if transaction.origin is SessionTransactionOrigin.BEGIN:
        conn.exec_driver_sql("BEGIN IMMEDIATE")
    else:
        conn.exec_driver_sql("BEGIN")


def build_engine(settings: DatabaseSettings) -> Engine:
    """An engine for the configured URL, with the SQLite tuning where it applies."""
    url = make_url(settings.url)
    if url.get_backend_name() == "sqlite":
        if url.database and url.database != ":memory:":
            Path(url.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(url, connect_args={"check_same_thread": False})
        _configure_sqlite(engine, settings.sqlite_busy_timeout_ms)
        return engine
    return create_engine(
        url,
        pool_size=settings.pool_size,
        max_overflow=settings.pool_size,
        pool_pre_ping=True,
    )


def build_session_factory(engine: Engine) -> sessionmaker[Session]:
    """Sessions that keep loaded values after commit, so services can return them.

    On SQLite, reads (`factory()`) begin deferred and writes (`factory.begin()`) immediate:
    see the module's docstring.

    The services open their sessions from this factory; the API does not use
    advanced-alchemy's Litestar plugin (a session per request, committed before the answer
    is sent). Its request session begins by itself, so on SQLite a write would upgrade a
    deferred transaction (what the module's docstring avoids), and the commit would move
    from the service to the HTTP layer (the dispatcher is woken after the commit). Only
    registering it cost every request CPU, in one run of `python -m bench.plugin_probe 2000`
    (2026-11-29, in-process ASGI, medians of 5 alternating batches): GET /tasks/{id}
    803 -> 928 us, a progress report 904 -> 1006 us; GET on its request session: 907 us.
    """
    if engine.dialect.name != "sqlite":
        return sessionmaker(engine, expire_on_commit=False)
    factory = sessionmaker(
        engine.execution_options(**{_SESSION_BEGINS: True}), expire_on_commit=False
    )
    event.listen(factory, "after_begin", _begin_by_intent)
    return factory


_autocommit_engines: weakref.WeakKeyDictionary[Engine, Engine] = weakref.WeakKeyDictionary()
_autocommit_lock = threading.Lock()


def autocommit_engine(engine: Engine) -> Engine | None:
    """For a PostgreSQL engine, a second one on the same URL whose connections stay in
    autocommit; None for SQLite. One per engine, made on first use.

    For single-statement writes on the hottest path (progress reports): one round trip per
    write. `engine.execution_options(isolation_level=...)` would share the pool but switch
    each connection's level on checkout and back on return, and pre-ping each checkout:
    three round trips more, measured at a quarter of the endpoint's time. Without pre-ping
    a connection dropped by a server restart fails once: callers retry once, so their
    statement must be safe to apply twice.
    """
    if engine.dialect.name != "postgresql":
        return None
    with _autocommit_lock:
        found = _autocommit_engines.get(engine)
        if found is None:
            size = engine.pool.size() if hasattr(engine.pool, "size") else 5
            found = create_engine(
                engine.url,
                isolation_level="AUTOCOMMIT",
                pool_size=size,
                max_overflow=size,
                pool_pre_ping=False,
                pool_reset_on_return=None,  # autocommit: no transaction to roll back
            )
            _autocommit_engines[engine] = found
        return found
