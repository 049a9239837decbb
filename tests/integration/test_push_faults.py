"""Push delivery under real faults: real API processes (uvicorn) on the run's PostgreSQL
database, killed, signalled, or cut off from their notifications.

* A process killed with SIGKILL while a webhook is on the wire and others wait: the next
  process sends every event, the one in flight again with the same `webhook-id`.
* The event hub's LISTEN connection terminated by the server, with a change committed
  while it cannot reconnect: the open stream still gets every event.
* SIGTERM with streams open: they end and the process exits (uvicorn would otherwise wait
  for them forever: it has no graceful-shutdown timeout unless given one).

Each process uses only this test's database connection settings; nothing here restarts or
stops the PostgreSQL server (others share it): the faults are one backend terminated and,
for a moment, new connections to this run's own database refused.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import signal
import subprocess
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import asyncpg
import httpx
import pytest
from sqlalchemy import Engine, create_engine, select, text
from sqlalchemy.orm import Session, sessionmaker
from sqlalchemy.pool import NullPool

from core.settings import Settings
from db.models import DeliveryStatus, TaskEvent, WebhookDelivery, WorkflowStatus
from domain.event_stream import EventHub, EventReader
from domain.events import NOTIFY_CHANNEL, EventLog
from domain.workflows import ProgressUpdate, WorkflowService
from tests.integration.conftest import AUTH, PROGRESS, STREAM_API_KEY
from tests.support.api_processes import ApiProcess, api_processes
from tests.support.postgres import ADMIN_URL
from tests.support.sse import Subscriber
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import SECRET, Receiver

KEY = {"X-API-Key": STREAM_API_KEY}
PAYLOAD = {"episodeId": "ep-faults", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_64"]}
#: Only a notification (or the hub's re-read after reconnecting) wakes a stream: the
#: streams' periodic re-read of the log is 300 s away, far past every wait here.
QUIET = {"AUDIOFLOW_SSE_KEEPALIVE_S": "300"}
#: The one statement that finds the hub's LISTEN connection on this run's database.
LISTENERS = (
    "SELECT pid FROM pg_stat_activity WHERE query ILIKE 'LISTEN%' AND datname = current_database()"
)


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def create_tasks(api: ApiProcess, count: int = 1) -> list[dict[str, Any]]:
    """POST /tasks to the process `count` times; the tasks once its dispatcher has made
    their flow runs."""
    ids = []
    for _ in range(count):
        created = httpx.post(
            f"{api.url}/tasks",
            json={"type": "audio_processing", "payload": PAYLOAD},
            headers=KEY,
            timeout=10,
        )
        assert created.status_code == 201, created.text
        ids.append(created.json()["id"])

    def dispatched() -> list[dict[str, Any]] | None:
        tasks = [
            httpx.get(f"{api.url}/tasks/{task_id}", headers=KEY, timeout=10).json()
            for task_id in ids
        ]
        return tasks if all(task["workflowInstanceId"] for task in tasks) else None

    found: list[dict[str, Any]] = wait_for("the tasks' flow runs", dispatched, 30)
    return found


def report(api: ApiProcess, task: dict[str, Any], **fields: Any) -> None:
    """A progress report to the process's internal endpoint, as a flow sends it."""
    body = {"taskId": task["id"], "workflowId": task["workflowId"], **fields}
    response = httpx.post(f"{api.url}{PROGRESS}", json=body, headers=AUTH, timeout=10)
    assert response.status_code == 200, response.text


def report_here(
    session_factory: sessionmaker[Session], task: dict[str, Any], **fields: Any
) -> None:
    """The same report applied by this process's own services (no API process involved)."""
    WorkflowService(session_factory).apply_progress(
        ProgressUpdate(uuid.UUID(task["id"]), uuid.UUID(task["workflowId"]), **fields)
    )


def subscribe(api: ApiProcess, path: str, **headers: str) -> Subscriber:
    return Subscriber(f"{api.url}{path}", headers={**KEY, **headers}).start()


