"""The back-catalogue scenario's small parts (`bench.scenarios.backlog`): the per-run stages
and the concurrency count taken from Prefect's timestamps. The scenario itself runs under
`make bench` (`BENCH_ONLY=7`)."""

from __future__ import annotations

import pytest

from bench.scenarios.backlog import RunTimes, _running_at_once, _stage_values, step_name


def _run(running: float, completed: float) -> RunTimes:
    return RunTimes(asked=0.0, created=0.1, pending=running - 1.0, running=running,
                    completed=completed, done=completed + 0.2,
                    steps={"download": 0.5, "encode": 1.0})


def test_stages_and_time_outside_the_task_runs() -> None:
    run = _run(2.0, 5.0)
    assert run.span("asked", "running") == 2.0
    assert run.span("running", "completed") == 3.0
    assert run.outside_steps_s() == 1.5  # 3 s run, 1.5 s of task runs
    assert RunTimes(asked=0.0).span("asked", "running") is None
    assert _stage_values([run, RunTimes(asked=0.0)], "completed", "done") == [pytest.approx(0.2)]


def test_runs_running_at_once_are_counted_from_their_intervals() -> None:
    runs = [_run(1.0, 3.0), _run(2.0, 4.0), _run(3.5, 4.5), RunTimes(asked=0.0)]
    counts = _running_at_once(runs, 0.0, 5.0)
    assert len(counts) == 51  # every 0.1 s, both ends
    assert counts[5] == 0  # t=0.5
    assert counts[15] == 1  # t=1.5
    assert counts[25] == 2  # t=2.5
    assert counts[38] == 2  # t=3.8: the first ended at 3, the third began at 3.5
    assert max(counts) == 2
    assert counts[-1] == 0


def test_task_runs_are_named_by_their_step() -> None:
    assert step_name("encode-mp3_64-1a2") == "encode"
    assert step_name("download-source-abc") == "download"
    assert step_name("check-artwork-76f") == "check-artwork"
    assert step_name("finish") == "finish"
