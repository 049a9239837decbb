"""Scenario 3: orchestration latency, `POST /tasks` to the first `running` report.

Measured on the stack as shipped (worker polling every second, `PREFECT_RUNNER_POLL_FREQUENCY=1`)
with a 10-second source, one format and no transcription, so each run is mostly start-up and
runs never overlap. The latency is taken from the API's own `startedAt` (written when the
flow's on_running hook report lands), so it has no polling error; the client-side poll
(every 0.1 s) is kept as a cross-check.

The floor is what no design on this machine can avoid: start a Python process and
`import prefect` (median of a few repeats, measured in the same run). Prefect's state
timestamps and the worker's process tree split each run into: Prefect accepts the run,
the worker picks it up, Prefect 3.9's workspace supervisor process starts, the engine
process starts and imports the flow, and the hook reports `running` to the API.
"""

from __future__ import annotations

import subprocess
import sys
import time
from dataclasses import dataclass

from bench import audio, profiling
from bench.config import Config
from bench.harness import BenchStack, Followed, parse_time
from bench.procmon import TreeSampler
from bench.report import Row, ScenarioResult, verdict
from bench.stats import median, percentile, secs

DEPLOYMENT = "audio-processing/audio-processing"
SOURCE_MINUTES = 10 / 60
TARGET_OVER_FLOOR_S = 1.5


@dataclass
class StartRun:
    """One timed run: seconds from `POST /tasks` to each milestone (None if not seen)."""

    latency_s: float  # to the API's startedAt
    polled_s: float | None  # to the first poll that saw `processing`
    scheduled_s: float | None  # Prefect's Scheduled state (run created)
    pending_s: float | None  # the worker claimed it
    supervisor_s: float | None  # workspace supervisor process first seen
    engine_s: float | None  # engine (flow-run) process first seen
    running_s: float | None  # Prefect's Running state (the engine began the flow)


def import_floor(repeats: int) -> tuple[float, float]:
    """Median wall seconds of `python -c 'import prefect'`, and of also importing the flow."""
    def timed(code: str) -> float:
        started = time.monotonic()
        subprocess.run([sys.executable, "-c", code], check=True)
        return time.monotonic() - started

    bare = [timed("import prefect") for _ in range(repeats)]
    flow = [timed("import prefect, flows.audio_processing") for _ in range(repeats)]
    return median(bare), median(flow)


def _one_run(bench: BenchStack, key: str, sampler: TreeSampler) -> StartRun:
    before = set(sampler.procs)
    followed: Followed = bench.create_task(key, formats=("mp3_128",), transcribe=False)
    bench.follow([followed], timeout_s=180, poll_s=0.1)
    if followed.status != "done" or followed.started_at is None:
        raise RuntimeError(f"run ended {followed.status}: {followed.task.get('error')}")
    t0 = followed.submitted_at

    def since(t: float | None) -> float | None:
        return None if t is None else t - t0

    states = {s["type"]: parse_time(s["timestamp"]) for s in reversed(
        bench.flow_run_states(followed.flow_run_id or ""))}
    new = [p for k, p in sampler.procs.items() if k not in before]
    supervised = [p for p in new if p.exec_seen is not None]
    supervisor = min((p.first_seen for p in supervised), default=None)
    # Shipped: the supervisor execs into the engine; variant: the engine is started directly.
    engine = min(
        (p.exec_seen or p.first_seen for p in new if p.role == "flow-run"), default=None
    )
    return StartRun(
        latency_s=followed.started_at - t0,
        polled_s=since(followed.first_running_seen),
        scheduled_s=since(states.get("SCHEDULED")),
        pending_s=since(states.get("PENDING")),
        supervisor_s=since(supervisor),
        engine_s=since(engine),
        running_s=since(states.get("RUNNING")),
    )


def _runs(bench: BenchStack, key: str, count: int) -> list[StartRun]:
    runs = []
    with TreeSampler(bench.worker_pids, interval_s=0.1) as sampler:
        for n in range(count):
            run = _one_run(bench, key, sampler)
            runs.append(run)
            print(f"   run {n + 1}/{count}: {run.latency_s:.2f} s to running", flush=True)
            time.sleep(0.5)
    return runs


