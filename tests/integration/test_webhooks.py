"""Signed webhooks, end to end: real receivers on loopback that verify every request with
the Standard Webhooks library, the real database, the delivery threads of `domain.webhooks`.

The retry schedule is shortened (a setting) so that a receiver that is down, fails or
times out recovers within a test; nothing waits a fixed time: each test waits for what the
receiver or the rows show (`wait_for`).
"""

from __future__ import annotations

import asyncio
import json
import logging
import socket
import time
import uuid
from collections.abc import Iterator
from dataclasses import replace
from datetime import timedelta
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy import select, update
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.errors import InvalidInputError
from core.settings import Settings, WebhookSettings
from db.base import utcnow
from db.models import DeliveryStatus, Task, TaskEvent, WebhookDelivery, WorkflowStatus
from domain.composition import Services, build_services
from domain.views import task_view
from domain.webhooks import WebhookDeliverer
from domain.workflows import ProgressUpdate
from tests.db_fixtures import TEST_TOKEN
from tests.support.waiting import wait_for
from tests.support.webhook_receiver import SECRET, Receiver

PAYLOAD = {"episodeId": "ep-hooks", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_64"]}
AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    started = Receiver().start()
    yield started
    started.stop()


def hook_settings(base: Settings, **changes: Any) -> Settings:
    """Webhooks on, local receivers allowed, a schedule of seconds instead of hours."""
    webhooks = WebhookSettings(
        secret=SECRET,
        allow_private=True,
        retry_schedule_s=(0.2, 0.4, 0.8, 1.6),
        timeout_s=2.0,
        threads=2,
        poll_s=0.05,
        lease_s=30.0,
    )
    return replace(base, webhooks=replace(webhooks, **changes))


@pytest.fixture
def services(base_settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[Services]:
    """The services with webhooks on; the test starts the delivery threads it needs (the
    dispatcher's are never started: no flow runs here, the test reports as a flow would)."""
    built = build_services(hook_settings(base_settings), session_factory=session_factory)
    yield built
    built.webhook_deliverer.stop()


def new_task(services: Services, callback_url: str | None) -> Task:
    return services.tasks.create_task("audio_processing", PAYLOAD, callback_url=callback_url).task


def report(services: Services, task: Task, status: WorkflowStatus, **fields: Any) -> Task:
    assert task.workflow_id is not None
    _, updated = services.workflows.apply_progress(
        ProgressUpdate(task.id, task.workflow_id, status=status, **fields)
    )
    return updated


def deliveries(services: Services, task_id: uuid.UUID) -> list[WebhookDelivery]:
    return list(services.webhooks.list_for_task(task_id))


def settled(services: Services, task_id: uuid.UUID, count: int) -> list[WebhookDelivery]:
    """The task's deliveries once `count` exist and none is pending."""

    def check() -> list[WebhookDelivery] | None:
        rows = deliveries(services, task_id)
        done = len(rows) == count and all(r.status is not DeliveryStatus.PENDING for r in rows)
        return rows if done else None

    try:
        return wait_for(f"{count} settled deliveries", check, 30)
    except AssertionError as exc:
        rows = deliveries(services, task_id)
        raise AssertionError(f"{exc}: {[(r.status, r.attempt_log) for r in rows]}") from None


def test_a_task_life_arrives_signed_at_its_callback_and_the_configured_urls(
    base_settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    everything = Receiver().start()
    built = build_services(
        hook_settings(base_settings, urls=(everything.url,)), session_factory=session_factory
    )
    try:
        built.webhook_deliverer.start()
        task = new_task(built, receiver.url)
        assert task.callback_url == receiver.url
        running = report(built, task, WorkflowStatus.RUNNING)
        assert running.workflow_id is not None
        built.workflows.apply_progress(ProgressUpdate(task.id, running.workflow_id, progress=50))
        done = report(built, task, WorkflowStatus.COMPLETED, result={"outputs": {}})
        wait_for("two events at each receiver", lambda: len(everything.received) == 2, 30)
        wait_for("two events at the callback", lambda: len(receiver.received) == 2, 30)
        rows = settled(built, task.id, 4)
    finally:
        built.webhook_deliverer.stop()
        everything.stop()

    for got in (receiver, everything):
        assert got.rejected == []  # every signature verified with the secret
        assert got.types() == ["task.processing", "task.done"]  # no progress, no pending
        (_, processing), (_, finished) = got.received
        assert processing["data"]["status"] == "processing"
        assert finished["data"] == task_view(done)  # the task as GET /tasks/{id} shows it
        assert finished["data"]["callbackUrl"] == receiver.url
        assert set(finished) == {"type", "timestamp", "data"}
        assert finished["timestamp"].endswith("Z")
    # One webhook-id per delivery: the two URLs' copies differ, each row names its own.
    ids = {webhook_id for got in (receiver, everything) for webhook_id, _ in got.received}
    assert ids == {row.webhook_id for row in rows} and len(ids) == 4
    for row in rows:
        assert row.status is DeliveryStatus.DELIVERED and row.attempts == 1
        (attempt,) = row.attempt_log
        assert attempt["statusCode"] == 200 and attempt["error"] is None
        assert attempt["response"] == "ok"


def test_a_receiver_that_is_down_fails_and_times_out_still_gets_the_event(
    base_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Down (connection refused), then a 503, then slower than the timeout: the fourth
    attempt, still within the first three seconds of the schedule, is answered."""
    built = build_services(
        hook_settings(base_settings, timeout_s=0.5), session_factory=session_factory
    )
    late = Receiver(free_port())
    try:
        built.webhook_deliverer.start()
        task = new_task(built, late.url)
        report(built, task, WorkflowStatus.RUNNING)

        def refused_twice() -> bool:
            rows = deliveries(built, task.id)
            return bool(rows) and len(rows[0].attempt_log) >= 2

        wait_for("two refused attempts", refused_twice, 30)
        late.answers = [503]
        late.stall_s = [0.0, 3.0]  # the second request outlasts the 0.5 s timeout
        late.start()
        (row,) = settled(built, task.id, 1)
    finally:
        built.webhook_deliverer.stop()
        late.stop()
    assert row.status is DeliveryStatus.DELIVERED
    log = row.attempt_log
    assert all(entry["statusCode"] is None and entry["error"] for entry in log[:2])
    assert log[2]["statusCode"] == 503 and log[2]["error"] == "HTTP 503"
    assert log[3]["statusCode"] is None and "Timeout" in log[3]["error"]
    assert log[-1]["statusCode"] == 200 and len(log) == 5
    # Every attempt carried the same webhook-id: the receiver can deduplicate.
    assert {webhook_id for webhook_id, _ in late.received} == {row.webhook_id}


def test_events_left_by_a_dead_process_are_delivered_after_restart(
    base_settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    """Process A made the deliveries and claimed one, then died (its threads never send);
    process B, started later, sends that one once its lease has run out, and the rest."""
    settings = hook_settings(base_settings, lease_s=1.0, timeout_s=0.2)  # a 2 s lease
    dead = build_services(settings, session_factory=session_factory)
    tasks = [new_task(dead, receiver.url) for _ in range(3)]
    for task in tasks:
        report(dead, task, WorkflowStatus.RUNNING)
    assert dead.webhook_deliverer.fan_out() == 3
    (claimed,) = dead.webhook_deliverer._claim(1)  # claimed, then the process is gone
    restarted = build_services(settings, session_factory=session_factory)
    try:
        restarted.webhook_deliverer.start()
        for task in tasks:
            settled(restarted, task.id, 1)
    finally:
        restarted.webhook_deliverer.stop()
    ids = [webhook_id for webhook_id, _ in receiver.received]
    assert sorted(ids) == sorted({claimed.webhook_id, *ids}) and len(ids) == 3  # each once


def _flagged(session_factory: sessionmaker[Session], task_id: uuid.UUID) -> list[str]:
    with session_factory() as session:
        return list(
            session.scalars(
                select(TaskEvent.type).where(TaskEvent.task_id == task_id, TaskEvent.fanout_pending)
            )
        )


def test_a_process_without_the_secret_leaves_the_events_to_one_that_has_it(
    base_settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    """One API process configured without the secret (webhooks off there) runs beside one
    with it: it starts no delivery thread and clears no flag, so nothing the other would
    send is lost."""
    with_secret = build_services(hook_settings(base_settings), session_factory=session_factory)
    task = new_task(with_secret, receiver.url)
    without = build_services(
        replace(base_settings, webhooks=WebhookSettings()), session_factory=session_factory
    )
    without.webhook_deliverer.start()
    try:
        report(without, task, WorkflowStatus.RUNNING)  # the event is written by this one
        assert without.webhook_deliverer._threads.running == 0
        assert without.webhook_deliverer.fan_out() == 0
        assert _flagged(session_factory, task.id) == ["task.processing"]
    finally:
        without.webhook_deliverer.stop()
    try:
        with_secret.webhook_deliverer.start()
        (row,) = settled(with_secret, task.id, 1)
    finally:
        with_secret.webhook_deliverer.stop()
    assert row.status is DeliveryStatus.DELIVERED and receiver.types() == ["task.processing"]


def test_an_event_older_than_the_age_limit_is_dropped_not_sent(
    base_settings: Settings,
    session_factory: sessionmaker[Session],
    receiver: Receiver,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Webhooks were off for longer than `max_event_age_s`: switching them on sends the
    recent events only; the old ones lose their flag, get no delivery, and are logged."""
    services = build_services(
        hook_settings(base_settings, max_event_age_s=3600.0), session_factory=session_factory
    )
    old, recent = new_task(services, receiver.url), new_task(services, receiver.url)
    report(services, old, WorkflowStatus.RUNNING)
    report(services, recent, WorkflowStatus.RUNNING)
    with session_factory.begin() as session:
        session.execute(
            update(TaskEvent)
            .where(TaskEvent.task_id == old.id)
            .values(created_at=utcnow() - timedelta(seconds=3601))
        )
    with caplog.at_level(logging.WARNING, logger="domain.webhooks"):
        assert services.webhook_deliverer.fan_out() == 2
    assert "1 webhook event(s) waited over 3600 s" in caplog.text
    assert _flagged(session_factory, old.id) == [] and deliveries(services, old.id) == []
    try:
        services.webhook_deliverer.start()
        (row,) = settled(services, recent.id, 1)
    finally:
        services.webhook_deliverer.stop()
    assert row.status is DeliveryStatus.DELIVERED
    assert [payload["data"]["id"] for _, payload in receiver.received] == [str(recent.id)]


def test_two_deliverers_never_send_one_delivery_twice(
    base_settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    """Two processes' deliverers (three threads each) race for the same 24 events.

    A generous timeout (and a lease longer than an attempt can last): a receiver slowed by a
    busy machine must not turn into a timeout and a legitimate retry, which is at-least-once
    delivery, not the double claim this test is about."""
    settings = hook_settings(base_settings, threads=3, timeout_s=30.0, lease_s=120.0)
    writer = build_services(settings, session_factory=session_factory)
    tasks = [new_task(writer, receiver.url) for _ in range(12)]
    first = WebhookDeliverer(session_factory, settings.webhooks)
    second = WebhookDeliverer(session_factory, settings.webhooks)
    try:
        first.start()
        second.start()
        for task in tasks:
            running = report(writer, task, WorkflowStatus.RUNNING)
            report(writer, running, WorkflowStatus.CANCELLED)
        wait_for("24 deliveries", lambda: len(receiver.received) >= 24, 60)
        rows = [row for task in tasks for row in settled(writer, task.id, 2)]
    finally:
        first.stop()
        second.stop()
    ids = [webhook_id for webhook_id, _ in receiver.received]
    twice = {i for i in ids if ids.count(i) > 1}
    if twice or len(ids) != 24:  # the whole story, untruncated, for a failure's diagnosis
        pytest.fail(
            f"{len(ids)} sends, {len(set(ids))} ids, {len(rows)} rows; sent twice: "
            + json.dumps(
                [
                    {"id": r.webhook_id, "event": r.event_id, "attempts": r.attempt_log}
                    for r in rows
                    if r.webhook_id in twice
                ],
                default=str,
            )
            + f"; events: {_event_types(session_factory, [task.id for task in tasks])}"
        )
    assert all(len(row.attempt_log) == 1 for row in rows)


def test_an_attempt_longer_than_the_lease_setting_is_not_sent_twice(
    base_settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    """The receiver answers within the timeout but after `lease_s`: the claim's lease
    follows the timeout, so the other deliverer's threads do not take the delivery while
    it is still being sent."""
    settings = hook_settings(base_settings, timeout_s=3.0, lease_s=0.5)
    receiver.stall_s = [1.5]
    writer = build_services(settings, session_factory=session_factory)
    task = new_task(writer, receiver.url)
    first = WebhookDeliverer(session_factory, settings.webhooks)
    second = WebhookDeliverer(session_factory, settings.webhooks)
    try:
        first.start()
        second.start()
        report(writer, task, WorkflowStatus.RUNNING)
        (row,) = settled(writer, task.id, 1)
    finally:
        first.stop()
        second.stop()
    assert row.status is DeliveryStatus.DELIVERED and len(row.attempt_log) == 1
    assert [webhook_id for webhook_id, _ in receiver.received] == [row.webhook_id]


def _event_types(
    session_factory: sessionmaker[Session], task_ids: list[uuid.UUID]
) -> list[tuple[str, str, int]]:
    """Every event of the tasks (a failure's diagnosis: who wrote what)."""
    with session_factory() as session:
        return [
            (str(e.task_id)[:8], e.type, e.id)
            for e in session.scalars(
                select(TaskEvent).where(TaskEvent.task_id.in_(task_ids)).order_by(TaskEvent.id)
            )
        ]


def test_private_callback_urls_are_refused_at_submission_and_at_delivery(
    base_settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    strict = build_services(
        hook_settings(base_settings, allow_private=False), session_factory=session_factory
    )
    for url in (
        receiver.url,
        "http://localhost:8000/x",
        "http://10.1.2.3/x",
        "http://169.254.169.254/latest/meta-data",
        "http://[::1]:8080/",
        "ftp://example.com/x",
        "http://user:pw@example.com/x",
    ):
        with pytest.raises(InvalidInputError):
            strict.tasks.create_task("audio_processing", PAYLOAD, callback_url=url)
    off = build_services(
        replace(base_settings, webhooks=WebhookSettings()), session_factory=session_factory
    )
    with pytest.raises(InvalidInputError, match="AUDIOFLOW_WEBHOOK_SECRET"):
        off.tasks.create_task("audio_processing", PAYLOAD, callback_url=receiver.url)

    # Accepted while private receivers were allowed, refused by a deliverer that does not
    # allow them: no request is made, and the delivery fails at once (no retry helps).
    lenient = build_services(hook_settings(base_settings), session_factory=session_factory)
    task = new_task(lenient, receiver.url)
    report(lenient, task, WorkflowStatus.RUNNING)
    try:
        strict.webhook_deliverer.start()
        (row,) = settled(strict, task.id, 1)
    finally:
        strict.webhook_deliverer.stop()
    assert row.status is DeliveryStatus.FAILED and len(row.attempt_log) == 1
    assert "non-public" in (row.last_error or "") and receiver.received == []


def test_redirects_are_not_followed(
    services: Services, receiver: Receiver, base_settings: Settings
) -> None:
    elsewhere = Receiver().start()
    receiver.redirect_to = elsewhere.url
    try:
        services.webhook_deliverer.start()
        task = new_task(services, receiver.url)
        report(services, task, WorkflowStatus.RUNNING)
        (row,) = settled(services, task.id, 1)
    finally:
        services.webhook_deliverer.stop()
        elsewhere.stop()
    assert row.status is DeliveryStatus.FAILED  # every attempt of the schedule: a 302
    assert len(row.attempt_log) == len(services.settings.webhooks.retry_schedule_s) + 1
    assert row.last_status_code == 302 and "redirect not followed" in (row.last_error or "")
    assert elsewhere.received == []


def test_the_api_takes_callback_urls_lists_deliveries_and_redelivers(
    base_settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    """Through HTTP: `callbackUrl` on POST /tasks (422 when refused, part of the idempotent
    match), `GET /tasks/{id}/deliveries`, `POST /deliveries/{id}/redeliver`."""
    settings = hook_settings(base_settings)
    settings = replace(settings, prefect=replace(settings.prefect, api_url=""))
    app = create_app(settings, session_factory=session_factory)
    with TestClient(app=app) as client:
        body = {"type": "audio_processing", "payload": PAYLOAD, "callbackUrl": receiver.url}
        key = {"Idempotency-Key": f"hooks-{uuid.uuid4()}"}
        created = client.post("/tasks", json=body, headers=key)
        assert created.status_code == 201, created.text
        task = created.json()
        assert task["callbackUrl"] == receiver.url
        assert client.post("/tasks", json=body, headers=key).status_code == 200
        other = {**body, "callbackUrl": receiver.url + "/other"}
        assert client.post("/tasks", json=other, headers=key).status_code == 409
        bad = {**body, "callbackUrl": "gopher://example.com/"}
        refused = client.post("/tasks", json=bad)
        assert refused.status_code == 422 and "http" in refused.json()["detail"]

        progress = {"taskId": task["id"], "workflowId": task["workflowId"], "status": "running"}
        assert client.post("/internal/workflow-progress", json=progress, headers=AUTH).is_success

        def delivered() -> list[dict[str, Any]] | None:
            rows: list[dict[str, Any]] = client.get(f"/tasks/{task['id']}/deliveries").json()
            return rows if rows and rows[0]["status"] == "delivered" else None

        (row,) = wait_for("the delivery", delivered, 30)
        assert row["eventType"] == "task.processing" and row["url"] == receiver.url
        assert row["attemptLog"][0]["statusCode"] == 200

        again = client.post(f"/deliveries/{row['id']}/redeliver")
        assert again.status_code == 202, again.text
        assert again.json()["status"] == "pending"
        assert client.post(f"/deliveries/{uuid.uuid4()}/redeliver").status_code == 404

        def redelivered() -> list[dict[str, Any]] | None:
            rows = delivered()
            return rows if rows and len(rows[0]["attemptLog"]) == 2 else None

        (row,) = wait_for("the redelivery", redelivered, 30)
        assert client.get(f"/tasks/{uuid.uuid4()}/deliveries").status_code == 404
    ids = [webhook_id for webhook_id, _ in receiver.received]
    assert ids == [row["webhookId"], row["webhookId"]]  # the same message, sent again
    first, second = (payload for _, payload in receiver.received)
    assert json.dumps(first, sort_keys=True) == json.dumps(second, sort_keys=True)


def test_a_committed_webhook_event_wakes_the_delivery_threads(
    base_settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    """The threads' poll is an hour away: only the event hub's notification of the
    committed status event (PostgreSQL's NOTIFY) can make the delivery go out within the
    bound; and a notification that comes while every thread is busy is not lost."""
    built = build_services(
        hook_settings(base_settings, poll_s=3600.0, threads=1), session_factory=session_factory
    )

    async def run() -> None:
        await built.start_async()  # the hub listens
        try:
            built.webhook_deliverer.start()
            task = new_task(built, receiver.url)
            running = await asyncio.to_thread(report, built, task, WorkflowStatus.RUNNING)
            await asyncio.to_thread(
                wait_for, "the processing event", lambda: len(receiver.received) == 1, 20
            )
            await asyncio.to_thread(
                report, built, running, WorkflowStatus.COMPLETED, result={"outputs": {}}
            )
            await asyncio.to_thread(
                wait_for, "the done event", lambda: len(receiver.received) == 2, 20
            )
        finally:
            built.webhook_deliverer.stop()
            await built.stop_async()

    asyncio.run(run())
    assert receiver.types() == ["task.processing", "task.done"]


def test_a_pass_sends_only_while_its_lease_covers_an_attempt_and_releases_the_rest(
    base_settings: Settings, session_factory: sessionmaker[Session], receiver: Receiver
) -> None:
    """The fan-out leases a new event's deliveries to its thread (no other thread claims
    them); a thread whose lease no longer outlasts a whole attempt sends none of them and
    gives them back at once, and what it sent is recorded with its attempt."""
    settings = hook_settings(base_settings)
    built = build_services(settings, session_factory=session_factory)
    deliverer = built.webhook_deliverer
    tasks = [new_task(built, receiver.url) for _ in range(3)]
    for task in tasks:
        report(built, task, WorkflowStatus.RUNNING)
    made, mine, left = deliverer._fan_out(2)
    assert (made, len(mine), left) == (3, 2, True)
    (free,) = deliverer._claim()  # the third only: the other two are leased
    assert free.id not in {d.id for d in mine}
    lease = settings.webhooks.claim_lease_s
    with httpx.Client() as client:
        deliverer._send(client, mine, time.monotonic() - lease)  # the lease is spent
        assert receiver.received == []
        again = deliverer._claim()
        assert sorted(d.id for d in again) == sorted(d.id for d in mine)
        deliverer._send(client, again, time.monotonic())
    assert sorted(i for i, _ in receiver.received) == sorted(d.webhook_id for d in again)
    for delivery in again:
        (row,) = [r for r in deliveries(built, delivery_task(built, delivery.id))]
        assert row.status is DeliveryStatus.DELIVERED and len(row.attempt_log) == 1


def delivery_task(services: Services, delivery_id: uuid.UUID) -> uuid.UUID:
    with services.session_factory() as session:
        return session.get_one(WebhookDelivery, delivery_id).task_id
