"""Server-Sent Events (`GET /tasks/{id}/events`, `GET /events`) from real API processes.

Two uvicorn processes on the run's PostgreSQL database: progress is reported to one and
the subscriber listens on the other, so every live event crossed processes through
PostgreSQL's LISTEN/NOTIFY. Their keep-alive interval is long (the streams' fallback
re-read of the log happens only then), so an event that arrives within the tests' bound
was pushed, not found by a periodic look. Each step waits for the event it caused before
the next report: progress is kept as the latest value per task, so a subscriber is
promised the latest progress, not every intermediate one.
"""

from __future__ import annotations

import uuid
from dataclasses import replace
from pathlib import Path
from typing import Any

import httpx
import pytest
from alembic import command
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from domain.events import EventLog
from tests.db_fixtures import alembic_config
from tests.integration.conftest import AUTH, PROGRESS, STREAM_API_KEY, create_task
from tests.support.api_processes import ApiProcess, api_processes
from tests.support.sse import Subscriber
from tests.support.waiting import wait_for

KEY = {"X-API-Key": STREAM_API_KEY}


@pytest.fixture
def task(client: TestClient, session_factory: sessionmaker[Session]) -> dict[str, Any]:
    """A pending task with its flow run created (Prefect's; no worker runs it)."""
    return create_task(
        client,
        {"episodeId": "ep-sse", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_128"]},
    )


def report(api: ApiProcess, task: dict[str, Any], **fields: Any) -> None:
    """A progress report to `api`, as a flow sends it."""
    body = {"taskId": task["id"], "workflowId": task["workflowId"], **fields}
    response = httpx.post(f"{api.url}{PROGRESS}", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text


def subscribe(api: ApiProcess, path: str, **headers: str) -> Subscriber:
    return Subscriber(f"{api.url}{path}", headers={**KEY, **headers}).start()


def test_progress_and_status_reach_a_subscriber_of_another_process_in_order(
    apis: list[ApiProcess], task: dict[str, Any]
) -> None:
    reporter, listener = apis
    stream = subscribe(listener, f"/tasks/{task['id']}/events")
    try:
        report(reporter, task, status="running", step="download")
        first = stream.next()
        assert (first.event, first.data["status"]) == ("task.processing", "processing")
        assert first.id == str(first.data["eventId"])
        assert first.data["taskId"] == task["id"] and first.data["type"] == "task.processing"
        assert first.data["task"]["id"] == task["id"]  # the task as GET /tasks/{id} shows it

        seen = [first]
        for progress, step in ((10, "encode:mp3_128"), (55, "transcribe"), (90, "upload")):
            report(reporter, task, progress=progress, step=step)
            event = stream.next()  # pushed: the listener's keep-alive is 300 s away
            assert event.event == "task.progress"
            assert (event.data["progress"], event.data["currentStep"]) == (progress, step)
            assert event.data["status"] == "processing" and event.data["taskId"] == task["id"]
            seen.append(event)

        report(reporter, task, status="completed", progress=100, result={"outputs": {}})
        done = stream.next()
        assert (done.event, done.data["status"], done.data["progress"]) == (
            "task.done",
            "done",
            100,
        )
        seen.append(done)
        assert stream.ended(), "the stream goes on after the terminal event"
    finally:
        stream.close()
    ids = [int(e.id) for e in seen]
    assert ids == sorted(ids) and len(set(ids)) == len(ids)


def test_last_event_id_replays_from_the_log_and_an_ended_task_ends_the_stream(
    apis: list[ApiProcess], task: dict[str, Any]
) -> None:
    reporter, listener = apis
    report(reporter, task, status="running", step="download")
    report(reporter, task, progress=40, step="encode:mp3_128")
    report(reporter, task, status="failed", error="boom", errorKind="permanent")

    # No Last-Event-ID: everything so far, then the end (the task has ended).
    stream = subscribe(listener, f"/tasks/{task['id']}/events")
    try:
        history = [stream.next(), stream.next(), stream.next()]
        assert stream.ended()
    finally:
        stream.close()
    assert [(e.event, e.data["status"], e.data["progress"]) for e in history] == [
        ("task.processing", "processing", 0),
        ("task.progress", "processing", 40),
        ("task.failed", "failed", 40),
    ]
    assert history[2].data["task"]["error"] == "boom"

    # Resuming after the first event: the rest only.
    stream = subscribe(listener, f"/tasks/{task['id']}/events", **{"Last-Event-ID": history[0].id})
    try:
        assert [stream.next().id, stream.next().id] == [history[1].id, history[2].id]
        assert stream.ended()
    finally:
        stream.close()

    # Resuming after the last event of an ended task: its final state again, then the end.
    stream = subscribe(listener, f"/tasks/{task['id']}/events", **{"Last-Event-ID": history[2].id})
    try:
        again = stream.next()
        assert (again.id, again.event) == (history[2].id, "task.failed")
        assert stream.ended()
    finally:
        stream.close()


def test_a_stream_resumed_on_another_process_continues_live(
    apis: list[ApiProcess], task: dict[str, Any]
) -> None:
    reporter, listener = apis
    report(reporter, task, status="running")
    first = subscribe(reporter, f"/tasks/{task['id']}/events")
    try:
        processing = first.next()
    finally:
        first.close()
    report(reporter, task, progress=30, step="encode:mp3_128")  # while nobody listens
    resumed = subscribe(listener, f"/tasks/{task['id']}/events", **{"Last-Event-ID": processing.id})
    try:
        missed = resumed.next()
        assert (missed.event, missed.data["progress"]) == ("task.progress", 30)
        report(reporter, task, status="cancelled")
        assert resumed.next().event == "task.cancelled"
        assert resumed.ended()
    finally:
        resumed.close()


def test_all_tasks_stream_applies_the_list_filters(
    apis: list[ApiProcess], client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    reporter, listener = apis
    payload = {"audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_128"]}
    wanted = create_task(client, {**payload, "episodeId": "ep-wanted"})
    other = create_task(client, {**payload, "episodeId": "ep-other"})
    # Without Last-Event-ID an all-task stream starts from whenever it is connected, which
    # the test cannot see: resuming after the log's last id makes the start exact.
    since = {"Last-Event-ID": str(EventLog(session_factory).last_id())}
    by_episode = subscribe(listener, "/events?episodeId=ep-wanted", **since)
    only_done = subscribe(listener, "/events?status=done", **since)
    everything = subscribe(listener, "/events", **since)
    try:
        report(reporter, other, status="running")
        assert everything.next().data["taskId"] == other["id"]
        report(reporter, wanted, status="running")
        first = by_episode.next()
        assert (first.data["taskId"], first.event) == (wanted["id"], "task.processing")
        assert everything.next().data["taskId"] == wanted["id"]

        report(reporter, other, progress=20)
        report(reporter, wanted, progress=60)
        assert (by_episode.next().data["progress"]) == 60  # ep-other's report never came
        assert [everything.next().data["progress"], everything.next().data["progress"]] == [
            20,
            60,
        ]

        report(reporter, other, status="completed", progress=100)
        done = only_done.next()
        assert (done.data["taskId"], done.event) == (other["id"], "task.done")
        report(reporter, wanted, status="completed", progress=100)
        assert only_done.next().data["taskId"] == wanted["id"]
        assert by_episode.next().event == "task.done"
    finally:
        for stream in (by_episode, only_done, everything):
            stream.close()


def test_the_streams_need_the_key_and_a_known_task(
    apis: list[ApiProcess], task: dict[str, Any]
) -> None:
    api = apis[0]
    for path in (f"/tasks/{task['id']}/events", "/events"):
        assert httpx.get(f"{api.url}{path}", timeout=10).status_code == 401
        wrong = {"X-API-Key": "not-the-key"}
        assert httpx.get(f"{api.url}{path}", headers=wrong, timeout=10).status_code == 401
    unknown = httpx.get(f"{api.url}/tasks/{uuid.uuid4()}/events", headers=KEY, timeout=10)
    assert unknown.status_code == 404, unknown.text
    assert unknown.headers["content-type"].startswith("application/json")
    for bad in (b"abc", b"-1", b"1.5", b"0x10", str(2**63).encode(), "\u00e9".encode()):
        response = httpx.get(
            f"{api.url}/tasks/{task['id']}/events",
            headers=[(b"X-API-Key", STREAM_API_KEY.encode()), (b"Last-Event-ID", bad)],
            timeout=10,
        )
        assert response.status_code == 400, (bad, response.status_code)
    for query in ("status=bogus", "status=%00"):
        response = httpx.get(f"{api.url}/events?{query}", headers=KEY, timeout=10)
        assert response.status_code == 400, (query, response.status_code)


def test_keep_alive_comments_on_a_quiet_stream(
    stream_settings: Settings, tmp_path_factory: pytest.TempPathFactory, task: dict[str, Any]
) -> None:
    with (
        api_processes(
            stream_settings,
            tmp_path_factory.mktemp("sse-keepalive"),
            extra_env={"AUDIOFLOW_SSE_KEEPALIVE_S": "0.2"},
        ) as (api,),
        httpx.stream(
            "GET", f"{api.url}/tasks/{task['id']}/events", headers=KEY, timeout=10
        ) as response,
    ):
        assert response.status_code == 200
        assert response.headers["content-type"].startswith("text/event-stream")
        assert response.headers["cache-control"] == "no-cache"
        comments = 0
        for line in response.iter_lines():
            if line.startswith(":"):
                comments += 1
                if comments == 3:
                    break
            else:
                assert not line, f"a quiet pending task sent {line!r}"


def test_on_sqlite_one_process_streams_its_own_changes(
    stream_settings: Settings, tmp_path: Path
) -> None:
    """The embedded stack's database: no NOTIFY, the process finds new events by itself."""
    url = f"sqlite:///{tmp_path / 'audioflow.db'}"
    command.upgrade(alembic_config(url), "head")
    settings = replace(stream_settings, database=replace(stream_settings.database, url=url))
    with api_processes(settings, tmp_path / "logs") as (api,):
        created = httpx.post(
            f"{api.url}/tasks",
            json={
                "type": "audio_processing",
                "payload": {
                    "episodeId": "ep-sqlite",
                    "audioKey": "uploads/ep.mp3",
                    "encodingFormats": ["mp3_128"],
                },
            },
            headers=KEY,
            timeout=10,
        )
        assert created.status_code == 201, created.text

        def dispatched() -> dict[str, Any] | None:
            task: dict[str, Any] = httpx.get(
                f"{api.url}/tasks/{created.json()['id']}", headers=KEY, timeout=10
            ).json()
            return task if task["workflowInstanceId"] else None

        task = wait_for("the task's flow run", dispatched, 30)
        stream = subscribe(api, f"/tasks/{task['id']}/events")
        try:
            report(api, task, status="running")
            assert stream.next().event == "task.processing"
            report(api, task, progress=70, step="encode:mp3_128")
            assert stream.next().data["progress"] == 70
            report(api, task, status="completed", progress=100)
            assert stream.next().event == "task.done"
            assert stream.ended()
        finally:
            stream.close()
