"""The event hub's fan-out on PostgreSQL (`domain.event_stream.EventHub`), in process: many
open streams, one read of the log per poll.

Each live event used to make every open stream read the log itself (one query per stream
per event; with 500 streams, 3.2x the API's CPU per progress report). The hub now polls the
log once (events with their bodies) and hands each stream the ones its filter matches.
"""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Awaitable, Callable
from typing import Any

from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from db.base import utcnow
from db.models import Task, TaskEvent, TaskStatus, WorkflowStatus
from domain.event_stream import (
    EventFilter,
    EventHub,
    EventReader,
    EventStreamService,
    KeepAlive,
    StreamEvent,
)
from domain.workflows import ProgressUpdate, WorkflowService
from tests.support.rows import pending_task

TASK_STREAMS = 20


class CountingReader(EventReader):
    """The reader, counting the streams' own reads."""

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        super().__init__(session_factory)
        self.reads = 0

    def read(self, where: EventFilter, **kwargs: Any) -> list[StreamEvent]:
        self.reads += 1
        return super().read(where, **kwargs)


def _running_task(factory: sessionmaker[Session], episode_id: str) -> tuple[Task, uuid.UUID]:
    task, workflow = pending_task(factory, episode_id)
    WorkflowService(factory).apply_progress(
        ProgressUpdate(task.id, workflow.id, status=WorkflowStatus.RUNNING)
    )
    return task, workflow.id


async def _until(what: str, check: Callable[[], bool], timeout_s: float = 30) -> None:
    """Wait (bounded) for `check` to hold."""

    async def poll() -> None:
        while not check():  # noqa: ASYNC110 (conditions of other tasks and threads)
            await asyncio.sleep(0.01)

    try:
        await asyncio.wait_for(poll(), timeout_s)
    except TimeoutError:
        raise AssertionError(f"timed out after {timeout_s} s waiting for {what}") from None


