"""Real API processes (uvicorn) on the tests' database, for what only a server shows:
a browser loading the docs, streams that stay open, several processes sharing one database."""

from __future__ import annotations

import contextlib
import os
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path

from cli.stack import ManagedProcess, free_port, start_api
from core.settings import Settings


@dataclass
class ApiProcess:
    """One uvicorn process serving `api.app:create_app`."""

    url: str
    process: ManagedProcess


def api_env(settings: Settings, extra: Mapping[str, str] | None = None) -> dict[str, str]:
    """The environment that makes `Settings.from_env()` in the child equal `settings`
    where the API cares: database, secrets, Prefect, local storage."""
    return {
        **os.environ,
        "AUDIOFLOW_ENV": "test",
        "AUDIOFLOW_HOME": str(settings.home),
        "DATABASE_URL": settings.database.url,
        "AUDIOFLOW_INTERNAL_TOKEN": settings.api.internal_token,
        "AUDIOFLOW_API_KEY": settings.api.api_key,
        "PREFECT_API_URL": settings.prefect.api_url,
        "AUDIOFLOW_STORAGE": "local",
        "AUDIOFLOW_STORAGE_DIR": str(settings.storage.local_dir),
        "PYTHONUNBUFFERED": "1",
        **(extra or {}),
    }


@contextlib.contextmanager
def api_processes(
    settings: Settings,
    log_dir: Path,
    *,
    count: int = 1,
    extra_env: Mapping[str, str] | None = None,
) -> Iterator[list[ApiProcess]]:
    """`count` API processes (one uvicorn worker each), stopped on exit."""
    env = api_env(settings, extra_env)
    started: list[ApiProcess] = []
    try:
        for n in range(count):
            port = free_port()
            process = start_api(env, port, log_dir / f"api-{n + 1}")
            started.append(ApiProcess(f"http://127.0.0.1:{port}", process))
        yield started
    finally:
        for api in started:
            api.process.stop()
