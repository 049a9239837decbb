"""Live event streams over the task event log (`task_events`, see `domain.events`).

A stream first replays the log after the client's last event id, then sends each new
event as it is committed, with a keep-alive in every quiet interval. The log is the
only source of what is sent: a notification only says "look again", so a stream never
sends an event that was rolled back, and one that missed a notification catches up from
the log at its next keep-alive.

Notifications: one `EventHub` per process. On PostgreSQL it keeps one `LISTEN` connection
(asyncpg) on the channel the log's trigger notifies for status events, whichever process
wrote the event, reconnecting when it drops. Progress is not notified (migration 0006).
While some stream is open the hub polls the log: every `POLL_S`, at once when a
notification came, and at once when this process committed an event it did not hand over
itself (`look_now`, below). One poll is one query on the hub's own asyncpg connection, run
in the event loop (no worker thread, no ORM: it runs up to hundreds of times a second):
the events above the newest id seen, and for a second the ids seen missing below it (a
late commit), with their bodies and their tasks' type and episode. The hub hands each open
stream the events that concern it (a task's own streams; the all-task streams, with their
filters applied in memory), then wakes it: a stream does not query the log for a live
event, so 500 open streams cost one read per poll, not 500. A poll hands a task's events
in id order (a poll's snapshot that holds an event holds every one committed before it).
A stream still reads the log itself when it starts (the replay), at each keep-alive, when
the hub reconnected or failed to read, and when it fell more than a page behind. SQLite has no
notifications: the hub looks at the log's highest id a few times a second instead, and
only while some stream is open; then every stream reads the log itself.

Events this process commits (a plain progress report, a status change) need no poll: the
writer hands the committed event to the hub (`committed`, `domain.events.CommittedEvent`),
whose loop hands it out at once if the task's event it must follow (`after_id`: for a
status event the task's newest before it, read under the row lock; for a report its newest
status event in the statement's snapshot, and the status the report shows must be the one
the task's streams last got) has already gone to the streams; otherwise it asks for a poll.
So a task's streams are still handed its events in id order, whichever way each came, and
an event that came both ways goes out once (the hub remembers the ids it handed out).

Order: within one task, ids follow commit order (`domain.events`) and notifications
arrive in commit order, so a task's stream sends what it is handed, or reads, "after the
last id sent". Across tasks a transaction may commit after one with a later id, so the
all-task stream takes the exact events it was notified of, and remembers what it sent so
that nothing goes out twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
import uuid
from collections import deque
from collections.abc import AsyncIterator, Callable, Collection
from dataclasses import dataclass, field
from typing import Any, Final

import anyio.to_thread
from sqlalchemy import func, select
from sqlalchemy.engine import Engine, make_url
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker

from db.engine import autocommit_engine
from db.models import PROGRESS_EVENT, Task, TaskEvent, TaskStatus
from db.repositories import TaskRepository
from domain.events import NOTIFY_CHANNEL, CommittedEvent, status_event_type
from domain.views import task_view

log = logging.getLogger(__name__)

#: Events read from the log at once; a longer backlog is read page by page.
PAGE: Final = 500
#: Event types after which a task's stream ends (unless the task went on since).
TERMINAL_EVENT_TYPES: Final = frozenset(
    status_event_type(s) for s in (TaskStatus.DONE, TaskStatus.FAILED, TaskStatus.CANCELLED)
)
#: How often the SQLite hub looks for new events while a stream is open.
SQLITE_POLL_S: Final = 0.25
#: How often the PostgreSQL hub looks for new progress while a stream is open (progress
#: is not notified; the process that applied a report makes its hub look at once).
POLL_S: Final = 0.02
#: How long the hub's poll looks again for an id missing below the newest it saw (a
#: report that commits after a later one), and at most how many such ids.
HOLE_S: Final = 1.0
#: The least time between two polls' starts: under a stream of reports, a poll takes what
#: several committed meanwhile (one query and one wake-up of the loop for them all).
POLL_GAP_S: Final = 0.005
LOOKBACK: Final = 256
#: At most how many tasks' newest handed ids the hub keeps (`EventHub._last`).
LAST_IDS: Final = 100_000


@dataclass(frozen=True)
class EventFilter:
    """Which events a stream sends: one task's, or all tasks' narrowed like `GET /tasks`
    (the event's status, the task's type and episode)."""

    task_id: uuid.UUID | None = None
    status: TaskStatus | None = None
    task_type: str | None = None
    episode_id: str | None = None


@dataclass(frozen=True)
class StreamEvent:
    """One event as a stream sends it: `id` for Last-Event-ID, `type`, and a JSON body."""

    id: int
    type: str
    data: dict[str, Any]


@dataclass(frozen=True)
class LoggedEvent:
    """An event as the hub read it: what streams send, and what their filters look at."""

    event: StreamEvent
    task_id: uuid.UUID
    #: The status the event's body shows (`TaskEvent.data["status"]`).
    status: str | None
    task_type: str
    episode_id: str | None

    def matches(self, where: EventFilter) -> bool:
        """Whether a stream with `where` sends it (`EventReader.read`'s filter, in memory)."""
        return (
            (where.task_id is None or where.task_id == self.task_id)
            and (where.status is None or where.status.value == self.status)
            and (where.task_type is None or where.task_type == self.task_type)
            and (where.episode_id is None or where.episode_id == self.episode_id)
        )


class KeepAlive:
    """Sent when nothing happened for a keep-alive interval (an SSE comment)."""


KEEPALIVE: Final = KeepAlive()


def stream_event(event_id: int, event_type: str, data: dict[str, Any]) -> StreamEvent:
    """The event as a stream sends it: the same keys for every type (`taskId`, `status`,
    `progress`, `currentStep`), and for status events the task as `GET /tasks/{id}` shows it.
    """
    body: dict[str, Any] = {"eventId": event_id, "type": event_type}
    if event_type == PROGRESS_EVENT:
        body |= {
            "taskId": data.get("taskId"),
            "status": data.get("status"),
            "progress": data.get("progress"),
            "currentStep": data.get("currentStep"),
            "message": data.get("message"),
        }
    else:
        body |= {
            "taskId": data.get("id"),
            "status": data.get("status"),
            "progress": data.get("progress"),
            "currentStep": data.get("currentStep"),
            "task": data,
        }
    return StreamEvent(event_id, event_type, body)


class EventReader:
    """The stream's reads of the log (synchronous; streams call them in a thread).

    The streams' reads (`read`: replay, keep-alive, catch-up) are frequent, so on PostgreSQL
    they take the autocommit pool without pre-ping that progress reports use
    (`db.engine.autocommit_engine`):
    one round trip per read instead of three (the pool's ping, the query, the rollback at
    the session's end). A connection the server dropped fails once and the read is retried
    on a fresh one (a read is safe to repeat).
    """

    def __init__(self, session_factory: sessionmaker[Session]) -> None:
        self.session_factory = session_factory
        bind = session_factory.kw.get("bind")
        fast = autocommit_engine(bind) if isinstance(bind, Engine) else None
        self._read_factory = (
            sessionmaker(fast, expire_on_commit=False) if fast is not None else session_factory
        )

    def task_status(self, task_id: uuid.UUID) -> TaskStatus:
        """The task's status; NotFoundError (404) for an unknown task."""
        with self.session_factory() as session:
            return TaskRepository(session).get_existing(task_id).status

    def last_id(self) -> int:
        with self.session_factory() as session:
            return int(session.scalar(select(func.coalesce(func.max(TaskEvent.id), 0))) or 0)

    def read(
        self,
        where: EventFilter,
        *,
        after_id: int = 0,
        ids: Collection[int] | None = None,
        limit: int = PAGE,
    ) -> list[StreamEvent]:
        """Events matching `where` with an id above `after_id` (or exactly `ids`), in id order."""
        query = select(TaskEvent)
        query = (
            query.where(TaskEvent.id.in_(list(ids)))
            if ids is not None
            else query.where(TaskEvent.id > after_id)
        )
        if where.task_id is not None:
            query = query.where(TaskEvent.task_id == where.task_id)
        if where.task_type is not None or where.episode_id is not None:
            query = query.join(Task, Task.id == TaskEvent.task_id)
            if where.task_type is not None:
                query = query.where(Task.type == where.task_type)
            if where.episode_id is not None:
                query = query.where(Task.episode_id == where.episode_id)
        if where.status is not None:
            query = query.where(TaskEvent.data["status"].as_string() == where.status.value)
        query = query.order_by(TaskEvent.id).limit(limit)
        for attempt in (1, 2):
            try:
                with self._read_factory() as session:
                    rows = session.scalars(query)
                    return [stream_event(row.id, row.type, row.data) for row in rows]
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise
        raise AssertionError("unreachable")

    def final_state(self, task_id: uuid.UUID) -> StreamEvent | None:
        """For a task that has ended: its last status event (its state as it ended); None
        while it lives. A task older than the log has no event: its state as one (id 0)."""
        with self.session_factory() as session:
            task = TaskRepository(session).get_existing(task_id)
            if status_event_type(task.status) not in TERMINAL_EVENT_TYPES:
                return None
            row = session.scalar(
                select(TaskEvent)
                .where(TaskEvent.task_id == task_id, TaskEvent.type != PROGRESS_EVENT)
                .order_by(TaskEvent.id.desc())
                .limit(1)
            )
            if row is not None:
                return stream_event(row.id, row.type, row.data)
            return stream_event(0, status_event_type(task.status), task_view(task))


def _status_of(data: Any) -> str | None:
    status = data.get("status") if isinstance(data, dict) else None
    return status if isinstance(status, str) else None


@dataclass(eq=False)
class Subscription:
    """One open stream's mailbox in the hub: the events the hub read for it (those its filter
    matches), and a wake-up."""

    task_id: uuid.UUID | None
    where: EventFilter = field(default_factory=EventFilter)
    events: list[StreamEvent] = field(default_factory=list)
    #: Set when the stream must re-read the log (the hub reconnected or could not read,
    #: SQLite changed, or more than a page waited).
    catch_up: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)

    def take(self) -> tuple[list[StreamEvent], bool]:
        """The events handed over since the last take, in id order, and whether to re-read."""
        events, catch_up = self.events, self.catch_up
        if len(events) > 1:
            events.sort(key=lambda e: e.id)
        self.events, self.catch_up = [], False
        self.wake.clear()
        return events, catch_up

    def hand(self, event: StreamEvent) -> None:
        if not self.catch_up:
            self.events.append(event)
            if len(self.events) > PAGE:  # a stream that fell behind reads the log itself
                self.events, self.catch_up = [], True
        self.wake.set()


