"""API fixtures: the real app on the test database, wired to the run's Prefect server."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from alembic import command
from litestar.testing import TestClient
from prefect.client.orchestration import SyncPrefectClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import DatabaseSettings, Settings
from core.storage.s3 import S3Store
from db.engine import build_engine, build_session_factory
from tests.db_fixtures import TEST_TOKEN, alembic_config
from tests.prefect_fixtures import PrefectServer, prefect_client
from tests.support.api_processes import ApiProcess, api_processes
from tests.support.moto_server import FAKE_AWS_ENV, moto_server
from tests.support.waiting import wait_for

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}
PROGRESS = "/internal/workflow-progress"


@pytest.fixture
def settings(base_settings: Settings, prefect_server: PrefectServer) -> Settings:
    return replace(
        base_settings, prefect=replace(base_settings.prefect, api_url=prefect_server.url)
    )


@pytest.fixture
def prefect(settings: Settings) -> Iterator[SyncPrefectClient]:
    """A client of the run's Prefect server (tests play the worker's part through it)."""
    with prefect_client(settings.prefect.api_url) as client:
        yield client


@pytest.fixture
def client(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:
    app = create_app(settings, session_factory=session_factory)
    with TestClient(app=app) as test_client:
        yield test_client


@pytest.fixture(params=["postgresql", "sqlite"])
def factory(
    request: pytest.FixtureRequest, session_factory: sessionmaker[Session], tmp_path: Path
) -> Iterator[sessionmaker[Session]]:
    """Sessions on the test PostgreSQL database, then on a migrated SQLite file: for the
    services whose SQL differs between the two (progress hot path, dispatcher claims)."""
    if request.param == "postgresql":
        yield session_factory
        return
    url = f"sqlite:///{tmp_path / 'audioflow.db'}"
    command.upgrade(alembic_config(url), "head")
    engine = build_engine(DatabaseSettings(url=url))
    yield build_session_factory(engine)
    engine.dispose()


def create_task(client: TestClient, payload: dict[str, Any]) -> dict[str, Any]:
    """POST an audio_processing task (201) and return it once its flow run exists.

    `POST /tasks` answers before Prefect has the run (see `domain.dispatch`); the
    app's dispatcher thread records the run's id a moment later.
    """
    response = client.post("/tasks", json={"type": "audio_processing", "payload": payload})
    assert response.status_code == 201, response.text
    task_id = response.json()["id"]

    def check() -> dict[str, Any] | None:
        task: dict[str, Any] = client.get(f"/tasks/{task_id}").json()
        return task if task["workflowInstanceId"] or task["status"] != "pending" else None

    return wait_for(f"task {task_id}'s flow run", check, 30)


def report_progress(client: TestClient, task: dict[str, Any], **fields: Any) -> None:
    """POST a progress report for the task's current workflow, as the flow would; 200."""
    body = {"taskId": task["id"], "workflowId": task["workflowId"], **fields}
    response = client.post(PROGRESS, json=body, headers=AUTH)
    assert response.status_code == 200, response.text


# --- real API processes for event streams (tests/support/api_processes.py) --------------------

#: The API key of the keyed API processes.
STREAM_API_KEY = "sse-test-key-0123456789abcdef"


@pytest.fixture(scope="module")
def stream_settings(base_settings: Settings, prefect_server: PrefectServer) -> Settings:
    """The test settings with an API key, on the run's Prefect server."""
    return replace(
        base_settings,
        api=replace(base_settings.api, api_key=STREAM_API_KEY),
        prefect=replace(base_settings.prefect, api_url=prefect_server.url),
    )


@pytest.fixture(scope="module")
def apis(
    stream_settings: Settings, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[list[ApiProcess]]:
    """Two API processes; keep-alives every 300 s, so only a notification wakes a stream."""
    with api_processes(
        stream_settings,
        tmp_path_factory.mktemp("sse-logs"),
        count=2,
        extra_env={"AUDIOFLOW_SSE_KEEPALIVE_S": "300"},
    ) as started:
        yield started


# --- S3: a real moto server over HTTP (see tests/support/moto_server.py) ---------------------


@pytest.fixture(scope="session")
def moto_endpoint() -> Iterator[str]:
    """URL of a moto S3 server shared by the session (buckets are per test)."""
    with moto_server() as url:
        yield url


@pytest.fixture
def aws_credentials(monkeypatch: pytest.MonkeyPatch) -> None:
    """Throwaway credentials for boto3; the developer's AWS config is hidden."""
    for name, value in FAKE_AWS_ENV.items():
        monkeypatch.setenv(name, value)
    for name in ("AWS_PROFILE", "AWS_ENDPOINT_URL", "AWS_ENDPOINT_URL_S3"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture
def s3_store(moto_endpoint: str, aws_credentials: None) -> S3Store:
    """An S3Store on a fresh bucket, with 5 MiB parts (the S3 minimum)."""
    store = S3Store(
        f"test-{uuid.uuid4().hex[:16]}",
        endpoint_url=moto_endpoint,
        region="us-east-1",
        multipart_chunk_bytes=5 * 1024 * 1024,
    )
    store.ensure_bucket()
    return store
