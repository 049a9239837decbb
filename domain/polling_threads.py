"""Background threads that poll the database for due work: the one loop both outboxes use.

The flow-run dispatcher (`domain.dispatch`) and the webhook deliverer (`domain.webhooks`)
each run a few daemon threads in every API process that claim due rows (`FOR UPDATE SKIP
LOCKED` and a lease) and act on them. What those threads share is here, so that both
behave the same when it matters: a pass that found work is followed at once by another; an
idle thread waits `poll_s` or until `notify()` (a notification that came while every
thread was busy is kept: the next thread to go idle makes one more pass); a database that
is away is logged and retried, never fatal; a bug in a pass keeps its traceback and the
thread; `stop()` lets the current passes finish and leaves everything else as rows for the
next start.
"""

from __future__ import annotations

import contextlib
import logging
import threading
from collections.abc import Callable
from typing import Generic, TypeVar

from sqlalchemy.exc import OperationalError

log = logging.getLogger(__name__)

__all__ = ["PollingThreads"]

R = TypeVar("R")


class PollingThreads(Generic[R]):
    """`count` threads named `name-N`, each running `work(resource)` until stopped.

    `resource` makes what one thread keeps for all its passes (the webhook deliverer's HTTP
    client; `contextlib.nullcontext` when there is none), closed when the thread ends.
    `work` returns whether it found something, so that a busy thread does not wait.
    """

    def __init__(
        self,
        name: str,
        work: Callable[[R], bool],
        resource: Callable[[], contextlib.AbstractContextManager[R]],
        *,
        poll_s: float,
    ) -> None:
        self.name = name
        self.work = work
        self.resource = resource
        self.poll_s = poll_s
        self._wake = threading.Condition()
        #: A `notify()` no idle thread took yet: the next thread to go idle looks again.
        self._notified = False
        #: The current threads' stop signal. Each `start()` makes a new one and each thread
        #: keeps its own: a thread still in its pass when `stop()` gave up waiting for it
        #: ends after that pass, even if `start()` has run again meanwhile (clearing one
        #: shared event would have kept it looping beside the new threads).
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._own_stop = threading.local()

    @property
    def stopping(self) -> bool:
        """Set by `stop()`: a pass should not begin new work (asked from a pass: its own
        thread's signal, so a pass left over from before a restart stops too)."""
        stop: threading.Event = getattr(self._own_stop, "event", self._stop)
        return stop.is_set()

    @property
    def running(self) -> int:
        return sum(thread.is_alive() for thread in self._threads)

    def start(self, count: int) -> None:
        """Start `count` threads; nothing if this set's threads still run (idempotent)."""
        if self.running and not self._stop.is_set():
            return
        self._stop = stop = threading.Event()
        self._threads = [
            threading.Thread(
                target=self._loop, args=(stop,), name=f"{self.name}-{n}", daemon=True
            )
            for n in range(count)
        ]
        for thread in self._threads:
            thread.start()

    def stop(self, timeout_s: float = 15.0) -> None:
        """Wake every thread, let its current pass finish, wait for it (`timeout_s` each).
        A thread that outlasts the wait ends after its pass (it is no longer counted)."""
        self._stop.set()
        with self._wake:
            self._wake.notify_all()
        for thread in self._threads:
            thread.join(timeout_s)
        self._threads = []

    def notify(self) -> None:
        """Something is due now: one idle thread looks rather than at its next poll."""
        with self._wake:
            self._notified = True
            self._wake.notify()

    def _loop(self, stop: threading.Event) -> None:
        self._own_stop.event = stop
        with self.resource() as resource:
            while not stop.is_set():
                try:
                    worked = self.work(resource)
                except OperationalError as exc:  # the database is away: say so, look again
                    log.warning("%s: database unavailable (%s); retrying", self.name, exc.orig)
                    worked = False
                except Exception:  # a bug: keep the traceback, keep the thread
                    log.exception("%s: pass failed; retrying in %.1f s", self.name, self.poll_s)
                    worked = False
                if not worked:
                    with self._wake:
                        if not self._notified:
                            self._wake.wait(self.poll_s)
                        self._notified = False
