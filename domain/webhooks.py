"""Signed webhooks for task events, delivered from the event log like an outbox.

* What is sent: each status event webhooks carry (`domain.events.WEBHOOK_EVENT_TYPES`) to
  the task's `callback_url` and to every `AUDIOFLOW_WEBHOOK_URLS`, as
  `{"type", "timestamp", "data"}` (`data`: the task as `GET /tasks/{id}` showed it then),
  signed per Standard Webhooks (the `standardwebhooks` library): `webhook-id` (one per
  delivery, the same on every attempt, so a receiver can deduplicate on it),
  `webhook-timestamp`, `webhook-signature` (HMAC-SHA256 of `id.timestamp.body`).
* Nothing is lost: an event is written with `fanout_pending` in the transaction of its
  change; a delivery thread turns it into one `webhook_deliveries` row per URL and clears
  the flag in one transaction; a row stays pending until it is answered with a 2xx or its
  schedule is spent. A process that dies leaves rows for the next (its lease runs out).
  A process without the secret touches no flag (it could send nothing); an event that
  waited longer than `max_event_age_s` for one with it is dropped, logged, not sent.
* When: a committed webhook event wakes a delivery thread of every API process at once
  (the event hub's notification, `domain.event_stream`, calls `event_committed`); the
  threads' poll (`AUDIOFLOW_WEBHOOK_POLL_S`) is the fallback and the retries' clock.
* Never twice at once: rows are claimed with `FOR UPDATE SKIP LOCKED` and leased
  (`next_attempt_at` pushed past one attempt's longest time) in a short transaction, as
  the flow-run dispatcher claims workflows (`domain.dispatch`); a new event's deliveries
  are leased to the thread that makes them, in the fan-out's transaction (their first
  attempt needs no claim). A thread sends what it took one after another, each only while
  its lease still outlasts a whole attempt, and releases the rest.
* Cheap: fan-out, claim and attempt records are Core statements built once (no ORM object
  per row), a pass's attempts are recorded in one transaction, and a pass that found less
  than it could take is not followed by an empty one.
* Retries: `AUDIOFLOW_WEBHOOK_RETRY_SCHEDULE_S` (default attempts at 0 s, 5 s, 15 s, then
  backing off to 12 h; the last about 27.6 h after the first). Every attempt is recorded
  on its row (time, status code, error, duration, the first 256 characters of the answer).
* Safety: `domain.webhook_urls` (public addresses only unless allowed, checked again before
  each attempt and connected to as checked), no redirects followed, short timeouts (name
  resolution included), at most `WebhookSettings.attempt_limit_s` per attempt (which the
  claim's lease outlasts), and no more of the answer read than the excerpt.
"""

from __future__ import annotations

import functools
import ipaddress
import json
import logging
import time
import uuid
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from concurrent.futures import TimeoutError as FutureTimeout
from dataclasses import dataclass
from datetime import timedelta
from typing import Any, cast
from urllib.parse import urlsplit, urlunsplit

import httpx
from sqlalchemy import Table, bindparam, insert, or_, select, update
from sqlalchemy.engine import Engine
from sqlalchemy.exc import DBAPIError
from sqlalchemy.orm import Session, sessionmaker
from standardwebhooks.webhooks import Webhook

from core.errors import ConflictError, InvalidInputError, NotFoundError
from core.settings import WebhookSettings
from db.base import utcnow
from db.engine import autocommit_engine
from db.models import DeliveryStatus, Task, TaskEvent, WebhookDelivery, without_nul
from db.repositories import TaskRepository
from domain.events import WEBHOOK_EVENT_TYPES
from domain.polling_threads import PollingThreads
from domain.webhook_urls import UnsafeUrlError, resolve_allowed

log = logging.getLogger(__name__)

__all__ = ["WebhookDeliverer", "WebhookService", "check_callback_url", "webhook_body"]

_EVENTS = cast(Table, TaskEvent.__table__)
_DELIVERIES = cast(Table, WebhookDelivery.__table__)
_TASKS = cast(Table, Task.__table__)

#: Characters of a receiver's answer kept on the attempt (no more is read).
EXCERPT_CHARS = 256
#: Attempts kept on a row (the oldest go first); the schedule makes 12 by default.
MAX_LOGGED_ATTEMPTS = 50
#: Events turned into deliveries per transaction.
FANOUT_BATCH = 100
#: Deliveries one delivery thread takes in one pass (leased by its fan-out or claimed),
#: sent one after another.
CLAIM_BATCH = 16

