"""What advanced-alchemy's Litestar SQLAlchemy plugin would cost the API's hot paths:
`python -m bench.plugin_probe N`.

The real app (`api.app.create_app`) on a throwaway PostgreSQL database, called in-process
through ASGI (no sockets, no uvicorn: only the app's own work), N sequential requests per
batch, three ways in the same run with alternating batches:

- `shipped`: the app as it is (services open their own sessions from one session factory).
- `plugin_registered`: the same app with `SQLAlchemyPlugin` (sync config, our engine and
  session factory, the autocommit before-send handler) registered; handlers unchanged. The
  plugin's fixed cost on every request.
- `plugin_session` (GET only): a `GET /tasks/{id}` handler that takes the plugin's
  request-scoped `db_session` and reads through `TaskRepository`, as a plugin-based
  controller would.

Measured: `GET /tasks/{id}` and `POST /internal/workflow-progress` (a plain report, the
hand-written hot path). Microseconds per request (wall and CPU), medians of 5 batches, as
one JSON line.
"""

from __future__ import annotations

import asyncio
import functools
import json
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Coroutine
from dataclasses import replace
from pathlib import Path
from typing import Any

from advanced_alchemy.extensions.litestar import SQLAlchemyPlugin, SQLAlchemySyncConfig
from alembic import command
from alembic.config import Config
from litestar import Litestar, get
from litestar.params import FromPath
from sqlalchemy.orm import Session

import api.app as app_module
from api.schemas import TaskOut
from api.security import require_api_key
from bench.harness import temporary_database
from cli.stack import PROJECT_DIR
from core.errors import NotFoundError
from core.settings import Settings
from db.engine import build_engine, build_session_factory
from db.models import Task, TaskStatus, Workflow, WorkflowStatus
from db.repositories import TaskRepository

API_KEY = "bench-api-key"
TOKEN = "bench-internal-token"

Request = Callable[[int], Coroutine[Any, Any, int]]


@get("/bench/tasks/{task_id:uuid}", guards=[require_api_key], sync_to_thread=True)
def get_task_with_plugin_session(task_id: FromPath[uuid.UUID], db_session: Session) -> TaskOut:
    """`GET /tasks/{id}` as a controller on the plugin's request-scoped session would be."""
    task = TaskRepository(db_session).get_one_or_none(id=task_id)
    if task is None:
        raise NotFoundError(f"task {task_id} not found")
    return TaskOut.of(task)


def _caller(app: Litestar, method: str, path: str, headers: dict[str, str], body: bytes) -> Request:
    raw_headers = [(b"host", b"127.0.0.1")] + [
        (k.lower().encode(), v.encode()) for k, v in headers.items()
    ]

    async def call(_i: int) -> int:
        status = 0
        scope = {
            "type": "http",
            "asgi": {"version": "3.0"},
            "http_version": "1.1",
            "method": method,
            "scheme": "http",
            "path": path,
            "raw_path": path.encode(),
            "query_string": b"",
            "root_path": "",
            "headers": raw_headers,
            "client": ("127.0.0.1", 40000),
            "server": ("127.0.0.1", 8000),
            "state": {},
        }

        async def receive() -> dict[str, Any]:
            return {"type": "http.request", "body": body, "more_body": False}

        async def send(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]

        await app(scope, receive, send)  # type: ignore[arg-type]
        return status

    return call


async def _batches(n: int, calls: dict[str, Request]) -> dict[str, dict[str, float]]:
    for call in calls.values():  # warm-up, and every variant answers 200
        for i in range(max(n // 10, 1)):
            assert await call(i) == 200
    samples: dict[str, dict[str, list[float]]] = {
        name: {"wall_us": [], "cpu_us": []} for name in calls
    }
    for _ in range(5):
        for name, call in calls.items():
            w0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                await call(i)
            samples[name]["wall_us"].append((time.perf_counter() - w0) / n * 1e6)
            samples[name]["cpu_us"].append((time.process_time() - c0) / n * 1e6)
    return {
        name: {key: round(statistics.median(values), 1) for key, values in figures.items()}
        for name, figures in samples.items()
    }


def _settings(url: str, home: Path) -> Settings:
    settings = Settings.from_env()
    return replace(
        settings,
        env="test",
        home=home,
        database=replace(settings.database, url=url),
        api=replace(
            settings.api, api_key=API_KEY, internal_token=TOKEN, allowed_hosts=("127.0.0.1",)
        ),
        storage=replace(settings.storage, backend="local", local_dir=home / "storage"),
    )


async def _measure(n: int, url: str, home: Path) -> dict[str, Any]:
    config = Config(str(PROJECT_DIR / "alembic.ini"))
    config.attributes["url"] = url
    command.upgrade(config, "head")
    settings = _settings(url, home)
    engine = build_engine(settings.database)
    factory = build_session_factory(engine)
    with factory.begin() as session:
        task = Task(type="audio_processing", status=TaskStatus.PROCESSING, payload={})
        session.add(task)
        session.flush()
        workflow = Workflow(
            name="audio-processing",
            deployment_name="audio-processing/audio-processing",
            task_id=task.id,
            attempt=1,
            status=WorkflowStatus.RUNNING,
            parameters={},
            corrections=[],
        )
        session.add(workflow)
        session.flush()
        task.workflow_id = workflow.id
        ids = (task.id, workflow.id)

    shipped = app_module.create_app(settings, session_factory=factory)
    plugin = SQLAlchemyPlugin(
        config=SQLAlchemySyncConfig(
            engine_instance=engine, session_maker=factory, before_send_handler="autocommit"
        )
    )
    original = app_module.Litestar
    app_module.Litestar = functools.partial(original, plugins=[plugin])  # type: ignore[assignment,misc]
    try:
        with_plugin = app_module.create_app(settings, session_factory=factory)
    finally:
        app_module.Litestar = original  # type: ignore[misc]
    with_plugin.register(get_task_with_plugin_session)

    key = {"X-API-Key": API_KEY}
    progress = {"Authorization": f"Bearer {TOKEN}", "Content-Type": "application/json"}
    body = json.dumps(
        {"taskId": str(ids[0]), "workflowId": str(ids[1]), "progress": 50, "step": "encode"}
    ).encode()
    async with shipped.lifespan(), with_plugin.lifespan():
        get_figures = await _batches(
            n,
            {
                "shipped": _caller(shipped, "GET", f"/tasks/{ids[0]}", key, b""),
                "plugin_registered": _caller(with_plugin, "GET", f"/tasks/{ids[0]}", key, b""),
                "plugin_session": _caller(with_plugin, "GET", f"/bench/tasks/{ids[0]}", key, b""),
            },
        )
        progress_figures = await _batches(
            n,
            {
                "shipped": _caller(shipped, "POST", "/internal/workflow-progress", progress, body),
                "plugin_registered": _caller(
                    with_plugin, "POST", "/internal/workflow-progress", progress, body
                ),
            },
        )
    engine.dispose()
    return {"get_task": get_figures, "progress": progress_figures}


def main(n: int) -> None:
    os.environ.setdefault("AUDIOFLOW_ENV", "test")
    with temporary_database("audioflow_bench_plugin") as url, tempfile.TemporaryDirectory() as home:
        figures = asyncio.run(_measure(n, url, Path(home)))
    print(json.dumps(figures))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