#: The hub's poll (see the module's docstring): asyncpg, `$1` the newest id seen, `$2` the
#: ids missing below it, `$3` the lowest of them (or `$1` + 1: a range on the primary key
#: whatever plan the prepared statement gets), `$4` at most how many rows. Plain SQL on
#: purpose: it runs in the event loop up to hundreds of times a second, where the ORM and a
#: worker thread per read were most of what 500 open streams cost each progress report.
_POLL_SQL: Final = """
SELECT e.id, e.task_id, e.type, e.data::text, t.type, t.episode_id
FROM task_events AS e JOIN tasks AS t ON t.id = e.task_id
WHERE e.id >= $3 AND (e.id > $1 OR e.id = ANY($2::bigint[]))
ORDER BY e.id
LIMIT $4
"""
_NEWEST_SQL: Final = "SELECT coalesce(max(id), 0) FROM task_events"


class EventHub:
    """This process's one source of "something was written to the log", fanned out to the
    open streams. `start()` and `stop()` run in the server's event loop (the API's lifespan)."""

    def __init__(
        self,
        database_url: str,
        reader: EventReader,
        on_event: Callable[[str], None] | None = None,
    ) -> None:
        url = make_url(database_url)
        #: Called with each notified event's type (the webhook deliverer's wake-up).
        self.on_event = on_event
        self.postgres = url.get_backend_name() == "postgresql"
        #: asyncpg's DSN: the SQLAlchemy URL without its driver name.
        self._dsn = url.set(drivername="postgresql").render_as_string(hide_password=False)
        self.reader = reader
        self._by_task: dict[uuid.UUID, set[Subscription]] = {}
        self._everything: set[Subscription] = set()
        #: How many streams are open (read by `look_now` on every report: kept, not counted).
        self._open = 0
        self._runner: asyncio.Task[None] | None = None
        self._poller: asyncio.Task[None] | None = None
        #: Set by `look_now()` (from any thread, through the loop) and by notifications:
        #: poll the log at once.
        self._look = asyncio.Event()
        #: A `look_now()` is on its way to the loop or not polled yet: the next one need not
        #: wake the loop (set from the endpoint's threads, cleared by the poll before it reads).
        self._look_asked = False
        self._loop: asyncio.AbstractEventLoop | None = None
        #: Ids already handed to the streams (a poll after a reconnect looks back).
        self._seen = SentIds()
        #: Whether notifications arrive right now (PostgreSQL: the LISTEN connection is up).
        self.listening = asyncio.Event()
        #: Set by `close()`: the server is shutting down, open streams end.
        self.closed = False
        #: Polls of the log so far (PostgreSQL), for tests.
        self.polls = 0
        #: Events this process committed (`committed`, from the writers' threads), waiting
        #: for the loop; and whether the loop was asked to take them.
        self._inbox: deque[CommittedEvent] = deque()
        self._inbox_asked = False
        #: Per task, the newest event id handed to its streams: the hub hands a task's
        #: events in id order, so a status event at or below it has reached them.
        self._last: dict[uuid.UUID, int] = {}
        #: Per task, the status its newest handed event shows.
        self._last_status: dict[uuid.UUID, str | None] = {}
        #: Events handed over without a poll (`committed`), for tests.
        self.handed_directly = 0

    async def start(self) -> None:
        # Made here, in the server's loop: an app may be started again in another loop.
        self.listening = asyncio.Event()
        self.closed = False
        self._look = asyncio.Event()
        self._look_asked = False
        self._loop = asyncio.get_running_loop()
        self._seen = SentIds()
        self._last = {}
        self._last_status = {}
        self._inbox.clear()
        self._inbox_asked = False
        if self.postgres:
            self._poller = asyncio.create_task(self._poll_postgres(), name="event-hub-poll")
        listen = self._listen_postgres if self.postgres else self._poll_sqlite
        self._runner = asyncio.create_task(listen(), name="event-hub")
        if self.postgres:
            # The first connection, so that a stream opened right after start-up is live;
            # a database that is down only delays it (the runner keeps trying).
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self.listening.wait(), 10)

    def close(self) -> None:
        """End every open stream (at its next wake-up, which this is): the server is going
        down, and it waits for open responses before it stops. Clients reconnect with their
        Last-Event-ID to another process."""
        self.closed = True
        self.wake_all()

    async def stop(self) -> None:
        self.close()
        for runner in (self._runner, self._poller):
            if runner is not None:
                runner.cancel()
                with contextlib.suppress(asyncio.CancelledError):
                    await runner
        self._runner = self._poller = None
        self._loop = None

    def look_now(self) -> None:
        """This process just committed progress (the progress endpoint, from its worker
        thread): the hub looks at the log now rather than at its next poll."""
        loop = self._loop
        if loop is not None and self._open and not self._look_asked:
            self._look_asked = True
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._look.set)

    @property
    def streaming(self) -> bool:
        """Some stream is open and the hub runs (read from the writers' threads)."""
        return self._loop is not None and self._open > 0

    def committed(self, event: CommittedEvent) -> None:
        """This process just committed an event (a writer's thread: the progress endpoint,
        a status change): the loop hands it to the streams at once when that keeps each
        task's events in order (`_take_inbox`), and polls the log otherwise."""
        loop = self._loop
        if loop is None or not self._open:
            return
        self._inbox.append(event)
        if not self._inbox_asked:
            self._inbox_asked = True
            with contextlib.suppress(RuntimeError):  # the loop closed meanwhile
                loop.call_soon_threadsafe(self._take_inbox)

    def _take_inbox(self) -> None:
        """In the loop: hand out the events this process committed.

        An event goes out at once when the event of its task it must follow (`after_id`)
        has already been handed to the streams (the hub hands each task's events in id
        order, so every one before it has too) and, for a report, its status is the one
        the task's last handed event showed (a status change the report's snapshot missed
        shows as a different status); a task the hub has handed nothing of yet, or one
        that may have news the hub has not read, is left to the poll, which this asks for.
        An event below what its task's streams already got is dropped: a progress value
        superseded (the log no longer holds it either), or one the poll handed out already."""
        self._inbox_asked = False
        look = False
        while self._inbox:
            event = self._inbox.popleft()
            event_id, task_id = event.event_id, event.task_id
            if event_id in self._seen or not (task_id in self._by_task or self._everything):
                continue
            last = self._last.get(task_id)
            if last is not None and event_id <= last:  # behind what the streams got
                self._seen.add(event_id)
                continue
            if (
                last is None
                or event.after_id > last
                or (
                    event.type == PROGRESS_EVENT
                    and _status_of(event.data) != self._last_status.get(task_id)
                )
            ):
                look = True
                continue
            self._seen.add(event_id)
            self.handed_directly += 1
            self._hand_out(
                LoggedEvent(
                    stream_event(event_id, event.type, event.data),
                    task_id,
                    _status_of(event.data),
                    event.task_type,
                    event.episode_id,
                )
            )
        if look:
            self._look.set()

    def subscribe(
        self, task_id: uuid.UUID | None, where: EventFilter | None = None
    ) -> Subscription:
        """A mailbox for a stream of `task_id`'s events (None: all tasks', narrowed by
        `where`)."""
        subscription = Subscription(task_id, where or EventFilter(task_id=task_id))
        if task_id is None:
            self._everything.add(subscription)
        else:
            self._by_task.setdefault(task_id, set()).add(subscription)
        self._open += 1
        if self._open == 1 and self._loop is not None:
            # The poller sleeps while no stream is open: wake it for the first one.
            self._loop.call_soon_threadsafe(self._look.set)
        return subscription

    def unsubscribe(self, subscription: Subscription) -> None:
        if subscription.task_id is None:
            subscribers = self._everything
        else:
            subscribers = self._by_task.get(subscription.task_id, set())
        if subscription not in subscribers:
            return
        subscribers.discard(subscription)
        self._open -= 1
        if not subscribers and subscription.task_id is not None:
            del self._by_task[subscription.task_id]
            if not self._everything:
                self._last.pop(subscription.task_id, None)
                self._last_status.pop(subscription.task_id, None)
        if not self._open:
            self._last.clear()
            self._last_status.clear()

    @property
    def subscriptions(self) -> int:
        return self._open

    def _hand_out(self, event: LoggedEvent) -> None:
        """Hand an event to the streams whose filter takes it, and wake them."""
        if len(self._last) >= LAST_IDS:  # all-task streams over many tasks: start afresh
            self._last.clear()
            self._last_status.clear()
        if event.event.id >= self._last.get(event.task_id, 0):
            self._last[event.task_id] = event.event.id
            self._last_status[event.task_id] = event.status
        for subscription in self._by_task.get(event.task_id, ()):
            subscription.hand(event.event)
        for subscription in self._everything:
            if event.matches(subscription.where):
                subscription.hand(event.event)

    def wake_all(self) -> None:
        """Every stream re-reads the log (after a gap in notifications, or on SQLite)."""
        for subscription in (*self._everything, *(s for v in self._by_task.values() for s in v)):
            subscription.catch_up = True
            subscription.wake.set()

    def _on_notification(self, _conn: object, _pid: int, _channel: str, payload: str) -> None:
        """A status event was committed: poll now (the poll reads it, in id order with the
        progress around it), and wake the webhook deliverer. No poll for an event no open
        stream takes (another task's), or one this process handed out already."""
        try:
            message = json.loads(payload)
            event_type = str(message["type"])
            event_id = int(message["id"])
            task_id = uuid.UUID(str(message["taskId"]))
        except (ValueError, KeyError, TypeError):
            log.warning("event hub: unreadable notification %r", payload[:200])
            return
        if (
            self._open
            and (task_id in self._by_task or self._everything)
            and event_id not in self._seen
        ):
            self._look.set()
        if self.on_event is not None:
            self.on_event(event_type)

    async def _listen_postgres(self) -> None:
        """Keep one LISTEN connection up for as long as the hub runs.

        Whatever fails (the server refusing, a connection closed between `connect` and
        `LISTEN`, which asyncpg reports as an `InterfaceError`, not a `PostgresError`), the
        loop backs off and tries again: a runner that ended would leave every stream of the
        process to its keep-alive re-reads until a restart. Only cancellation ends it."""
        import asyncpg

        backoff = 0.5
        while True:
            try:
                conn = await asyncpg.connect(self._dsn, timeout=10)
            except Exception as exc:
                log.warning("event hub: cannot LISTEN (%s); retrying in %.1f s", exc, backoff)
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)
                continue
            lost = asyncio.Event()
            conn.add_termination_listener(_setter(lost))
            failed = False
            try:
                await conn.add_listener(NOTIFY_CHANNEL, self._on_notification)
                self.listening.set()
                backoff = 0.5
                self.wake_all()  # whatever was written while nobody listened
                await lost.wait()
                log.warning("event hub: the LISTEN connection dropped; reconnecting")
            except Exception as exc:
                log.warning("event hub: LISTEN failed (%s); retrying in %.1f s", exc, backoff)
                failed = True
            finally:
                self.listening.clear()
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))
            if failed:
                await asyncio.sleep(backoff)
                backoff = min(backoff * 2, 10.0)

    async def _poll_postgres(self) -> None:
        """While some stream is open, read the log's events above the newest id seen every
        `POLL_S` (or at once after `look_now()` or a notification), and again the ids that
        were missing below it for `HOLE_S` (a report may commit after a later one), and hand
        out what is new. A failed poll makes every stream read the log itself, and the next
        poll looks back `LOOKBACK` ids on a new connection."""
        import asyncpg

        conn: asyncpg.Connection | None = None
        newest: int | None = None
        holes: dict[int, float] = {}  # id missing below `newest` -> when first missed
        try:
            while True:
                started = time.monotonic()
                # Before the read: a report committed from here on asks for the next poll.
                self._look_asked = False
                if self._open:
                    try:
                        if conn is None or conn.is_closed():
                            conn = await asyncpg.connect(self._dsn, timeout=10)
                        if newest is None:
                            # The last `LOOKBACK` ids count as missing: what came while
                            # nobody polled; the streams drop what they replayed or what
                            # predates them.
                            newest = int(await conn.fetchval(_NEWEST_SQL))
                            now = time.monotonic()
                            holes = {
                                i: now for i in range(max(newest - LOOKBACK, 0) + 1, newest + 1)
                            }
                        missing = list(holes)
                        lowest = min(missing, default=newest + 1)
                        rows = await conn.fetch(_POLL_SQL, newest, missing, lowest, 4 * PAGE)
                        self.polls += 1
                    except Exception as exc:
                        log.warning("event hub: cannot poll the event log (%s)", exc)
                        newest = None
                        if conn is not None:
                            with contextlib.suppress(Exception):
                                await asyncio.shield(conn.close(timeout=2))
                            conn = None
                        self.wake_all()
                        await asyncio.sleep(0.5)  # a database that is down: not every 20 ms
                        continue
                    newest = self._take_polled(rows, newest, holes)
                else:
                    newest = None  # streams that open later replay by themselves
                with contextlib.suppress(TimeoutError):
                    # No stream open: nothing to poll for until one opens (subscribe wakes
                    # this), instead of waking every POLL_S in every idle API worker.
                    async with asyncio.timeout(POLL_S if self._open else None):
                        await self._look.wait()
                self._look.clear()
                gap = POLL_GAP_S - (time.monotonic() - started)
                if gap > 0:
                    await asyncio.sleep(gap)
        finally:
            if conn is not None:
                with contextlib.suppress(Exception):
                    await asyncio.shield(conn.close(timeout=2))

    def _take_polled(self, rows: list[Any], newest: int, holes: dict[int, float]) -> int:
        """Hand out what the poll found; note the ids it skipped; the new newest id."""
        now = time.monotonic()
        top = newest
        found: set[int] = set()
        for event_id, task_id, event_type, data, task_type, episode_id in rows:
            holes.pop(event_id, None)
            found.add(event_id)
            top = max(top, event_id)
            if event_id in self._seen or not (task_id in self._by_task or self._everything):
                continue
            self._seen.add(event_id)
            if event_type == PROGRESS_EVENT and event_id < self._last.get(task_id, 0):
                continue  # superseded by a later event handed over by this process
            body = json.loads(data)
            self._hand_out(
                LoggedEvent(
                    stream_event(event_id, event_type, body),
                    task_id,
                    _status_of(body),
                    task_type,
                    episode_id,
                )
            )
        for event_id in range(newest + 1, top):
            if event_id not in found:
                holes[event_id] = now
        for event_id in [i for i, at in holes.items() if now - at > HOLE_S]:
            del holes[event_id]
        while len(holes) > LOOKBACK:  # a burst of rewrites: forget the oldest
            del holes[min(holes)]
        return top

    async def _poll_sqlite(self) -> None:
        last = -1
        while True:
            if self.subscriptions:
                try:
                    current = await anyio.to_thread.run_sync(self.reader.last_id)
                except Exception as exc:  # a locked or busy file: look again next time
                    log.warning("event hub: cannot read the event log (%s)", exc)
                else:
                    if current != last:
                        last = current
                        self.wake_all()
            await asyncio.sleep(SQLITE_POLL_S)


