"""`domain.polling_threads.PollingThreads`, the loop under the flow-run dispatcher and the
webhook deliverer: when a thread looks again, what survives a failing pass, and what a
stop and a restart leave running. Real threads; every wait is for an event, with a bound."""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Callable, Iterator

import pytest
from sqlalchemy.exc import OperationalError

from domain.polling_threads import PollingThreads

BOUND_S = 10.0  # no wait below ever takes this long unless the behaviour is broken


class Work:
    """A pass that records itself and does what the test scripts for the next passes."""

    def __init__(self, script: list[Callable[[], bool]] | None = None) -> None:
        self.script = script or []
        self.passes = 0
        self.lock = threading.Condition()

    def __call__(self, _resource: None) -> bool:
        with self.lock:
            self.passes += 1
            step = self.script.pop(0) if self.script else (lambda: False)
            self.lock.notify_all()
        return step()

    def wait_passes(self, count: int) -> None:
        with self.lock:
            assert self.lock.wait_for(lambda: self.passes >= count, BOUND_S), self.passes


def threads(work: Work, poll_s: float) -> PollingThreads[None]:
    return PollingThreads("test", work, contextlib.nullcontext, poll_s=poll_s)


@pytest.fixture
def stopped() -> Iterator[list[PollingThreads[None]]]:
    made: list[PollingThreads[None]] = []
    yield made
    for each in made:
        each.stop(BOUND_S)


def test_a_pass_that_found_work_is_followed_at_once(stopped: list[PollingThreads[None]]) -> None:
    """Three passes that find work, then idle: all four run although the poll is an hour."""
    work = Work([lambda: True, lambda: True, lambda: True])
    loop = threads(work, poll_s=3600)
    stopped.append(loop)
    loop.start(1)
    work.wait_passes(4)


def test_notify_wakes_an_idle_thread_before_its_poll(stopped: list[PollingThreads[None]]) -> None:
    work = Work()
    loop = threads(work, poll_s=3600)
    stopped.append(loop)
    loop.start(1)
    work.wait_passes(1)  # now idle for an hour
    loop.notify()
    work.wait_passes(2)


def test_a_notify_while_every_thread_is_busy_is_kept(stopped: list[PollingThreads[None]]) -> None:
    """The notification comes while the only thread is inside a pass: when that pass ends
    (finding nothing) the thread looks once more instead of sleeping through it."""
    inside, release = threading.Event(), threading.Event()

    def busy() -> bool:
        inside.set()
        assert release.wait(BOUND_S)
        return False

    work = Work([busy])
    loop = threads(work, poll_s=3600)
    stopped.append(loop)
    loop.start(1)
    assert inside.wait(BOUND_S)
    loop.notify()
    release.set()
    work.wait_passes(2)


@pytest.mark.parametrize(
    "error",
    [OperationalError("SELECT 1", {}, Exception("connection refused")), RuntimeError("a bug")],
    ids=["database away", "bug"],
)
def test_a_failing_pass_keeps_the_thread(
    stopped: list[PollingThreads[None]], error: Exception
) -> None:
    def fail() -> bool:
        raise error

    work = Work([fail, fail])
    loop = threads(work, poll_s=0.01)
    stopped.append(loop)
    loop.start(1)
    work.wait_passes(3)
    assert loop.running == 1


def test_stop_lets_the_current_pass_finish_and_starts_no_other() -> None:
    inside, release = threading.Event(), threading.Event()
    finished = threading.Event()

    def long_pass() -> bool:
        inside.set()
        assert release.wait(BOUND_S)
        finished.set()
        return True  # "found work": without the stop it would go on at once

    work = Work([long_pass])
    loop = threads(work, poll_s=3600)
    loop.start(1)
    assert inside.wait(BOUND_S)
    stopper = threading.Thread(target=loop.stop, args=(BOUND_S,))
    stopper.start()
    release.set()
    stopper.join(BOUND_S)
    assert finished.is_set() and not stopper.is_alive()
    assert loop.running == 0 and work.passes == 1


def test_a_thread_that_outlasted_stop_ends_after_its_pass_even_once_restarted() -> None:
    """`stop()` gave up waiting for a thread stuck in a pass, then `start()` ran again: the
    old thread must end after that pass (and see itself stopping inside it) rather than
    keep looping beside the new ones."""
    inside, release = threading.Event(), threading.Event()
    seen: dict[str, bool] = {}
    old_thread: list[threading.Thread] = []
    loop: PollingThreads[None]

    def stuck() -> bool:
        old_thread.append(threading.current_thread())
        inside.set()
        assert release.wait(BOUND_S)
        seen["stopping"] = loop.stopping
        return True

    work = Work([stuck])
    loop = threads(work, poll_s=0.01)
    loop.start(1)
    assert inside.wait(BOUND_S)
    loop.stop(timeout_s=0.05)  # gives up: the pass is still stuck
    assert loop.running == 0
    loop.start(1)
    try:
        work.wait_passes(3)  # the new thread is polling
        release.set()
        old_thread[0].join(BOUND_S)
        assert not old_thread[0].is_alive()
        assert seen == {"stopping": True}
        assert loop.running == 1 and not loop.stopping
    finally:
        loop.stop(BOUND_S)
    assert loop.stopping