#: Name resolution off the delivery threads, so that an attempt waits for it no longer
#: than its timeout (`getaddrinfo` has no timeout of its own: the resolver's can add up to
#: tens of seconds, longer than a claim's lease). A resolution given up on finishes in
#: its pool thread; a handful are enough, as answers come from the resolver's cache.
_RESOLVER = ThreadPoolExecutor(max_workers=4, thread_name_prefix="audioflow-webhook-dns")


@functools.lru_cache(maxsize=256)
def _numeric_host(url: str) -> bool:
    """Whether the URL's host is an IP address (resolving it asks no resolver)."""
    try:
        ipaddress.ip_address(urlsplit(url).hostname or "")
    except ValueError:
        return False
    return True


def check_callback_url(url: str, settings: WebhookSettings) -> None:
    """A task's `callbackUrl` at submission: webhooks must be on, the URL allowed (422)."""
    if not settings.enabled:
        raise InvalidInputError(
            "callbackUrl needs webhooks, which are off on this server: "
            "AUDIOFLOW_WEBHOOK_SECRET is not set"
        )
    resolve_allowed(url, allow_private=settings.allow_private)


def _iso(value: Any) -> str:
    return str(value.isoformat()).replace("+00:00", "Z")


def webhook_body(event: TaskEvent) -> str:
    """The body sent for an event: the same bytes on every attempt."""
    return _body(event.type, event.created_at, event.data)


def _body(event_type: str, created_at: Any, data: Any) -> str:
    return json.dumps(
        {"type": event_type, "timestamp": _iso(created_at), "data": data},
        separators=(",", ":"),
        ensure_ascii=False,
    )


@dataclass(frozen=True)
class Attempt:
    """What one attempt came to."""

    status_code: int | None
    error: str | None
    excerpt: str | None
    duration_ms: int
    #: The URL may not be called (refused address): no retry helps.
    permanent: bool = False

    @property
    def delivered(self) -> bool:
        return self.status_code is not None and 200 <= self.status_code < 300

    def log_entry(self, at: str) -> dict[str, Any]:
        return {
            "at": at,
            "statusCode": self.status_code,
            "error": self.error,
            "durationMs": self.duration_ms,
            "response": self.excerpt,
        }


def _pinned(url: str, address: Any) -> tuple[str, dict[str, str], dict[str, Any]]:
    """The URL with its host replaced by the checked address, the `Host` header, and (for
    https) the TLS server name, so the certificate is still checked against the name."""
    parts = urlsplit(url)
    host = f"[{address}]" if address.version == 6 else str(address)
    netloc = f"{host}:{parts.port}" if parts.port else host
    pinned = urlunsplit((parts.scheme, netloc, parts.path or "/", parts.query, ""))
    host_header = parts.hostname or ""
    if parts.port:
        host_header = f"{host_header}:{parts.port}"
    extensions = {"sni_hostname": parts.hostname} if parts.scheme == "https" else {}
    return pinned, {"Host": host_header}, extensions