def exited(api: ApiProcess, timeout_s: float) -> int:
    """The process's exit code; fails with its log if it is still running after `timeout_s`."""
    try:
        return api.process.popen.wait(timeout_s)
    except subprocess.TimeoutExpired:
        raise AssertionError(
            f"the API process still runs {timeout_s:.0f} s later; log:\n{api.process.log_tail()}"
        ) from None


# --- webhooks: a process killed mid-delivery ---------------------------------------------------


def test_webhooks_pending_when_an_api_process_is_killed_are_all_delivered_after_restart(
    stream_settings: Settings,
    session_factory: sessionmaker[Session],
    receiver: Receiver,
    tmp_path: Path,
) -> None:
    """One delivery thread; the receiver holds the first request it gets unanswered and
    kills the sending process (SIGKILL) as it arrives, so the attempt never ends and the
    other changes stay events nobody has sent. Two more changes while no process runs; a new
    process on the same database sends all six, the one that was in flight once its lease
    has run out, under the same webhook-id. The changes are written by this test's own
    services (a flow would report them through any API process), so none depends on the
    process that is killed."""
    hooks = {
        "AUDIOFLOW_WEBHOOK_SECRET": SECRET,
        "AUDIOFLOW_WEBHOOK_URLS": receiver.url,
        "AUDIOFLOW_WEBHOOK_ALLOW_PRIVATE": "true",
        "AUDIOFLOW_WEBHOOK_RETRY_SCHEDULE_S": "0.2,0.5,1,2",
        "AUDIOFLOW_WEBHOOK_TIMEOUT_S": "1",
        "AUDIOFLOW_WEBHOOK_LEASE_S": "6",
        "AUDIOFLOW_WEBHOOK_THREADS": "1",
    }
    with api_processes(stream_settings, tmp_path / "killed", extra_env=hooks) as (doomed,):
        tasks = create_tasks(doomed, 3)  # no webhook: pending is not sent
        receiver.hold = 1
        receiver.on_hold = lambda: doomed.process.signal_group(signal.SIGKILL)
        report_here(session_factory, tasks[0], status=WorkflowStatus.RUNNING)
        report_here(session_factory, tasks[1], status=WorkflowStatus.RUNNING)
        report_here(session_factory, tasks[2], status=WorkflowStatus.RUNNING)
        report_here(session_factory, tasks[0], status=WorkflowStatus.COMPLETED, progress=100)
        assert exited(doomed, 30) == -signal.SIGKILL  # killed by the receiver
    ((in_flight, held_body),) = receiver.arrived
    assert receiver.received == []  # nothing was answered: nothing counts as delivered

    with session_factory() as session:
        rows = session.scalars(select(WebhookDelivery)).all()
        assert [
            (r.webhook_id, r.status, r.attempts) for r in rows if r.webhook_id == in_flight
        ] == [
            (in_flight, DeliveryStatus.PENDING, 0)  # claimed, its attempt never recorded
        ]
        assert all(r.status is DeliveryStatus.PENDING for r in rows)
        flagged = session.scalars(select(TaskEvent.id).where(TaskEvent.fanout_pending)).all()
    assert len(rows) + len(flagged) == 4  # every change so far, sent or not, is kept

    # While no API process runs: two more changes.
    report_here(session_factory, tasks[1], status=WorkflowStatus.COMPLETED, progress=100)
    report_here(session_factory, tasks[2], status=WorkflowStatus.CANCELLED)

    def all_delivered() -> list[WebhookDelivery] | None:
        with session_factory() as session:
            found = session.scalars(select(WebhookDelivery)).all()
            left = session.scalar(select(TaskEvent.id).where(TaskEvent.fanout_pending).limit(1))
        done = len(found) == 6 and left is None
        return (
            list(found)
            if done and all(r.status is DeliveryStatus.DELIVERED for r in found)
            else None
        )

    with api_processes(stream_settings, tmp_path / "restarted", extra_env=hooks):
        try:
            rows = wait_for("six delivered webhooks", all_delivered, 60)
        except AssertionError as exc:
            with session_factory() as session:
                state = [
                    (r.event_type, r.status, r.attempt_log)
                    for r in session.scalars(select(WebhookDelivery))
                ]
            raise AssertionError(f"{exc}: {state}") from None

    assert receiver.rejected == []  # every request carried a valid signature
    answered = [webhook_id for webhook_id, _ in receiver.received]
    assert sorted(answered) == sorted(r.webhook_id for r in rows)  # each answered once
    arrivals = Counter(webhook_id for webhook_id, _ in receiver.arrived)
    assert arrivals[in_flight] == 2  # held by the receiver, then again from the new process
    assert all(count == 1 for webhook_id, count in arrivals.items() if webhook_id != in_flight)
    resent = next(payload for webhook_id, payload in receiver.received if webhook_id == in_flight)
    assert resent == held_body  # the same message
    by_task = {(payload["data"]["id"], payload["type"]) for _, payload in receiver.received}
    assert by_task == {
        (tasks[0]["id"], "task.processing"),
        (tasks[0]["id"], "task.done"),
        (tasks[1]["id"], "task.processing"),
        (tasks[1]["id"], "task.done"),
        (tasks[2]["id"], "task.processing"),
        (tasks[2]["id"], "task.cancelled"),
    }
    (held_row,) = [r for r in rows if r.webhook_id == in_flight]
    assert held_row.attempts == 1  # the killed process's attempt left no trace but its lease


