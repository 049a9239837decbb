"""Issue 10, case 2, for real: two tasks of one episode on the whole stack (API, Prefect
server and worker, PostgreSQL, moto's S3 over HTTP, ffmpeg). Task B of the episode is
cancelled while it encodes: task A's published files stay, decode, and stay current in the
episode's manifest; a later task that completes becomes current without touching A's files.
Outputs are checked with ffprobe, never with the code under test."""

from __future__ import annotations

import json
import subprocess
import uuid
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Stack
from core.storage.s3 import S3Store
from tests.e2e.conftest import HEADERS, api_get, create_task, follow
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
FFMPEG = ["ffmpeg", "-nostdin", "-v", "error", "-y"]


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """A short tone (A and C) and a twenty-minute one (B), made by stream-copy looping a
    two-minute piece: long enough that B is still encoding when the test cancels it."""
    folder = tmp_path_factory.mktemp("shared")
    short, piece, long = folder / "short.mp3", folder / "piece.mp3", folder / "long.mp3"
    tone = ["-f", "lavfi", "-i", "sine=frequency=440:duration={d}", "-ac", "2", "-b:a", "192k"]
    for path, seconds in ((short, 8), (piece, 120)):
        args = [a.format(d=seconds) for a in tone]
        subprocess.run([*FFMPEG, *args, str(path)], check=True)
    subprocess.run(
        [*FFMPEG, "-stream_loop", "9", "-i", str(piece), "-c", "copy", str(long)], check=True
    )
    return {"short": short, "long": long}


def ffprobe_duration(path: Path) -> float:
    """Decodes the whole file (not just the header) and returns its duration."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    subprocess.run([*FFMPEG, "-i", str(path), "-f", "null", "-"], check=True)
    return float(json.loads(out)["format"]["duration"])


def submit(stack: Stack, store: S3Store, episode: str, source: Path, formats: list[str]) -> Any:
    key = f"uploads/{uuid.uuid4().hex}/{source.name}"
    store.put_file(key, source)
    return create_task(
        stack,
        {"episodeId": episode, "audioKey": key, "encodingFormats": formats, "transcribe": False},
    )


def manifest(store: S3Store, episode: str, tmp_path: Path) -> dict[str, Any]:
    dest = tmp_path / f"manifest-{uuid.uuid4().hex}.json"
    store.get_file(f"episodes/{episode}/manifest.json", dest)
    loaded: dict[str, Any] = json.loads(dest.read_text())
    return loaded


def published(store: S3Store, task: dict[str, Any], tmp_path: Path) -> dict[str, bytes]:
    """Every output the task's result names: its bytes (each must decode, nonzero length)."""
    files = {}
    for name, out in task["result"]["outputs"].items():
        local = tmp_path / f"{uuid.uuid4().hex}-{name}"
        store.get_file(out["key"], local)
        assert ffprobe_duration(local) > 5, (name, out["key"])
        files[out["key"]] = local.read_bytes()
    return files


def test_cancelling_a_second_task_of_an_episode_keeps_the_first_published(
    stack: Stack, e2e_store: S3Store, sources: dict[str, Path], tmp_path: Path
) -> None:
    episode = "ep-shared"
    a = submit(stack, e2e_store, episode, sources["short"], ["mp3_64", "opus_64"])
    a_done = follow(stack, a["id"])[-1]
    assert a_done["status"] == "done", a_done
    a_files = published(e2e_store, a_done, tmp_path)
    assert manifest(e2e_store, episode, tmp_path)["taskId"] == a["id"]

    # B: same episode, same formats, cancelled while it encodes.
    b = submit(stack, e2e_store, episode, sources["long"], ["mp3_64", "opus_64"])

    def encoding() -> dict[str, Any] | None:
        row: dict[str, Any] = api_get(stack, f"/tasks/{b['id']}")
        assert row["status"] not in ("done", "failed", "cancelled"), f"ended too early: {row}"
        return row if (row["currentStep"] or "").startswith("encode:") else None

    wait_for("task B to be encoding", encoding, 180, poll_s=0.1)
    response = httpx.post(f"{stack.api_url}/tasks/{b['id']}/cancel", headers=HEADERS, timeout=60)
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    assert api_get(stack, f"/tasks/{a['id']}")["status"] == "done"
    assert published(e2e_store, a_done, tmp_path) == a_files  # there, decoding, unchanged
    current = manifest(e2e_store, episode, tmp_path)
    assert current["taskId"] == a["id"] and current["workflowId"] == a["workflowId"]
    assert {o["key"] for o in current["outputs"].values()} == set(a_files)
    assert e2e_store.list_keys(f"episodes/{episode}/tasks/{b['id']}/") == []

    # C: a later task of the episode completes and becomes current; A's files stay as they were.
    c = submit(stack, e2e_store, episode, sources["short"], ["mp3_64"])
    c_done = follow(stack, c["id"])[-1]
    assert c_done["status"] == "done", c_done
    c_files = published(e2e_store, c_done, tmp_path)
    current = manifest(e2e_store, episode, tmp_path)
    assert current["taskId"] == c["id"]
    assert {o["key"] for o in current["outputs"].values()} == set(c_files)
    assert set(c_files).isdisjoint(a_files)
    assert published(e2e_store, a_done, tmp_path) == a_files
    assert api_get(stack, f"/tasks/{a['id']}")["result"] == a_done["result"]