def send(
    client: httpx.Client,
    settings: WebhookSettings,
    signer: Webhook,
    url: str,
    message_id: str,
    body: str,
) -> Attempt:
    """One signed POST of `body` to `url`; never raises for what the receiver does."""
    started = time.monotonic()

    def elapsed_ms() -> int:
        return int((time.monotonic() - started) * 1000)

    try:
        if _numeric_host(url):  # nothing to look up: no hand-off to the resolver's pool
            addresses = resolve_allowed(url, allow_private=settings.allow_private)
        else:
            addresses = _RESOLVER.submit(
                resolve_allowed, url, allow_private=settings.allow_private
            ).result(timeout=settings.timeout_s)
    except FutureTimeout:
        return Attempt(None, "name resolution timed out", None, elapsed_ms())
    except UnsafeUrlError as exc:
        refused = "non-public" in exc.detail
        return Attempt(None, exc.detail, None, elapsed_ms(), permanent=refused)
    now = utcnow()
    target, headers, extensions = _pinned(url, addresses[0])
    headers.update(
        {
            "content-type": "application/json",
            "user-agent": "audioflow-webhooks",
            "webhook-id": message_id,
            "webhook-timestamp": str(int(now.timestamp())),
            "webhook-signature": signer.sign(message_id, now, body),
        }
    )
    deadline = started + 2 * settings.timeout_s
    try:
        request = client.build_request(
            "POST", target, content=body.encode(), headers=headers, extensions=extensions
        )
        response = client.send(request, stream=True, follow_redirects=False)
        try:
            excerpt = bytearray()
            for chunk in response.iter_raw():
                excerpt += chunk
                if len(excerpt) >= EXCERPT_CHARS or time.monotonic() > deadline:
                    break
        finally:
            response.close()
    except httpx.HTTPError as exc:
        return Attempt(None, f"{type(exc).__name__}: {exc}"[:500], None, elapsed_ms())
    text = without_nul(bytes(excerpt).decode("utf-8", "replace")[:EXCERPT_CHARS])
    code = response.status_code
    error = None
    if 300 <= code < 400:
        error = f"redirect not followed (to {response.headers.get('location', '?')[:200]})"
    elif not 200 <= code < 300:
        error = f"HTTP {code}"
    return Attempt(code, error, text, elapsed_ms())


@dataclass(frozen=True)
class Claimed:
    """A delivery leased to one thread: what its attempt sends, and its attempts so far
    (while the lease holds, no one else writes the row)."""

    id: uuid.UUID
    url: str
    body: str
    attempts: int = 0
    attempt_log: tuple[dict[str, Any], ...] = ()

    @property
    def webhook_id(self) -> str:
        """`WebhookDelivery.webhook_id`: the same on every attempt."""
        return f"msg_{self.id.hex}"


#: Fan-out's read: the flagged events, oldest first, with their task's callback URL. Only
#: the events are locked (`OF`): a task row stays free for its next status change.
_FLAGGED = (
    select(
        _EVENTS.c.id,
        _EVENTS.c.task_id,
        _EVENTS.c.type,
        _EVENTS.c.created_at,
        _EVENTS.c.data,
        _TASKS.c.callback_url,
    )
    .join(_TASKS, _TASKS.c.id == _EVENTS.c.task_id)
    .where(_EVENTS.c.fanout_pending)
    .order_by(_EVENTS.c.id)
    .limit(FANOUT_BATCH)
    .with_for_update(of=_EVENTS, skip_locked=True)
)
_UNFLAG = (
    update(_EVENTS)
    .where(_EVENTS.c.id.in_(bindparam("ids", expanding=True)))
    .values(fanout_pending=False)
)
_INSERT_DELIVERIES = insert(_DELIVERIES)
#: The claim's read: the most overdue pending deliveries with their event (the body), the
#: deliveries locked (`OF`), those another thread holds skipped.
_DUE = (
    select(
        _DELIVERIES.c.id,
        _DELIVERIES.c.url,
        _DELIVERIES.c.attempts,
        _DELIVERIES.c.attempt_log,
        _EVENTS.c.type,
        _EVENTS.c.created_at,
        _EVENTS.c.data,
    )
    .join(_EVENTS, _EVENTS.c.id == _DELIVERIES.c.event_id)
    .where(
        _DELIVERIES.c.status == DeliveryStatus.PENDING,
        or_(
            _DELIVERIES.c.next_attempt_at.is_(None),
            _DELIVERIES.c.next_attempt_at <= bindparam("now"),
        ),
    )
    .order_by(_DELIVERIES.c.next_attempt_at)
    .limit(bindparam("limit"))
    .with_for_update(of=_DELIVERIES, skip_locked=True)
)
_LEASE = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id.in_(bindparam("ids", expanding=True)))
    .values(next_attempt_at=bindparam("until"))
)
#: Deliveries a thread took but will not send (it stops, or its lease would not cover
#: another attempt): due again at once, for any thread.
_RELEASE = (
    update(_DELIVERIES)
    .where(
        _DELIVERIES.c.id.in_(bindparam("ids", expanding=True)),
        _DELIVERIES.c.status == DeliveryStatus.PENDING,
    )
    .values(next_attempt_at=bindparam("now"))
)
_RECORD = (
    update(_DELIVERIES)
    .where(_DELIVERIES.c.id == bindparam("r_id"))
    .values(
        attempts=bindparam("r_attempts"),
        attempt_log=bindparam("r_log", type_=_DELIVERIES.c.attempt_log.type),
        last_status_code=bindparam("r_code"),
        last_error=bindparam("r_error"),
        status=bindparam("r_status", type_=_DELIVERIES.c.status.type),
        delivered_at=bindparam("r_delivered_at", type_=_DELIVERIES.c.delivered_at.type),
        next_attempt_at=bindparam("r_next", type_=_DELIVERIES.c.next_attempt_at.type),
        updated_at=bindparam("r_now", type_=_DELIVERIES.c.updated_at.type),
    )
)


