"""Server-Sent Events: a task's progress and status changes as they are committed.

`GET /tasks/{id}/events` and `GET /events` (all tasks, filtered like `GET /tasks`). Each
event has `id:` (send it back as `Last-Event-ID` to resume), `event:` (its type:
`task.processing`, `task.progress`, `task.done`, ...) and `data:` (JSON with `taskId`,
`type`, `status`, `progress`, `currentStep`; status events add the task). A comment is
sent in every quiet `AUDIOFLOW_SSE_KEEPALIVE_S`. The streams come from
`domain.event_stream`; this module only turns them into SSE messages.
"""

from __future__ import annotations

import asyncio
import json
import signal
import threading
import uuid
from collections.abc import AsyncIterator, Callable
from types import FrameType
from typing import Annotated

from litestar import Controller, Request, get
from litestar.di import NamedDependency
from litestar.params import FromPath, FromQuery, HeaderParameter, QueryParameter
from litestar.response import Stream

from api.errors import error_responses
from core.settings import Settings
from db.models import TaskStatus
from domain.event_stream import (
    EventFilter,
    EventHub,
    EventStreamService,
    KeepAlive,
    StreamEvent,
)

#: Event ids are PostgreSQL BIGINTs.
MAX_EVENT_ID = 2**63 - 1
#: What Litestar's `ServerSentEvent` response sets; proxies must pass each event on at once
#: (nginx buffers responses unless told not to).
STREAM_HEADERS = {
    "Cache-Control": "no-cache",
    "Connection": "keep-alive",
    "X-Accel-Buffering": "no",
}
#: A comment line: the keep-alive.
KEEPALIVE_MESSAGE = b": keep-alive\r\n\r\n"

LastEventId = Annotated[
    int | None,
    HeaderParameter(
        name="Last-Event-ID",
        required=False,
        ge=0,
        le=MAX_EVENT_ID,
        description="The id of the last event received: the stream resumes after it.",
    ),
]


def encode_event(event: StreamEvent) -> bytes:
    """One SSE message, as Litestar's `ServerSentEventMessage.encode` writes it, in one
    format call: its encoder runs three regular expressions and a StringIO per message, on
    every stream. One `data:` line is enough: compact JSON holds no line break, and types
    are ours."""
    data = json.dumps(event.data, separators=(",", ":"))
    return f"id: {event.id}\r\nevent: {event.type}\r\ndata: {data}\r\n\r\n".encode()


async def _messages(stream: AsyncIterator[StreamEvent | KeepAlive]) -> AsyncIterator[bytes]:
    async for item in stream:
        yield KEEPALIVE_MESSAGE if isinstance(item, KeepAlive) else encode_event(item)


def _event_stream(stream: AsyncIterator[StreamEvent | KeepAlive]) -> Stream:
    return Stream(_messages(stream), media_type="text/event-stream", headers=STREAM_HEADERS)


def end_streams_on_shutdown(hub: EventHub) -> None:
    """Make the server's shutdown signals (SIGTERM, SIGINT) end the open streams first.

    uvicorn stops by waiting for open responses to finish before the app's shutdown runs,
    and an event stream does not finish by itself: a deploy's SIGTERM would wait for every
    subscriber to hang up. The handlers uvicorn installed are chained, not replaced (it
    restores its predecessors on exit). Only from the main thread, where signal handlers
    live; elsewhere (an in-process test client) there are no signals to chain.
    """
    if threading.current_thread() is not threading.main_thread():
        return
    loop = asyncio.get_running_loop()
    for signum in (signal.SIGTERM, signal.SIGINT):
        previous = signal.getsignal(signum)
        if not callable(previous):
            continue
        signal.signal(signum, _chained(loop, hub, previous))


def _chained(
    loop: asyncio.AbstractEventLoop,
    hub: EventHub,
    previous: Callable[[int, FrameType | None], object],
) -> Callable[[int, FrameType | None], None]:
    def handler(signum: int, frame: FrameType | None) -> None:
        loop.call_soon_threadsafe(hub.close)
        previous(signum, frame)

    return handler


def _keepalive_s(request: Request) -> float:
    settings: Settings = request.app.state.settings
    return settings.api.sse_keepalive_s


class EventController(Controller):
    """The event streams (behind the API key like every public endpoint)."""

    path = "/"
    tags = ["events"]

    @get(
        "/tasks/{task_id:uuid}/events",
        media_type="text/event-stream",
        response_description="Server-Sent Events",
        responses=error_responses(400, 401, 404),
    )
    async def task_events(
        self,
        request: Request,
        task_id: FromPath[uuid.UUID],
        event_stream: NamedDependency[EventStreamService],
        last_event_id: LastEventId = None,
    ) -> Stream:
        """The task's progress and status changes, live; ends after its last event.

        Without `Last-Event-ID` the task's events so far come first. The stream ends after
        the task is done, failed or cancelled (already ended: its events, or with a
        `Last-Event-ID` past them its final status event again, then the end).
        """
        await event_stream.check_task(task_id)
        stream = event_stream.follow(
            EventFilter(task_id=task_id),
            last_event_id=last_event_id,
            keepalive_s=_keepalive_s(request),
        )
        return _event_stream(stream)

    @get(
        "/events",
        media_type="text/event-stream",
        response_description="Server-Sent Events",
        responses=error_responses(400, 401),
    )
    async def all_events(
        self,
        request: Request,
        event_stream: NamedDependency[EventStreamService],
        status: FromQuery[TaskStatus | None] = None,
        task_type: Annotated[str | None, QueryParameter(name="type", required=False)] = None,
        episode_id: Annotated[str | None, QueryParameter(name="episodeId", required=False)] = None,
        last_event_id: LastEventId = None,
    ) -> Stream:
        """Every task's events, live, filtered like `GET /tasks` (`status`: the event's).

        Without `Last-Event-ID` it starts from now; it never ends on its own.
        """
        stream = event_stream.follow(
            EventFilter(status=status, task_type=task_type, episode_id=episode_id),
            last_event_id=last_event_id,
            keepalive_s=_keepalive_s(request),
        )
        return _event_stream(stream)