def _breakdown(runs: list[StartRun]) -> str:
    """Median time of each milestone after `POST /tasks`, and the step from the one before."""
    fields = [
        ("scheduled_s", "Prefect created the run (API dispatcher)"),
        ("pending_s", "worker claimed it (Pending)"),
        ("supervisor_s", "workspace supervisor process started (±0.1 s)"),
        ("engine_s", "engine running (`python -m prefect.engine` seen, ±0.1 s)"),
        ("running_s", "engine set Running (flow loaded)"),
        ("latency_s", "API recorded `running` (on_running hook)"),
    ]
    lines = ["| milestone | median after POST | step |", "|---|---:|---:|"]
    previous = 0.0
    for attr, label in fields:
        values = [v for r in runs if (v := getattr(r, attr)) is not None]
        if not values:
            lines.append(f"| {label} | - | - |")
            continue
        value = median(values)
        lines.append(f"| {label} | {secs(value)} | +{value - previous:.2f} s |")
        previous = value
    return "\n".join(lines)


def run(bench: BenchStack, config: Config, result: ScenarioResult) -> None:
    result.sizes = (
        f"{config.latency_runs} sequential runs (10 s source, mp3_128, no transcript), "
        f"then {config.latency_variant_runs} runs of a variant; `import prefect` x"
        f"{config.import_repeats}"
    )
    key = bench.put_source(audio.episode(SOURCE_MINUTES))
    floor_s, flow_import_s = import_floor(config.import_repeats)
    runs = _runs(bench, key, config.latency_runs)
    latencies = [r.latency_s for r in runs]
    p50, p95 = percentile(latencies, 50), percentile(latencies, 95)
    over = p50 - floor_s
    result.add(
        Row(
            "trigger to running, p50",
            secs(p50),
            f"process start + import prefect {secs(floor_s)}",
            f"+{over:.2f} s",
            f"<= floor + {TARGET_OVER_FLOOR_S} s",
            verdict(over <= TARGET_OVER_FLOOR_S),
            "" if over <= TARGET_OVER_FLOOR_S else f"{over - TARGET_OVER_FLOOR_S:.2f} s over",
        ),
        Row(
            "trigger to running, p95",
            secs(p95),
            f"floor {secs(floor_s)}",
            f"+{p95 - floor_s:.2f} s",
        ),
        Row(
            "trigger to running, polled p50 (0.1 s polls)",
            secs(percentile([r.polled_s for r in runs if r.polled_s is not None], 50)),
        ),
    )
    result.section(
        "Where the start-up time goes (medians over the timed runs)", _breakdown(runs)
    )
    result.notes.append(
        f"Floor: `python -c 'import prefect'` median {secs(floor_s)}; with the flow module "
        f"(`import prefect, flows.audio_processing`) {secs(flow_import_s)}."
    )
    result.notes.append(
        "All latencies (s): " + ", ".join(f"{v:.2f}" for v in latencies)
    )

    if config.latency_variant_runs:
        _variant(bench, key, config, result, floor_s, p50)
    if config.profile:
        with profiling.record(bench.worker_pids()[0], "s3-startup", subprocesses=True) as prof:
            _runs(bench, key, 3)
        result.section(
            "Profile: the worker and its flow-run processes over 3 extra runs (py-spy)",
            profiling.summary_markdown(prof, top=16),
        )


def _variant(
    bench: BenchStack, key: str, config: Config, result: ScenarioResult, floor_s: float,
    shipped_p50: float,
) -> None:
    """The same runs without the deployment's `command` job variable (as before it was
    shipped): Prefect's process worker then starts a workspace supervisor process that
    starts the engine (one Python start and `import prefect` more)."""
    shipped = bench.job_variables(DEPLOYMENT)
    bench.set_job_variables(DEPLOYMENT, {k: v for k, v in shipped.items() if k != "command"})
    try:
        runs = _runs(bench, key, config.latency_variant_runs)
    finally:
        bench.set_job_variables(DEPLOYMENT, shipped)
    p50 = percentile([r.latency_s for r in runs], 50)
    result.add(
        Row(
            "before: no job_variables.command (workspace supervisor), p50",
            secs(p50),
            f"shipped p50 {secs(shipped_p50)}",
            f"shipped is {p50 - shipped_p50:+.2f} s faster",
        )
    )
    result.section(
        "Before: no `job_variables.command` (Prefect's workspace supervisor starts the "
        "engine), medians",
        _breakdown(runs),
    )