class WebhookDeliverer:
    """Turns webhook events into deliveries and sends them; threads in each API process.

    A pass (one thread): the flagged events made into deliveries, the first `CLAIM_BATCH`
    of them leased to the thread in the same transaction (no claim for a new event's first
    attempt); then, when that left room and at least every `poll_s`, the most overdue
    deliveries claimed; all of them sent one after another and their attempts recorded
    together. A pass that took less than it could is not followed by another at once: the
    next event's notification, a redelivery or the poll wakes a thread.
    """

    def __init__(self, session_factory: sessionmaker[Session], settings: WebhookSettings) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.signer = Webhook(settings.secret) if settings.secret else None
        self._threads = PollingThreads[httpx.Client](
            "audioflow-webhooks", self._pass, self._client, poll_s=settings.poll_s
        )
        #: When a pass last claimed due deliveries (`time.monotonic()`, any thread).
        self._claimed_at = 0.0
        bind = session_factory.kw.get("bind")
        #: PostgreSQL: the autocommit pool the attempts are recorded on (`_write`).
        self._autocommit = autocommit_engine(bind) if isinstance(bind, Engine) else None

    # -- the background loop (domain.polling_threads) ----------------------------------------

    def start(self) -> None:
        """Start the threads (the API's lifespan); idempotent. Without a secret none: the
        events keep their flags for a process that has it (one API process configured
        without the secret must not drop what the others would send); what waits longer
        than `max_event_age_s` is dropped by that process instead of sent."""
        if self.signer is None:
            log.info("webhooks off (no AUDIOFLOW_WEBHOOK_SECRET): this process sends none")
            return
        self._threads.start(self.settings.threads)

    def stop(self, timeout_s: float = 15.0) -> None:
        """Stop after the current attempts; pending deliveries stay rows for the next start."""
        self._threads.stop(timeout_s)

    def notify(self) -> None:
        """Something is due (a redelivery): a thread looks now rather than at its next poll."""
        self._claimed_at = 0.0  # the next pass claims
        self._threads.notify()

    def event_committed(self, event_type: str) -> None:
        """An event was committed (the event hub's notification, from any process): a
        webhook event wakes a thread, so it goes out now rather than at the next poll."""
        if event_type in WEBHOOK_EVENT_TYPES:
            self._threads.notify()

    def _client(self) -> httpx.Client:
        """One HTTP client per delivery thread, for all its attempts."""
        return httpx.Client(
            follow_redirects=False,
            trust_env=False,
            timeout=httpx.Timeout(self.settings.timeout_s),
        )

    def _pass(self, client: httpx.Client) -> bool:
        """One pass (see the class); whether another should follow at once."""
        if self.signer is None or self._threads.stopping:
            return False
        leased_at = time.monotonic()
        made, mine, left = self._fan_out(CLAIM_BATCH)
        more = made == FANOUT_BATCH or left
        room = CLAIM_BATCH - len(mine)
        if room and (not made or leased_at - self._claimed_at >= self.settings.poll_s):
            self._claimed_at = leased_at
            due = self._claim(room)
            more = more or len(due) == room
            mine += due
        self._send(client, mine, leased_at)
        return more

    # -- fan-out: events -> deliveries ---------------------------------------------------

    def fan_out(self) -> int:
        """One batch of flagged events made into deliveries (one per URL), all due now;
        how many events. See `_fan_out`."""
        return self._fan_out(0)[0]

    def _fan_out(self, take: int) -> tuple[int, list[Claimed], bool]:
        """One batch of flagged events made into deliveries (one per URL), in one
        transaction with Core statements: how many events, the first `take` deliveries
        leased to the caller, and whether more deliveries were left due for any thread.

        Only with the secret (without it nothing could be sent, and the flags are left for
        a process that can). An event flagged for longer than `max_event_age_s` (webhooks
        were off that long) is cleared without deliveries and logged."""
        if self.signer is None:
            return 0, [], False
        now = utcnow()
        oldest = now - timedelta(seconds=self.settings.max_event_age_s)
        until = now + timedelta(seconds=self.settings.claim_lease_s)
        mine: list[Claimed] = []
        rows_out: list[dict[str, Any]] = []
        with self.session_factory.begin() as session:
            rows = session.execute(_FLAGGED).all()
            if not rows:
                return 0, [], False
            stale = [row.id for row in rows if row.created_at < oldest]
            if stale:
                log.warning(
                    "%d webhook event(s) waited over %g s for a process with the webhook "
                    "secret (webhooks were off): dropped, not sent (ids %s)",
                    len(stale),
                    self.settings.max_event_age_s,
                    ", ".join(map(str, stale[:10])) + (" ..." if len(stale) > 10 else ""),
                )
            for row in rows:
                if row.created_at < oldest:
                    continue
                body = None
                for url in self._targets(row.callback_url):
                    delivery_id = uuid.uuid4()
                    leased = len(mine) < take
                    if leased:
                        body = body or _body(row.type, row.created_at, row.data)
                        mine.append(Claimed(delivery_id, url, body))
                    rows_out.append(
                        {
                            "id": delivery_id,
                            "event_id": row.id,
                            "task_id": row.task_id,
                            "event_type": row.type,
                            "url": url,
                            "status": DeliveryStatus.PENDING,
                            "attempts": 0,
                            "next_attempt_at": until if leased else now,
                            "attempt_log": [],
                            "created_at": now,
                            "updated_at": now,
                        }
                    )
            if rows_out:
                session.execute(_INSERT_DELIVERIES, rows_out)
            session.execute(_UNFLAG, {"ids": [row.id for row in rows]})
        return len(rows), mine, len(rows_out) > len(mine)

    def _targets(self, callback_url: str | None) -> list[str]:
        urls = [callback_url] if callback_url else []
        return list(dict.fromkeys([*urls, *self.settings.urls]))

    # -- delivery ------------------------------------------------------------------------

    def _claim(self, limit: int = CLAIM_BATCH) -> list[Claimed]:
        """Lease up to `limit` of the most overdue pending deliveries (one short
        transaction: their rows with their events' bodies, then the lease)."""
        now = utcnow()
        with self.session_factory.begin() as session:
            rows = session.execute(_DUE, {"now": now, "limit": limit}).all()
            if not rows:
                return []
            until = now + timedelta(seconds=self.settings.claim_lease_s)
            session.execute(_LEASE, {"ids": [row.id for row in rows], "until": until})
        return [
            Claimed(
                row.id,
                row.url,
                _body(row.type, row.created_at, row.data),
                row.attempts,
                tuple(row.attempt_log),
            )
            for row in rows
        ]

    def _send(self, client: httpx.Client, claimed: list[Claimed], leased_at: float) -> None:
        """Send what the pass took, one after another; record the attempts together (and
        at least every second while a slow receiver holds the rest back). A delivery is
        sent only while its lease still outlasts a whole attempt; what is left when the
        lease runs short or the threads stop is released for any thread at once."""
        assert self.signer is not None
        last_start = leased_at + self.settings.claim_lease_s - self.settings.attempt_limit_s
        done: list[tuple[Claimed, Attempt]] = []
        recorded_at = time.monotonic()
        for n, delivery in enumerate(claimed):
            if self._threads.stopping or time.monotonic() >= last_start:
                self._release(claimed[n:])
                break
            attempt = send(
                client,
                self.settings,
                self.signer,
                delivery.url,
                delivery.webhook_id,
                delivery.body,
            )
            done.append((delivery, attempt))
            if time.monotonic() - recorded_at > 1.0:
                self._record(done)
                done, recorded_at = [], time.monotonic()
        if done:
            self._record(done)

    def _release(self, deliveries: list[Claimed]) -> None:
        self._write(_RELEASE, {"ids": [d.id for d in deliveries], "now": utcnow()})

    def _record(self, attempts: list[tuple[Claimed, Attempt]]) -> None:
        """The attempts on their rows, and what comes next for each: done, the next try,
        or given up. The rows are still leased to this thread, so what it knew of them
        when it took them is still theirs: one batched update, no read (on PostgreSQL in
        autocommit: each row's update is one statement, and the batch one round trip)."""
        now = utcnow()
        at = _iso(now)
        schedule = self.settings.retry_schedule_s
        params: list[dict[str, Any]] = []
        for delivery, attempt in attempts:
            count = delivery.attempts + 1
            status, delivered_at, due = DeliveryStatus.PENDING, None, None
            if attempt.delivered:
                status, delivered_at = DeliveryStatus.DELIVERED, now
            elif attempt.permanent or count > len(schedule):
                status = DeliveryStatus.FAILED
            else:
                due = now + timedelta(seconds=schedule[count - 1])
            params.append(
                {
                    "r_id": delivery.id,
                    "r_attempts": count,
                    "r_log": [
                        *delivery.attempt_log[-(MAX_LOGGED_ATTEMPTS - 1) :],
                        attempt.log_entry(at),
                    ],
                    "r_code": attempt.status_code,
                    "r_error": without_nul(attempt.error),
                    "r_status": status,
                    "r_delivered_at": delivered_at,
                    "r_next": due,
                    "r_now": now,
                }
            )
        self._write(_RECORD, params)
        for delivery, attempt in attempts:
            if not attempt.delivered:
                log.info("webhook %s to %s: %s", delivery.id, _safe(delivery.url), attempt.error)

    def _write(self, statement: Any, params: Any) -> None:
        """One statement whose rows need no transaction together: on PostgreSQL on the
        autocommit pool (no BEGIN, COMMIT or pool ping: one round trip; a connection the
        server dropped fails once and the statement, which sets absolute values, is run
        again on a new one), elsewhere in a transaction."""
        if self._autocommit is None:
            with self.session_factory.begin() as session:
                session.execute(statement, params)
            return
        for attempt in (1, 2):
            try:
                with self._autocommit.connect() as conn:
                    conn.execute(statement, params)
                return
            except DBAPIError as exc:
                if attempt == 2 or not exc.connection_invalidated:
                    raise