def test_one_read_of_the_log_per_poll_whatever_the_number_of_streams(
    base_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    task, workflow_id = _running_task(session_factory, "ep-hub")
    reader = CountingReader(session_factory)
    hub = EventHub(base_settings.database.url, reader)
    service = EventStreamService(hub, reader)
    workflows = WorkflowService(session_factory)
    filters = {
        "everything": EventFilter(),
        "episode": EventFilter(episode_id="ep-hub"),
        "other episode": EventFilter(episode_id="ep-other"),
        "done": EventFilter(status=TaskStatus.DONE),
        "other type": EventFilter(task_type="something_else"),
    }
    received: dict[str, list[StreamEvent]] = {}

    async def consume(name: str, where: EventFilter, last_event_id: int | None) -> None:
        got = received.setdefault(name, [])
        async for item in service.follow(where, last_event_id=last_event_id, keepalive_s=300):
            if not isinstance(item, KeepAlive):
                got.append(item)

    def in_thread(call: Callable[[], Any]) -> Awaitable[Any]:
        return asyncio.to_thread(call)

    async def run() -> None:
        await hub.start()
        consumers = [
            asyncio.create_task(consume(f"task {n}", EventFilter(task_id=task.id), None))
            for n in range(TASK_STREAMS)
        ] + [asyncio.create_task(consume(name, where, None)) for name, where in filters.items()]
        try:
            # Every stream has replayed (the task's streams: its processing event) and waits.
            await _until("the replays", lambda: reader.reads == TASK_STREAMS + len(filters))
            await _until(
                "the task streams' replay",
                lambda: all(len(received.get(f"task {n}", [])) == 1 for n in range(TASK_STREAMS)),
            )
            await _until("every stream waiting", lambda: hub.subscriptions == len(consumers))
            reader.reads = 0

            await in_thread(
                lambda: workflows.apply_progress(
                    ProgressUpdate(task.id, workflow_id, progress=40, step="encode")
                )
            )
            await _until(
                "the progress at every task stream",
                lambda: all(len(received[f"task {n}"]) == 2 for n in range(TASK_STREAMS)),
            )
            await _until(
                "the progress at the matching all-task streams",
                lambda: len(received["everything"]) == 1 and len(received["episode"]) == 1,
            )
            assert reader.reads == 0  # no stream read the log for the live event: the hub did

            await in_thread(
                lambda: workflows.apply_progress(
                    ProgressUpdate(
                        task.id,
                        workflow_id,
                        status=WorkflowStatus.COMPLETED,
                        progress=100,
                        result={"outputs": {}},
                    )
                )
            )
            await _until("the done event", lambda: len(received["done"]) == 1)
            await _until(
                "the task streams' end", lambda: all(c.done() for c in consumers[:TASK_STREAMS])
            )
            assert reader.reads == 0
        finally:
            await hub.stop()
            for consumer in consumers:
                consumer.cancel()
            await asyncio.gather(*consumers, return_exceptions=True)

    asyncio.run(run())
    for n in range(TASK_STREAMS):
        assert [e.type for e in received[f"task {n}"]] == [
            "task.processing",
            "task.progress",
            "task.done",
        ]
    assert [e.type for e in received["everything"]] == ["task.progress", "task.done"]
    assert [e.type for e in received["episode"]] == ["task.progress", "task.done"]
    assert [e.type for e in received["done"]] == ["task.done"]
    assert received["other episode"] == [] and received["other type"] == []
    progress = received["everything"][0]
    assert (progress.data["progress"], progress.data["currentStep"]) == (40, "encode")


def test_an_event_that_commits_after_a_later_one_still_reaches_the_streams(
    base_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Ids are taken before commit: a transaction may commit after one with a later id.
    The hub's poll moves past the lower id while it is invisible, and looks for it again
    (for `HOLE_S`), so the all-task stream still gets it."""
    slow_task, _ = _running_task(session_factory, "ep-late")
    fast_task, fast_workflow = _running_task(session_factory, "ep-late")
    hub = EventHub(base_settings.database.url, EventReader(session_factory))
    workflows = WorkflowService(session_factory)
    got: list[StreamEvent] = []

    async def run() -> None:
        await hub.start()
        subscription = hub.subscribe(None)

        start = EventReader(session_factory).last_id()  # the hub's first poll looks back

        def collect() -> bool:
            got.extend(e for e in subscription.take()[0] if e.id > start)
            return True

        try:
            await _until("the hub polling", lambda: hub.polls > 0)
            with session_factory() as slow:
                late = TaskEvent(
                    task_id=slow_task.id,
                    type="task.failed",
                    data={"id": str(slow_task.id), "status": "failed"},
                    created_at=utcnow(),
                )
                slow.add(late)
                slow.flush()  # its id is taken, not visible
                await asyncio.to_thread(
                    lambda: workflows.apply_progress(
                        ProgressUpdate(fast_task.id, fast_workflow, progress=5)
                    )
                )
                await _until("the later event", lambda: collect() and len(got) == 1)
                assert got[0].id > late.id
                slow.commit()
            await _until("the earlier event", lambda: collect() and len(got) == 2)
        finally:
            await hub.stop()

    asyncio.run(run())
    assert [e.type for e in got] == ["task.progress", "task.failed"]
    assert got[1].data["taskId"] == str(slow_task.id)


def test_events_applied_here_reach_the_streams_with_the_poll_stopped_and_in_order(
    base_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """The workflow service hands a plain report's event to its process's hub: it reaches a
    task's stream with the hub's poll stopped (cancelled: no read of the log can bring
    it). A report whose task has a status event the hub has not handed out yet (written
    by another process, not polled) is not handed over ahead of it: the poll, restarted,
    brings both, in id order. A status change applied here is handed over like a report."""
    task, workflow_id = _running_task(session_factory, "ep-direct")
    reader = CountingReader(session_factory)
    hub = EventHub(base_settings.database.url, reader)
    service = EventStreamService(hub, reader)
    workflows = WorkflowService(session_factory)
    workflows.event_sink = hub
    got: list[StreamEvent] = []

    async def consume() -> None:
        where = EventFilter(task_id=task.id)
        async for item in service.follow(where, last_event_id=None, keepalive_s=300):
            if not isinstance(item, KeepAlive):
                got.append(item)

    def report(**fields: Any) -> Awaitable[Any]:
        return asyncio.to_thread(
            lambda: workflows.apply_progress(ProgressUpdate(task.id, workflow_id, **fields))
        )

    async def run() -> None:
        await hub.start()
        consumer = asyncio.create_task(consume())
        try:
            await _until("the replay", lambda: len(got) == 1 and hub.subscriptions == 1)
            # The hub has handed nothing of this task yet: the first report goes by the poll.
            await report(progress=10)
            await _until("the first progress", lambda: len(got) == 2)
            assert hub.handed_directly == 0
            assert hub._poller is not None
            hub._poller.cancel()
            await asyncio.gather(hub._poller, return_exceptions=True)
            polls = hub.polls

            await report(progress=20, step="encode")
            await _until("the second progress, with no poll", lambda: len(got) == 3)
            assert hub.polls == polls and hub.handed_directly == 1 and reader.reads == 1

            # Another process's status change, which the stopped poll cannot read.
            with session_factory.begin() as session:
                other = TaskEvent(
                    task_id=task.id,
                    type="task.processing",
                    data={
                        "id": str(task.id),
                        "status": "processing",
                        "progress": 20,
                        "currentStep": "retry",
                    },
                    created_at=utcnow(),
                )
                session.add(other)
            await report(progress=30)  # the hub's loop took it before this returns
            assert hub.handed_directly == 1 and len(got) == 3  # held back for the poll

            hub._poller = asyncio.create_task(hub._poll_postgres())
            await _until("the poll's events", lambda: len(got) == 5)

            # A status change applied here goes the same way, with the poll stopped again.
            hub._poller.cancel()
            await asyncio.gather(hub._poller, return_exceptions=True)
            polls = hub.polls
            await report(status=WorkflowStatus.COMPLETED, result={"outputs": {}})
            await _until("the done event, with no poll", lambda: len(got) == 6)
            await _until("the stream's end", consumer.done)
            assert hub.polls == polls and hub.handed_directly == 2
        finally:
            await hub.stop()
            consumer.cancel()
            await asyncio.gather(consumer, return_exceptions=True)

    asyncio.run(run())
    assert [(e.type, e.data["progress"]) for e in got] == [
        ("task.processing", 0),
        ("task.progress", 10),
        ("task.progress", 20),
        ("task.processing", 20),
        ("task.progress", 30),
        ("task.done", 100),
    ]
    assert [e.id for e in got] == sorted(e.id for e in got)
