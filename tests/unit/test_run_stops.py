"""A run whose workflow the API reports terminal stops: ffmpeg is killed, nothing is uploaded.

The refusal comes through the real `HttpSender` from a 409 shaped like the API's (its
`extra.status` names the terminal status); encoding runs real ffmpeg on lavfi audio and
uploads go to a real local store.
"""

from __future__ import annotations

import subprocess
from pathlib import Path
from typing import Any

import httpx
import pytest

from core.storage.local import LocalStore
from flows.errors import WorkflowEndedError, classify
from flows.progress import HttpSender, ProgressPlan, WorkflowProgressReporter
from flows.steps import upload as upload_step
from flows.steps.encoding import encode_format
from flows.steps.upload import PlannedUpload, upload_outputs
from media.probe import probe


def _sender(status: int, body: dict[str, Any], seen: list[httpx.Request]) -> HttpSender:
    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(status, json=body)

    sender = HttpSender("http://api", "tok", attempts=1)
    sender._client = httpx.Client(transport=httpx.MockTransport(handler))
    return sender


def _terminal(status: str = "cancelled") -> dict[str, Any]:
    return {
        "status_code": 409,
        "detail": f"workflow w is already {status}; a terminal status is final",
        "extra": {"status": status},
    }


def _reporter(sender: HttpSender, formats: list[str]) -> WorkflowProgressReporter:
    plan = ProgressPlan.for_run(formats, transcribe=False)
    return WorkflowProgressReporter("t", "w", plan, sender, min_interval_s=0)


def test_a_terminal_refusal_stops_the_steps_but_not_the_hooks() -> None:
    seen: list[httpx.Request] = []
    reporter = _reporter(_sender(409, _terminal("crashed"), seen), ["mp3_64"])
    with pytest.raises(WorkflowEndedError, match="already crashed"):
        reporter.update("download", 0.5)
    with pytest.raises(WorkflowEndedError):
        reporter.update("download", 0.9)  # no second request needed to know
    assert len(seen) == 1
    assert reporter.report(status="failed") is False  # hooks only learn it was not delivered
    assert classify(WorkflowEndedError("x")) == "permanent"  # no step retries it


def test_other_refusals_and_outages_do_not_stop_the_run() -> None:
    seen: list[httpx.Request] = []
    other = {"status_code": 409, "detail": "workflow w does not belong to task t"}
    reporter = _reporter(_sender(409, other, seen), ["mp3_64"])
    reporter.update("download", 0.5)
    reporter.checkpoint("upload")

    def down(_: dict[str, Any]) -> None:
        raise ConnectionError("API down")

    plan = ProgressPlan.for_run(["mp3_64"], transcribe=False)
    WorkflowProgressReporter("t", "w", plan, down, min_interval_s=0).checkpoint("upload")


@pytest.fixture
def long_wav(tmp_path: Path) -> Path:
    """Ten minutes of tone: seconds of ffmpeg work, so the stop lands mid-encode."""
    path = tmp_path / "long.wav"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i",
         "sine=frequency=440:duration=600", "-ac", "2", "-ar", "44100", str(path)],
        check=True,
        timeout=120,
    )
    return path


def test_an_encode_stops_when_the_workflow_ended(long_wav: Path, tmp_path: Path) -> None:
    seen: list[httpx.Request] = []
    sender = _sender(200, {}, seen)
    reporter = _reporter(sender, ["mp3_64"])
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        seen.append(request)
        calls += 1
        # The first report (0 %) passes; the workflow is cancelled before the next one.
        return httpx.Response(200, json={}) if calls == 1 else httpx.Response(409, json=_terminal())

    sender._client = httpx.Client(transport=httpx.MockTransport(handler))
    workdir = tmp_path / "work"
    workdir.mkdir()
    with pytest.raises(WorkflowEndedError):
        encode_format.fn(long_wav, probe(long_wav), "mp3_64", workdir, reporter)
    # ffmpeg was stopped mid-way: no output and no temporary file are left behind, and the
    # last report was still mid-encode.
    assert list(workdir.iterdir()) == []
    last = seen[-1].read().decode()
    assert '"step":"encode:mp3_64"' in last.replace(" ", "")
    assert calls == 2


def test_nothing_is_uploaded_once_the_workflow_ended(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store = LocalStore(tmp_path / "store")
    monkeypatch.setattr(upload_step, "get_store", lambda: store)
    files = []
    for name in ("a", "b", "c"):
        path = tmp_path / f"{name}.bin"
        path.write_bytes(b"x" * 1000)
        files.append(PlannedUpload(f"episodes/ep/audio/{name}.bin", path, "audio/mpeg"))
    calls = 0

    def handler(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        # The first object's check passes; the workflow is cancelled while it uploads.
        return httpx.Response(200, json={}) if calls == 1 else httpx.Response(409, json=_terminal())

    sender = HttpSender("http://api", "tok", attempts=1)
    sender._client = httpx.Client(transport=httpx.MockTransport(handler))
    reporter = _reporter(sender, [])
    with pytest.raises(WorkflowEndedError):
        upload_outputs.fn(files, reporter)
    assert store.exists("episodes/ep/audio/a.bin")
    assert not store.exists("episodes/ep/audio/b.bin")
    assert not store.exists("episodes/ep/audio/c.bin")
