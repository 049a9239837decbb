"""The `audioflow` console script against a running stack: the happy path and its errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from cli.stack import Stack
from tests.e2e.conftest import API_KEY, api_get

pytestmark = pytest.mark.slow
AUDIOFLOW = str(Path(sys.executable).parent / "audioflow")


def run_cli(
    stack: Stack, *args: str, api_key: str | None = API_KEY
) -> subprocess.CompletedProcess[str]:
    env = {
        k: v for k, v in os.environ.items() if k not in ("AUDIOFLOW_API_URL", "AUDIOFLOW_API_KEY")
    }
    env["AUDIOFLOW_API_URL"] = stack.api_url
    if api_key is not None:
        env["AUDIOFLOW_API_KEY"] = api_key
    return subprocess.run(
        [AUDIOFLOW, *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        stdin=subprocess.DEVNULL,
    )


def failed_task(stack: Stack, episode: str) -> str:
    """A task whose source does not exist: it ends failed (permanent)."""
    import httpx

    from tests.e2e.conftest import HEADERS, follow

    response = httpx.post(
        f"{stack.api_url}/tasks",
        json={
            "type": "audio_processing",
            "payload": {
                "episodeId": episode,
                "audioKey": "uploads/none.mp3",
                "encodingFormats": ["mp3_64"],
                "transcribe": False,
            },
        },
        headers=HEADERS,
        timeout=60,
    )
    task_id: str = response.json()["id"]
    assert follow(stack, task_id)[-1]["status"] == "failed"
    return task_id


def test_submit_wait_status_and_tasks(stack: Stack, speech_mp3: Path) -> None:
    done = run_cli(
        stack,
        "submit",
        str(speech_mp3),
        "--formats",
        "mp3_64,opus_64",
        "--wait",
        "--json",
        "--episode-id",
        "cli-episode",
    )
    assert done.returncode == 0, done.stderr
    task = json.loads(done.stdout)
    assert task["status"] == "done" and task["episodeId"] == "cli-episode"
    assert set(task["result"]["outputs"]) == {"mp3_64", "opus_64"}
    assert "100%" in done.stderr  # the progress bar went to stderr, the JSON to stdout

    status = run_cli(stack, "status", task["id"], "--json")
    assert status.returncode == 0
    assert json.loads(status.stdout) == api_get(stack, f"/tasks/{task['id']}")

    human = run_cli(stack, "status", task["id"])
    assert task["id"] in human.stdout and "opus_64" in human.stdout

    listed = run_cli(stack, "tasks", "--status", "done", "--json")
    assert task["id"] in [t["id"] for t in json.loads(listed.stdout)]
    table = run_cli(stack, "tasks")
    assert task["id"] in table.stdout and "cli-episode" in table.stdout


def test_submit_without_wait_returns_the_new_task(stack: Stack, speech_mp3: Path) -> None:
    created = run_cli(
        stack, "submit", str(speech_mp3), "--no-transcribe", "--formats", "mp3_64", "--json"
    )
    assert created.returncode == 0, created.stderr
    task = json.loads(created.stdout)
    assert task["status"] in ("pending", "processing")
    assert task["payload"]["transcribe"] is False


def test_cli_errors_are_clear(stack: Stack, speech_mp3: Path, tmp_path: Path) -> None:
    unreachable = run_cli(stack, "--api-url", "http://127.0.0.1:9", "tasks")
    assert unreachable.returncode == 2 and "cannot reach the audioflow API" in unreachable.stderr

    wrong_key = run_cli(stack, "tasks", api_key="not-the-key")
    assert wrong_key.returncode == 2 and "API key" in wrong_key.stderr
    assert API_KEY not in wrong_key.stderr

    missing = run_cli(stack, "status", "00000000-0000-0000-0000-000000000000")
    assert missing.returncode == 2 and "404" in missing.stderr

    no_file = run_cli(stack, "submit", str(tmp_path / "nope.mp3"))
    assert no_file.returncode == 2 and "no such file" in no_file.stderr

    bad_format = run_cli(stack, "submit", str(speech_mp3), "--formats", "mp3_999")
    assert bad_format.returncode == 2 and "mp3_999" in bad_format.stderr

    text = tmp_path / "notes.mp3"
    text.write_text("not audio at all\n" * 50)
    not_audio = run_cli(stack, "submit", str(text))
    assert not_audio.returncode == 2 and "415" in not_audio.stderr


def test_failed_task_exit_code(stack: Stack) -> None:
    """`status` of a failed task exits 1 and shows the reason."""
    task_id = failed_task(stack, "cli-missing")
    status = run_cli(stack, "status", task_id)
    assert status.returncode == 1
    assert "not found" in status.stdout


def test_cancel_retry_and_reprocess_commands(stack: Stack) -> None:
    task_id = failed_task(stack, "cli-retry")

    cancel_failed = run_cli(stack, "cancel", task_id)
    assert cancel_failed.returncode == 2 and "409" in cancel_failed.stderr

    retried = run_cli(stack, "retry", task_id, "--wait", "--json")
    assert retried.returncode == 1, retried.stderr  # the source is still missing: fails again
    task = json.loads(retried.stdout)
    assert task["attempts"] == 2 and task["status"] == "failed"

    dry = run_cli(
        stack, "reprocess", "--dry-run", "--status", "done", "--add-formats", "opus_64", "--json"
    )
    assert dry.returncode == 0, dry.stderr
    run = json.loads(dry.stdout)
    assert run["flowRunId"] and run["parameters"]["dry_run"] is True
    assert run["parameters"]["add_formats"] == ["opus_64"]

    bad = run_cli(stack, "reprocess", "--add-formats", "mp3_999")
    assert bad.returncode == 2 and "mp3_999" in bad.stderr
