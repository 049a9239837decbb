"""End-to-end fixtures: PostgreSQL, moto's S3 server, and a whole audioflow stack on them."""

from __future__ import annotations

import contextlib
import os
import secrets
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Stack, running_stack
from core.storage.s3 import S3Store
from tests.support.moto_server import fake_aws_env, moto_server
from tests.support.postgres import temporary_database
from tests.support.waiting import wait_for

BUCKET = "audioflow-e2e"
#: Generated per run and passed explicitly (an explicit secret wins over the stack's
#: `secrets.json`); `test_up_and_large_uploads.py` covers the generated file itself.
TOKEN = secrets.token_urlsafe(24)
API_KEY = secrets.token_urlsafe(24)
HEADERS = {"X-API-Key": API_KEY}
SPOKEN = (
    "Welcome to the audioflow podcast. Today we talk about encoding and transcription. "
    "Thank you for listening."
)
TERMINAL = {"done", "failed", "cancelled"}


@pytest.fixture(scope="session")
def s3_endpoint() -> Iterator[str]:
    with fake_aws_env(), moto_server() as url:
        yield url


@pytest.fixture(scope="session")
def e2e_store(s3_endpoint: str) -> S3Store:
    store = S3Store(BUCKET, endpoint_url=s3_endpoint, region="us-east-1")
    store.ensure_bucket()
    return store


@contextlib.contextmanager
def stack_databases(prefix: str) -> Iterator[tuple[str, str]]:
    """Two throwaway PostgreSQL databases: the app's, and the Prefect server's own (asyncpg)."""
    with (
        temporary_database(prefix) as app_db,
        temporary_database(f"{prefix}_prefect") as prefect_db,
    ):
        yield app_db, prefect_db.replace("+psycopg2", "+asyncpg")


def stack_env(dbs: tuple[str, str], s3_endpoint: str, bucket: str, **extra: str) -> dict[str, str]:
    """The environment of an end-to-end stack: PostgreSQL, S3 at `s3_endpoint`, test secrets."""
    app_db, prefect_db = dbs
    return {
        **os.environ,
        "DATABASE_URL": app_db,
        "AUDIOFLOW_PREFECT_DATABASE_URL": prefect_db,
        "AUDIOFLOW_STORAGE": "s3",
        "AUDIOFLOW_S3_BUCKET": bucket,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        "AUDIOFLOW_INTERNAL_TOKEN": TOKEN,
        "AUDIOFLOW_API_KEY": API_KEY,
        "AUDIOFLOW_ENV": "test",
        **extra,
    }


@pytest.fixture(scope="session")
def stack(
    s3_endpoint: str, e2e_store: S3Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("stack")
    with (
        stack_databases("audioflow_e2e") as dbs,
        running_stack(home, env=stack_env(dbs, s3_endpoint, BUCKET)) as running,
    ):
        yield running


@pytest.fixture(scope="session")
def speech_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A real spoken clip (espeak-ng), as a stereo 192k MP3 like an uploaded episode."""
    folder = tmp_path_factory.mktemp("speech")
    wav, mp3 = folder / "speech.wav", folder / "speech.mp3"
    subprocess.run(["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), SPOKEN], check=True)
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-i",
            str(wav),
            "-ac",
            "2",
            "-ar",
            "44100",
            "-b:a",
            "192k",
            str(mp3),
        ],
        check=True,
    )
    return mp3


def create_task(stack: Stack, payload: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(
        f"{stack.api_url}/tasks",
        json={"type": "audio_processing", "payload": payload},
        headers=HEADERS,
        timeout=60,
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return dispatched(stack, created["id"])


def dispatched(stack: Stack, task_id: str, timeout_s: float = 30) -> dict[str, Any]:
    """The task once the API's dispatcher has created its flow run (or failed to)."""

    def check() -> dict[str, Any] | None:
        task: dict[str, Any] = api_get(stack, f"/tasks/{task_id}")
        return task if task["workflowInstanceId"] or task["status"] != "pending" else None

    return wait_for(f"task {task_id}'s flow run", check, timeout_s)


def follow(stack: Stack, task_id: str, timeout_s: float = 240) -> list[dict[str, Any]]:
    """Poll a task until it ends; every distinct state seen, in order."""
    seen: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        task = httpx.get(f"{stack.api_url}/tasks/{task_id}", headers=HEADERS, timeout=10).json()
        if not seen or (task["status"], task["progress"]) != (
            seen[-1]["status"],
            seen[-1]["progress"],
        ):
            seen.append(task)
        if task["status"] in TERMINAL:
            return seen
        time.sleep(0.2)
    raise AssertionError(
        f"task {task_id} did not finish in {timeout_s} s; last: {seen[-1] if seen else None}"
    )


def api_get(stack: Stack, path: str) -> Any:
    """GET an API path with the stack's API key; asserts 200."""
    response = httpx.get(f"{stack.api_url}{path}", headers=HEADERS, timeout=10)
    assert response.status_code == 200, response.text
    return response.json()
