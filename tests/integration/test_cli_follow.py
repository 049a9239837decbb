"""`audioflow submit --wait` and `audioflow status --follow` on a task's event stream, and
their fall-back to polling when the stream cannot be had.

The CLI runs as a real process (`python -m cli.main`) against real API processes; the
test plays the flow's part, reporting to the other API process, and moves on only when the
CLI has printed what the last report caused. The fall-back cases drive the CLI's client
in a thread against a real server: an events path the server does not have (404), one
that answers JSON instead of an event stream, and a connection reset mid-stream.
"""

from __future__ import annotations

import queue
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import IO, Any

import httpx
import pytest
from litestar.testing import TestClient

from cli import client as cli_client
from cli.client import ApiClient
from cli.stack import PROJECT_DIR
from tests.integration.conftest import AUTH, PROGRESS, STREAM_API_KEY, create_task
from tests.support.api_processes import ApiProcess
from tests.support.audio_files import tone_wav_bytes
from tests.support.tcp_proxy import tcp_proxy
from tests.support.waiting import wait_for

TIMEOUT_S = 20.0


def report(api: ApiProcess, task: dict[str, Any], **fields: Any) -> None:
    body = {"taskId": task["id"], "workflowId": task["workflowId"], **fields}
    response = httpx.post(f"{api.url}{PROGRESS}", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text


class Cli:
    """`audioflow ...` as a child process; its output lines arrive in queues."""

    def __init__(self, api: ApiProcess, *args: str) -> None:
        command = [sys.executable, "-m", "cli.main", "--api-url", api.url]
        self.process = subprocess.Popen(
            [*command, "--api-key", STREAM_API_KEY, *args],
            cwd=PROJECT_DIR,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.stdout: queue.Queue[str | None] = queue.Queue()
        self.stderr: list[str] = []
        assert self.process.stdout is not None and self.process.stderr is not None
        threading.Thread(target=self._pump, args=(self.process.stdout,), daemon=True).start()
        threading.Thread(target=self._drain, args=(self.process.stderr,), daemon=True).start()

    def _pump(self, stream: IO[str]) -> None:
        for line in stream:
            self.stdout.put(line.rstrip("\n"))
        self.stdout.put(None)

    def _drain(self, stream: IO[str]) -> None:
        self.stderr.extend(stream)

    def line(self) -> str:
        try:
            line = self.stdout.get(timeout=TIMEOUT_S)
        except queue.Empty:
            raise AssertionError(f"the CLI printed nothing for {TIMEOUT_S:.0f} s") from None
        assert line is not None, f"the CLI exited early: {''.join(self.stderr)}"
        return line

    def finish(self) -> tuple[int, list[str]]:
        code = self.process.wait(TIMEOUT_S)
        rest = []
        while (line := self.stdout.get(timeout=TIMEOUT_S)) is not None:
            rest.append(line)
        return code, rest

    def kill(self) -> None:
        if self.process.poll() is None:
            self.process.kill()
            self.process.wait(10)


@pytest.fixture
def task(client: TestClient) -> dict[str, Any]:
    return create_task(
        client,
        {"episodeId": "ep-follow", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_128"]},
    )


def test_status_follow_prints_each_change_and_exits_with_the_status(
    apis: list[ApiProcess], task: dict[str, Any]
) -> None:
    reporter, listener = apis
    cli = Cli(listener, "status", "--follow", task["id"])
    try:
        report(reporter, task, status="running", step="download")
        assert cli.line().endswith("processing download")
        report(reporter, task, progress=40, step="encode:mp3_128")
        assert " 40%  processing encode:mp3_128" in cli.line()
        report(reporter, task, status="completed", progress=100)
        assert "100%  done" in cli.line()
        code, rest = cli.finish()
    finally:
        cli.kill()
    assert code == 0, cli.stderr
    assert any(line.startswith(f"task      {task['id']}  (done, 100%") for line in rest), rest
    assert not any("polling" in line for line in cli.stderr), cli.stderr


def test_submit_wait_follows_the_new_task_and_a_failure_exits_1(
    apis: list[ApiProcess], tmp_path: Path
) -> None:
    reporter, listener = apis
    episode = tmp_path / "follow-me.wav"
    episode.write_bytes(tone_wav_bytes(1.0))
    cli = Cli(listener, "submit", str(episode), "--formats", "mp3_64", "--no-transcribe", "--wait")
    try:

        def created() -> dict[str, Any] | None:
            page = httpx.get(
                f"{listener.url}/tasks",
                params={"episodeId": "follow-me"},
                headers={"X-API-Key": STREAM_API_KEY},
                timeout=10,
            ).json()
            items = page["items"]
            return items[0] if items and items[0]["workflowInstanceId"] else None

        task = wait_for("the submitted task's flow run", created, TIMEOUT_S)
        report(reporter, task, status="running", step="download")
        assert cli.line().endswith("processing download")
        report(reporter, task, status="failed", error="unreadable", errorKind="permanent")
        assert "failed" in cli.line()
        code, rest = cli.finish()
    finally:
        cli.kill()
    assert code == 1, cli.stderr
    assert any("error     unreadable [permanent]" in line for line in rest), rest


# --- falling back to polling ---------------------------------------------------------------


class Follower:
    """`ApiClient.follow` in a thread: what it reports, warns and returns."""

    def __init__(self, url: str, task_id: str) -> None:
        self.changes: queue.Queue[dict[str, Any]] = queue.Queue()
        self.warnings: list[str] = []
        self.result: queue.Queue[dict[str, Any] | BaseException] = queue.Queue()
        api = ApiClient(url, STREAM_API_KEY)

        def run() -> None:
            try:
                self.result.put(api.follow(task_id, self.changes.put, warn=self.warnings.append))
            except BaseException as exc:
                self.result.put(exc)

        threading.Thread(target=run, daemon=True).start()

    def change(self) -> dict[str, Any]:
        try:
            return self.changes.get(timeout=TIMEOUT_S)
        except queue.Empty:
            raise AssertionError("no change reported") from None

    def final(self) -> dict[str, Any]:
        result = self.result.get(timeout=TIMEOUT_S)
        if isinstance(result, BaseException):
            raise result
        return result


@pytest.fixture
def events_path(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    def use(path: str) -> None:
        monkeypatch.setattr(cli_client, "EVENTS_PATH", path)

    yield use


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("/tasks/{task_id}/no-such-stream", "answered 404"),  # an API without the endpoint
        ("/tasks/{task_id}", "not an event stream"),  # a 200 in JSON (a proxy's page, say)
    ],
)
def test_follow_polls_when_the_stream_is_not_there(
    apis: list[ApiProcess], task: dict[str, Any], events_path: Any, path: str, reason: str
) -> None:
    reporter, listener = apis
    events_path(path)
    follower = Follower(listener.url, task["id"])
    assert follower.change()["status"] == "pending"  # polling's first look
    assert len(follower.warnings) == 1 and reason in follower.warnings[0], follower.warnings
    assert "polling" in follower.warnings[0]
    report(reporter, task, status="running")
    report(reporter, task, status="completed", progress=100)
    assert follower.final()["status"] == "done"


def test_follow_polls_when_the_connection_drops(
    apis: list[ApiProcess], task: dict[str, Any]
) -> None:
    reporter, listener = apis
    with tcp_proxy(listener.url) as proxy:
        follower = Follower(proxy.url, task["id"])
        report(reporter, task, status="running", step="download")
        assert follower.change()["status"] == "processing"  # on the stream
        assert not follower.warnings
        proxy.drop_open()  # a reset: the stream is gone, new connections still work
        wait_for("the fall-back warning", lambda: follower.warnings, TIMEOUT_S)
        assert "connection lost" in follower.warnings[0], follower.warnings
        report(reporter, task, status="completed", progress=100)
        assert follower.final()["status"] == "done"


def test_follow_goes_past_an_earlier_attempts_end(
    apis: list[ApiProcess], task: dict[str, Any], client: TestClient
) -> None:
    """A retried task's stream replays the first attempt's `task.failed`: following it
    waits for the attempt that is running, and returns that one's end."""
    reporter, listener = apis
    report(reporter, task, status="failed", error="unreadable", errorKind="permanent")
    retried = client.post(f"/tasks/{task['id']}/retry")
    assert retried.status_code < 300, retried.text

    def second_attempt() -> dict[str, Any] | None:
        now: dict[str, Any] = client.get(f"/tasks/{task['id']}").json()
        moved = now["workflowId"] != task["workflowId"] and now["workflowInstanceId"]
        return now if moved else None

    second = wait_for("the retry's flow run", second_attempt, TIMEOUT_S)
    follower = Follower(listener.url, task["id"])
    report(reporter, second, status="running", step="download")
    report(reporter, second, status="completed", progress=100)
    final = follower.final()
    assert (final["status"], final["attempts"]) == ("done", 2), final
    assert not follower.warnings, follower.warnings