def _setter(event: asyncio.Event) -> Callable[[object], None]:
    """A callback that sets `event` (asyncpg's termination listener)."""
    return lambda _conn: event.set()


class SentIds:
    """The ids an all-task stream sent lately, so that a late-committed event is sent once."""

    def __init__(self, size: int = 10_000) -> None:
        self._order: deque[int] = deque()
        self._ids: set[int] = set()
        self._size = size

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def add(self, event_id: int) -> None:
        self._ids.add(event_id)
        self._order.append(event_id)
        while len(self._order) > self._size:
            self._ids.discard(self._order.popleft())


class EventStreamService:
    """Opens event streams: `check_task` before answering, then `follow`."""

    def __init__(self, hub: EventHub, reader: EventReader) -> None:
        self.hub = hub
        self.reader = reader

    async def check_task(self, task_id: uuid.UUID) -> None:
        """NotFoundError (404) for an unknown task, before the stream's 200 goes out."""
        await anyio.to_thread.run_sync(self.reader.task_status, task_id)

    async def follow(
        self, where: EventFilter, *, last_event_id: int | None, keepalive_s: float
    ) -> AsyncIterator[StreamEvent | KeepAlive]:
        """The events for `where`: after `last_event_id` (a task's stream without it: all of
        the task's; the all-task stream without it: from now on), then live.

        A task's stream ends after its terminal event (done, failed, cancelled) unless the
        task went on since (a retry). If the task had already ended and the client has seen
        everything, its last status event is sent again as its current state, then the end.
        """
        # Before reading: nothing is missed.
        subscription = self.hub.subscribe(where.task_id, where)
        try:
            if where.task_id is not None:
                async for item in self._follow_task(
                    where, subscription, last_event_id or 0, keepalive_s
                ):
                    yield item
            else:
                async for item in self._follow_all(where, subscription, last_event_id, keepalive_s):
                    yield item
        finally:
            self.hub.unsubscribe(subscription)

    async def _read(self, where: EventFilter, **kwargs: Any) -> list[StreamEvent]:
        read: Callable[..., list[StreamEvent]] = self.reader.read
        return await anyio.to_thread.run_sync(lambda: read(where, **kwargs))

    async def _wait(self, subscription: Subscription, keepalive_s: float) -> bool:
        """True when woken, False when a keep-alive interval passed in silence."""
        if self.hub.closed:
            return True
        try:
            async with asyncio.timeout(keepalive_s):  # no task per wait, as wait_for makes
                await subscription.wake.wait()
        except TimeoutError:
            return False
        return True

    async def _follow_task(
        self, where: EventFilter, subscription: Subscription, cursor: int, keepalive_s: float
    ) -> AsyncIterator[StreamEvent | KeepAlive]:
        assert where.task_id is not None
        task_id = where.task_id
        replaying = True
        handed: list[StreamEvent] | None = None  # None: read the log
        while True:
            if handed is None:
                batch = await self._read(where, after_id=cursor)
            else:
                batch = [event for event in handed if event.id > cursor]
            for event in batch:
                yield event
            if batch:
                cursor = batch[-1].id
                if handed is None and len(batch) == PAGE:
                    continue  # a long backlog: the next page at once
                if batch[-1].type in TERMINAL_EVENT_TYPES:
                    return
            if replaying:
                replaying = False
                # The task ended before what the client has seen (or before the log
                # existed): its final state again, then the end.
                final = await anyio.to_thread.run_sync(self.reader.final_state, task_id)
                if final is not None:
                    yield final
                    return
            woken = await self._wait(subscription, keepalive_s)
            if not woken:
                yield KEEPALIVE  # and the next read catches up whatever was missed
            if self.hub.closed:
                return
            events, catch_up = subscription.take()
            handed = events if woken and not catch_up else None

    async def _follow_all(
        self,
        where: EventFilter,
        subscription: Subscription,
        last_event_id: int | None,
        keepalive_s: float,
    ) -> AsyncIterator[StreamEvent | KeepAlive]:
        cursor = (
            last_event_id
            if last_event_id is not None
            else await anyio.to_thread.run_sync(self.reader.last_id)
        )
        start = cursor  # events up to here predate the stream, or the client has them
        sent = SentIds()
        handed: list[StreamEvent] = []
        catch_up = True
        while True:
            batch: list[StreamEvent] = [event for event in handed if event.id > start]
            if catch_up:
                batch += await self._read(where, after_id=cursor)
            for event in sorted({e.id: e for e in batch}.values(), key=lambda e: e.id):
                if event.id in sent:
                    continue
                sent.add(event.id)
                cursor = max(cursor, event.id)
                yield event
            if catch_up and len(batch) >= PAGE:
                handed = []
                continue  # a long backlog: the next page at once
            woken = await self._wait(subscription, keepalive_s)
            if self.hub.closed:
                return
            handed, catch_up = subscription.take()
            if not woken:
                yield KEEPALIVE
                catch_up = True