def _safe(url: str) -> str:
    """A URL for the log: no query (it may hold a token)."""
    parts = urlsplit(url)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


class WebhookService:
    """Reading deliveries and asking for one again (the API's endpoints)."""

    def __init__(self, session_factory: sessionmaker[Session], deliverer: WebhookDeliverer) -> None:
        self.session_factory = session_factory
        self.deliverer = deliverer

    def list_for_task(self, task_id: uuid.UUID) -> Sequence[WebhookDelivery]:
        """Every delivery of the task's events, oldest first (404 for an unknown task)."""
        with self.session_factory() as session:
            TaskRepository(session).get_existing(task_id)
            return list(
                session.scalars(
                    select(WebhookDelivery)
                    .where(WebhookDelivery.task_id == task_id)
                    .order_by(WebhookDelivery.event_id, WebhookDelivery.created_at)
                )
            )

    def redeliver(self, delivery_id: uuid.UUID) -> WebhookDelivery:
        """Send a delivered or failed delivery again, with a fresh retry schedule (same
        `webhook-id`: the receiver may deduplicate). A pending one is 409: it is on its way
        (and may be being sent this moment)."""
        if self.deliverer.signer is None:
            raise ConflictError(
                "webhooks are off on this server: AUDIOFLOW_WEBHOOK_SECRET is not set"
            )
        with self.session_factory.begin() as session:
            delivery = session.get(WebhookDelivery, delivery_id, with_for_update=True)
            if delivery is None:
                raise NotFoundError(f"delivery {delivery_id} not found")
            if delivery.status is DeliveryStatus.PENDING:
                due = delivery.next_attempt_at
                raise ConflictError(
                    f"delivery {delivery_id} is pending; its next attempt is due at "
                    f"{_iso(due) if due else 'once claimed'}"
                )
            delivery.status = DeliveryStatus.PENDING
            delivery.attempts = 0
            delivery.next_attempt_at = utcnow()
            delivery.updated_at = utcnow()
            session.flush()
        self.deliverer.notify()
        return delivery
