"""On SQLite (the embedded default), reads do not take the write lock: 40 threads reading
tasks through the real app while progress reports are written in a loop get no 503 and
no "database is locked", also while a writer holds the lock."""

from __future__ import annotations

import sqlite3
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from litestar.testing import TestClient
from sqlalchemy import Engine, text

from api.app import create_app
from core.settings import DatabaseSettings, Settings
from db.engine import build_engine, build_session_factory
from tests.db_fixtures import alembic_config
from tests.integration.conftest import AUTH, create_task

READERS = 40
READS_PER_READER = 25
PAYLOAD = {"episodeId": "ep-sqlite", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_128"]}


#: A writer's wait for the lock before "database is locked", in the held-lock test: short,
#: so that code whose readers queue for the lock fails in seconds, not in 30.
SHORT_BUSY_TIMEOUT_MS = 2000


@pytest.fixture(params=[DatabaseSettings(url="").sqlite_busy_timeout_ms])
def busy_timeout_ms(request: pytest.FixtureRequest) -> int:
    return int(request.param)


@pytest.fixture
def sqlite_engine(tmp_path: Path, busy_timeout_ms: int) -> Iterator[Engine]:
    url = f"sqlite:///{tmp_path / 'audioflow.db'}"
    command.upgrade(alembic_config(url), "head")
    engine = build_engine(DatabaseSettings(url=url, sqlite_busy_timeout_ms=busy_timeout_ms))
    yield engine
    engine.dispose()


@pytest.fixture
def sqlite_client(settings: Settings, sqlite_engine: Engine) -> Iterator[TestClient]:
    on_sqlite = replace(settings, database=replace(settings.database, url=str(sqlite_engine.url)))
    app = create_app(on_sqlite, session_factory=build_session_factory(sqlite_engine))
    with TestClient(app=app) as client:
        yield client


def test_readers_do_not_wait_for_the_write_lock(
    sqlite_client: TestClient, sqlite_engine: Engine
) -> None:
    tasks = [create_task(sqlite_client, PAYLOAD | {"episodeId": f"ep-{n}"}) for n in range(3)]
    ids = {"taskId": tasks[0]["id"], "workflowId": tasks[0]["workflowId"]}
    running = sqlite_client.post(
        "/internal/workflow-progress", json=ids | {"status": "running"}, headers=AUTH
    )
    assert running.status_code == 200, running.text

    readers_done = threading.Event()
    writes: list[int] = []

    def write_progress() -> None:
        """Progress reports as a flow sends them, each one a real write, until reads end."""
        n = 0
        while not readers_done.is_set():
            n += 1
            r = sqlite_client.post(
                "/internal/workflow-progress",
                json=ids | {"progress": n % 99, "message": f"report {n}", "step": "encode:mp3_128"},
                headers=AUTH,
            )
            writes.append(r.status_code)

    def read(reader: int) -> list[tuple[int, str]]:
        answers = []
        for i in range(READS_PER_READER):
            if (reader + i) % 2:
                r = sqlite_client.get("/tasks", params={"limit": 20})
            else:
                r = sqlite_client.get(f"/tasks/{tasks[i % len(tasks)]['id']}")
            answers.append((r.status_code, r.text))
        return answers

    writer = threading.Thread(target=write_progress)
    writer.start()
    try:
        with ThreadPoolExecutor(READERS) as pool:
            results = [a for answers in pool.map(read, range(READERS)) for a in answers]
    finally:
        readers_done.set()
        writer.join()

    failures = [(status, body[:200]) for status, body in results if status != 200]
    assert failures == [], f"{len(failures)} of {len(results)} reads failed: {failures[:5]}"
    assert writes and set(writes) == {200}, sorted(set(writes))
    with sqlite_engine.connect() as conn:
        message = conn.execute(
            text("SELECT message FROM workflows WHERE id = :id"),
            {"id": ids["workflowId"].replace("-", "")},
        ).scalar()
    assert message == f"report {len(writes)}"


@pytest.mark.parametrize("busy_timeout_ms", [SHORT_BUSY_TIMEOUT_MS], indirect=True)
def test_readers_answer_while_a_writer_holds_the_lock(
    sqlite_client: TestClient, sqlite_engine: Engine
) -> None:
    """A write transaction left open (a slow writer in another process) does not stop
    reads: they see the last committed state. Fails, with 503s, when reads begin IMMEDIATE."""
    task = create_task(sqlite_client, PAYLOAD)
    before = sqlite_client.get(f"/tasks/{task['id']}").json()
    database = sqlite_engine.url.database
    assert database is not None
    writer = sqlite3.connect(database, isolation_level=None)
    try:
        writer.execute("BEGIN IMMEDIATE")
        writer.execute("UPDATE tasks SET current_step = 'uncommitted'")

        def read(reader: int) -> tuple[int, Any]:
            path = "/tasks" if reader % 2 else f"/tasks/{task['id']}"
            r = sqlite_client.get(path)
            return r.status_code, r.json()

        with ThreadPoolExecutor(READERS) as pool:
            answers = list(pool.map(read, range(READERS)))
    finally:
        writer.execute("ROLLBACK")
        writer.close()

    assert [status for status, _ in answers] == [200] * READERS, answers[:3]
    for reader, (_, body) in enumerate(answers):
        row = body["items"][0] if reader % 2 else body
        assert row["id"] == task["id"] and row["currentStep"] == before["currentStep"]