# --- event streams: the hub's LISTEN connection dropped ----------------------------------------


def listeners(engine: Engine) -> list[int]:
    with engine.connect() as conn:
        return [int(pid) for pid in conn.execute(text(LISTENERS)).scalars()]


@contextlib.contextmanager
def refused_connections(database: str | None) -> Iterator[None]:
    """New connections to this run's database refused meanwhile (open ones go on), from
    the server's maintenance database: a database cannot refuse its own sessions."""
    admin = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT", poolclass=NullPool)
    try:
        with admin.connect() as conn:
            conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS false'))
        try:
            yield
        finally:
            with admin.connect() as conn:
                conn.execute(text(f'ALTER DATABASE "{database}" ALLOW_CONNECTIONS true'))
    finally:
        admin.dispose()


def refused_in(api: ApiProcess) -> bool:
    """The process's hub tried to LISTEN again and was refused (its log says so)."""
    return "event hub: cannot LISTEN" in api.process.log_path.read_text(errors="replace")


def only_one(pids: list[int]) -> list[int] | None:
    return pids if len(pids) == 1 else None


def test_a_stream_gets_every_event_when_the_listen_connection_is_dropped(
    stream_settings: Settings,
    session_factory: sessionmaker[Session],
    engine: Engine,
    tmp_path: Path,
) -> None:
    """The server terminates the hub's LISTEN backend while new connections to the
    database are refused, so a change committed then notifies nobody: the stream gets it
    when the hub is back (it re-reads the log on reconnecting), and what follows, notified
    on the new connection."""
    database = engine.url.database
    with api_processes(stream_settings, tmp_path, extra_env=QUIET) as (api,):
        (task,) = create_tasks(api)
        since = str(EventLog(session_factory).last_id())
        everything = subscribe(api, "/events", **{"Last-Event-ID": since})
        own = subscribe(api, f"/tasks/{task['id']}/events")
        try:
            report(api, task, status="running")
            assert everything.next().event == own.next().event == "task.processing"
            report_here(session_factory, task, progress=10, step="download")  # warms the pools
            assert everything.next().data["progress"] == own.next().data["progress"] == 10
            (listener,) = wait_for("one LISTEN backend", lambda: only_one(listeners(engine)), 30)

            with refused_connections(database):
                with engine.connect() as conn:
                    terminated = conn.execute(
                        text(f"SELECT pg_terminate_backend(pid) FROM ({LISTENERS}) AS l")
                    )
                    assert terminated.scalars().all() == [True]  # the hub's, and only it
                wait_for("the LISTEN backend gone", lambda: not listeners(engine), 30)
                wait_for("the hub refused a new connection", lambda: refused_in(api), 30)
                # Nobody listens and nobody can: this change's NOTIFY reaches no one.
                report_here(session_factory, task, progress=40, step="encode:mp3_64")

            missed = own.next(30)
            assert (missed.event, missed.data["progress"]) == ("task.progress", 40)
            assert everything.next(30).data["progress"] == 40
            (again,) = wait_for(
                "the hub's new LISTEN backend", lambda: only_one(listeners(engine)), 30
            )
            assert again != listener

            report(api, task, progress=70, step="upload")  # notified on the new connection
            assert everything.next().data["progress"] == own.next().data["progress"] == 70
            report(api, task, status="completed", progress=100, result={"outputs": {}})
            assert everything.next().event == own.next().event == "task.done"
            assert own.ended()
        finally:
            everything.close()
            own.close()
    assert "the LISTEN connection dropped" in api.process.log_path.read_text(errors="replace")


