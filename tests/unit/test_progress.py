"""Progress weighting, throttling and delivery of WorkflowProgressReporter."""

from __future__ import annotations

import threading
from typing import Any

import httpx
import pytest

from flows.progress import (
    HttpSender,
    ProgressPlan,
    ReportRefusedError,
    WorkflowProgressReporter,
)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_plan_weights_steps_and_reaches_100_only_when_all_done() -> None:
    plan = ProgressPlan.for_run(["mp3_128", "mp3_320"], transcribe=True)
    assert list(plan.weights) == [
        "download",
        "encode:mp3_128",
        "encode:mp3_320",
        "transcribe",
        "upload",
    ]
    total = sum(plan.weights.values())
    plan.set("download", 1.0)
    assert plan.percent == int(100 * plan.weights["download"] / total)
    plan.set("encode:mp3_128", 0.5)
    expected = (plan.weights["download"] + 0.5 * plan.weights["encode:mp3_128"]) / total
    assert plan.percent == int(100 * expected)
    for step in plan.weights:
        if step != "upload":
            plan.set(step, 1.0)
    plan.set("upload", 0.999)
    assert plan.percent == 99  # rounding never claims 100 before the last step ends
    plan.set("upload", 1.0)
    assert plan.percent == 100


def test_plan_never_lowers_a_step_and_clamps() -> None:
    plan = ProgressPlan.for_run(["flac"], transcribe=False)
    plan.set("encode:flac", 0.8)
    plan.set("encode:flac", 0.3)
    assert plan.fractions["encode:flac"] == 0.8
    plan.set("download", 7.0)
    assert plan.fractions["download"] == 1.0
    with pytest.raises(KeyError, match="transcribe"):
        plan.set("transcribe", 0.5)


def test_transcription_weighs_more_than_an_encode() -> None:
    plan = ProgressPlan.for_run(["mp3_128"], transcribe=True)
    assert plan.weights["transcribe"] > plan.weights["encode:mp3_128"]


def test_reporter_throttles_to_one_update_per_interval() -> None:
    sent: list[dict[str, Any]] = []
    clock = FakeClock()
    reporter = WorkflowProgressReporter(
        "t",
        "w",
        ProgressPlan.for_run(["mp3_128"], False),
        sent.append,
        min_interval_s=1.0,
        clock=clock,
    )
    for n in range(100):
        clock.now = n * 0.05  # 100 ticks over 5 s
        reporter.update("encode:mp3_128", n / 100)
    assert 4 <= len(sent) <= 6
    assert [b["progress"] for b in sent] == sorted(b["progress"] for b in sent)
    assert all(b["taskId"] == "t" and b["workflowId"] == "w" for b in sent)
    reporter.finish_step("encode:mp3_128")
    assert sent[-1]["step"] == "encode:mp3_128"


def test_a_lost_report_never_raises_and_a_refused_one_stops_reporting() -> None:
    calls: list[dict[str, Any]] = []

    def flaky(body: dict[str, Any]) -> None:
        calls.append(body)
        raise ConnectionError("API down")

    reporter = WorkflowProgressReporter(
        "t", "w", ProgressPlan(weights={"x": 1}), flaky, min_interval_s=0
    )
    assert reporter.report(step="x") is False
    assert len(calls) == 1

    def refusing(body: dict[str, Any]) -> None:
        calls.append(body)
        raise ReportRefusedError("409")

    reporter = WorkflowProgressReporter(
        "t", "w", ProgressPlan(weights={"x": 1}), refusing, min_interval_s=0
    )
    assert reporter.report(step="x") is False
    assert reporter.report(step="x") is False
    assert len(calls) == 2  # the second report was not even attempted


def test_reporter_is_thread_safe() -> None:
    sent: list[dict[str, Any]] = []
    lock = threading.Lock()

    def send(body: dict[str, Any]) -> None:
        with lock:
            sent.append(body)

    plan = ProgressPlan.for_run([f"f{i}" for i in range(8)], False)
    reporter = WorkflowProgressReporter("t", "w", plan, send, min_interval_s=0)

    def work(i: int) -> None:
        for k in range(51):
            reporter.update(f"encode:f{i}", k / 50)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(plan.fractions[f"encode:f{i}"] == 1.0 for i in range(8))


def test_http_sender_retries_5xx_then_gives_up_and_refuses_4xx() -> None:
    statuses = iter([503, 502, 200])
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(next(statuses))

    sender = HttpSender("http://api", "tok", attempts=3, backoff_s=0.001)
    sender._client = httpx.Client(transport=httpx.MockTransport(handler))
    sender({"taskId": "t"})
    assert len(seen) == 3
    assert seen[0].headers["authorization"] == "Bearer tok"
    assert seen[0].url.path == "/internal/workflow-progress"

    sender._client = httpx.Client(
        transport=httpx.MockTransport(lambda r: httpx.Response(409, text="final"))
    )
    with pytest.raises(ReportRefusedError, match="409"):
        sender({"taskId": "t"})

    sender._client = httpx.Client(transport=httpx.MockTransport(lambda r: httpx.Response(500)))
    with pytest.raises(ConnectionError, match="3 tries"):
        sender({"taskId": "t"})