def test_the_hub_listens_again_when_a_new_connection_dies_before_its_listen(
    base_settings: Settings,
    session_factory: sessionmaker[Session],
    engine: Engine,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """The hub's first connection is terminated by the server between `connect` and
    `LISTEN` (a restart or failover at that moment): asyncpg then raises `InterfaceError`
    ("connection is closed"), which once ended the hub's runner for good. It must back off
    and listen on a new connection, and notifications must reach it (they wake the webhook
    deliverer and make the hub poll the log for its streams)."""
    real_connect = asyncpg.connect
    killed: list[int] = []

    async def connect_then_lose(*args: Any, **kwargs: Any) -> Any:
        conn = await real_connect(*args, **kwargs)
        if not killed:
            killed.append(conn.get_server_pid())
            with engine.connect() as admin:
                admin.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": killed[0]})
            for _ in range(200):  # bounded: until asyncpg has seen the connection go
                if conn.is_closed():
                    break
                await asyncio.sleep(0.05)
            assert conn.is_closed()
        return conn

    monkeypatch.setattr(asyncpg, "connect", connect_then_lose)
    notified: list[str] = []
    hub = EventHub(
        base_settings.database.url, EventReader(session_factory), on_event=notified.append
    )
    task_id = uuid.uuid4()

    async def run() -> list[int]:
        await hub.start()  # waits (bounded) for the hub to listen
        try:
            assert hub.listening.is_set(), "the hub stopped trying after the lost connection"
            hub.subscribe(task_id)
            payload = json.dumps({"id": 7, "taskId": str(task_id), "type": "task.done"})
            with engine.connect() as conn:
                conn.execute(
                    text("SELECT pg_notify(:channel, :payload)"),
                    {"channel": NOTIFY_CHANNEL, "payload": payload},
                )
                conn.commit()
            for _ in range(600):  # bounded: until the notification came
                if notified:
                    break
                await asyncio.sleep(0.05)
            assert notified == ["task.done"]
            return listeners(engine)
        finally:
            await hub.stop()

    (listening,) = asyncio.run(run())
    assert len(killed) == 1 and listening != killed[0]


# --- SIGTERM with streams open ----------------------------------------------------------------


def test_sigterm_ends_open_streams_and_the_process_exits(
    stream_settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    with api_processes(stream_settings, tmp_path, extra_env=QUIET) as (api,):
        (task,) = create_tasks(api)
        since = str(EventLog(session_factory).last_id())
        own = subscribe(api, f"/tasks/{task['id']}/events")
        everything = subscribe(api, "/events", **{"Last-Event-ID": since})
        try:
            report(api, task, status="running")
            assert own.next().event == everything.next().event == "task.processing"
            api.process.popen.send_signal(signal.SIGTERM)
            assert own.ended(30) and everything.ended(30)  # ended by the server, cleanly
            # uvicorn shuts down, then raises the signal it caught again (the exit says so).
            assert exited(api, 30) in (0, -signal.SIGTERM)
        finally:
            own.close()
            everything.close()
    assert "Traceback" not in api.process.log_path.read_text(errors="replace")
