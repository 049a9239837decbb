"""Scenario 7: the back catalogue, many short episodes (issue 15), against ffmpeg alone.

Two phases on the same N ten-second episodes, each its own source object in the store and
its own task (`mp3_64`, no transcript; loudness and the waveform at the API's defaults, as
a new user sends it):

1. new episodes: every `POST /tasks` at once (a thread pool), timed from the first request
   to the last task's `done` (the API's `completedAt`);
2. the back catalogue: `opus_64` added to those N done tasks as a user does it (the body
   `audioflow reprocess --status done --created-after T --add-formats opus_64` sends to
   `POST /reprocess`), timed from that request to the last new attempt's `done`.

The floor of each phase is the same N encodes run one after another by plain ffmpeg with
the flow's command line (`bench.floor.encode_back_to_back`), measured in the same run just
before. It does less than the flow (no loudness meter, no decode checks, no waveform, no
upload): those are the flow's work, and the issue's goal is stated against this floor.

Where the time goes comes from Prefect's state timestamps of each episode's flow run
(created, claimed by the worker, Running, Completed), its task runs, the API's
`completedAt`, and the worker's process tree (sampled every 0.2 s).
"""

from __future__ import annotations

import time
import uuid
from bisect import bisect_right
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from string import hexdigits

from bench import audio
from bench.config import Config
from bench.floor import ChildUsage, encode_back_to_back
from bench.harness import BenchStack, Followed, parse_time
from bench.procmon import TreeSampler
from bench.report import Row, ScenarioResult, verdict
from bench.scenarios.episodes import step_of
from bench.stats import median, percentile, secs
from cli.stack import DEFAULT_WORKER_LIMIT
from core.settings import env_int

TARGET_RATIO = 3.0
EPISODE_S = 10.0
NEW_FORMAT = "mp3_64"
ADDED_FORMAT = "opus_64"
#: What issue 15 also asks for; `BENCH_BACKLOG_EPISODES=1000` runs it.
ISSUE_LARGE = 1000
#: Threads that submit, and that read Prefect's view of the runs afterwards.
SUBMIT_THREADS = 32
READ_THREADS = 8


@dataclass
class RunTimes:
    """One episode's flow run: Unix times of its milestones (None when not seen)."""

    #: `POST /tasks` (phase 1) or the reprocess request (phase 2).
    asked: float
    created: float | None = None  # Prefect's first state (Scheduled): the run exists
    pending: float | None = None  # the worker claimed it
    running: float | None = None  # the engine began the flow
    completed: float | None = None  # Prefect's Completed (or other final) state
    done: float | None = None  # the API's completedAt (the completion hook's report)
    #: Step -> seconds of its task runs (encodes merged), from Prefect.
    steps: dict[str, float] = field(default_factory=dict)

    def span(self, start: str, end: str) -> float | None:
        a, b = getattr(self, start), getattr(self, end)
        return None if a is None or b is None else float(b) - float(a)

    def outside_steps_s(self) -> float | None:
        """Running to Completed less the task runs: engine, flow code, hooks, artifacts."""
        run = self.span("running", "completed")
        return None if run is None else run - sum(self.steps.values())


#: The per-run stages reported: label, from, to.
STAGES: tuple[tuple[str, str, str], ...] = (
    ("asked to flow Running (all of start-up)", "asked", "running"),
    ("  asked to run created (outbox / reprocessing pass)", "asked", "created"),
    ("  created to claimed by the worker (waiting for a slot)", "created", "pending"),
    ("  claimed to Running (process start, imports, engine)", "pending", "running"),
    ("flow Running to Completed (the run itself)", "running", "completed"),
    ("flow Completed to task `done` (completion hook)", "completed", "done"),
)


@dataclass
class Phase:
    """One timed phase: its clock, its tasks, its floor, and what was measured about it."""

    label: str
    started: float
    tasks: list[Followed]
    floor_s: float
    floor_usages: list[ChildUsage]
    sampler: TreeSampler
    runs: list[RunTimes] = field(default_factory=list)
    refused: list[str] = field(default_factory=list)

    @property
    def done(self) -> list[Followed]:
        return [t for t in self.tasks if t.status == "done"]

    @property
    def ended(self) -> float:
        ends = [t.completed_at or t.done_seen or self.started for t in self.done]
        return max(ends, default=self.started)

    @property
    def wall_s(self) -> float:
        return self.ended - self.started


def _submit(bench: BenchStack, key: str) -> Followed | str:
    """One task; a refusal is a result (what a client submitting a batch would see)."""
    try:
        return bench.create_task(key, formats=(NEW_FORMAT,), transcribe=False,
                                 episode_id=f"bench-backlog-{uuid.uuid4().hex[:8]}")
    except RuntimeError as exc:
        return str(exc)


def step_name(task_run_name: str) -> str:
    """`encode-mp3_64` -> encode (as scenario 1 merges them), `check-artwork-76f` ->
    check-artwork (Prefect's three-character suffix dropped)."""
    step = step_of(task_run_name)
    if step != task_run_name:
        return step
    head, _, tail = task_run_name.rpartition("-")
    return head if head and len(tail) == 3 and all(c in hexdigits for c in tail) else step


def _run_times(bench: BenchStack, followed: Followed, asked: float) -> RunTimes:
    """Prefect's states and task runs of the task's current flow run."""
    times = RunTimes(asked=asked, done=followed.completed_at)
    flow_run_id = followed.flow_run_id
    if not flow_run_id:
        return times
    states: dict[str, float] = {}
    for state in bench.flow_run_states(flow_run_id):
        t = parse_time(state["timestamp"])
        if t is not None:
            states.setdefault(state["type"], t)
    times.created = states.get("SCHEDULED")
    times.pending = states.get("PENDING")
    times.running = states.get("RUNNING")
    times.completed = min(
        (states[s] for s in ("COMPLETED", "FAILED", "CRASHED", "CANCELLED") if s in states),
        default=None,
    )
    for run in bench.task_runs(flow_run_id):
        start, end = parse_time(run.get("start_time")), parse_time(run.get("end_time"))
        if start is not None and end is not None:
            step = step_name(run["name"])
            times.steps[step] = times.steps.get(step, 0.0) + end - start
    return times


def _collect(bench: BenchStack, phase: Phase, asked: Callable[[Followed], float]) -> None:
    with ThreadPoolExecutor(max_workers=READ_THREADS) as pool:
        phase.runs = list(pool.map(lambda t: _run_times(bench, t, asked(t)), phase.done))


def _running_at_once(runs: Sequence[RunTimes], start: float, end: float) -> list[int]:
    """Flow runs between Running and their final state, sampled every 0.1 s over the phase."""
    starts = sorted(r.running for r in runs if r.running is not None)
    ends = sorted(r.completed for r in runs if r.running is not None and r.completed is not None)
    times = (start + i * 0.1 for i in range(int((end - start) / 0.1) + 1))
    return [bisect_right(starts, t) - bisect_right(ends, t) for t in times]


def _processes_at_once(sampler: TreeSampler, start: float, end: float) -> list[int]:
    """Flow-run processes alive in each tree sample within the phase (start-up included)."""
    return [
        sum(1 for k in s.rss_kb if sampler.procs[k].role.startswith("flow"))
        for s in sampler.samples
        if start <= s.t <= end
    ]


def _med_p95(values: Sequence[float]) -> str:
    return f"{secs(median(values))} / {secs(percentile(values, 95))}"


def _stage_values(runs: Sequence[RunTimes], start: str, end: str) -> list[float]:
    return [v for v in (r.span(start, end) for r in runs) if v is not None]


def _verdict_row(metric: str, phase: Phase, n: int) -> Row:
    wall, floor = phase.wall_s, phase.floor_s
    r = wall / floor if floor else float("inf")
    return Row(
        metric,
        secs(wall),
        f"floor {secs(floor)} ({n} encodes back to back)",
        f"{r:.2f}x",
        f"<= {TARGET_RATIO:g}x",
        verdict(r <= TARGET_RATIO and len(phase.done) == n),
        "" if r <= TARGET_RATIO
        else f"{r - TARGET_RATIO:.2f}x ({wall - TARGET_RATIO * floor:.0f} s) over",
    )


def _phase_rows(phase: Phase, worker_limit: int) -> list[Row]:
    runs = phase.runs
    start_up = _stage_values(runs, "asked", "running")
    created = _stage_values(runs, "asked", "created")
    waiting = _stage_values(runs, "created", "pending")
    process = _stage_values(runs, "pending", "running")
    run_s = _stage_values(runs, "running", "completed")
    hook = _stage_values(runs, "completed", "done")
    steps = _step_order(runs)
    step_medians = ", ".join(
        f"{s} {secs(median([r.steps[s] for r in runs if s in r.steps]))}" for s in steps
    )
    outside = [v for v in (r.outside_steps_s() for r in runs) if v is not None]
    running = _running_at_once(runs, phase.started, phase.ended)
    alive = _processes_at_once(phase.sampler, phase.started, phase.ended)
    procs = [p for p in phase.sampler.roles("flow")
             if phase.started - 1 <= p.first_seen <= phase.ended + 1]
    lifetimes = [p.last_seen - p.first_seen for p in procs]
    cpu = [p.cpu_s for p in procs]
    floor_each = [u.wall_s for u in phase.floor_usages]
    floor_cpu = [u.cpu_s for u in phase.floor_usages]
    label = phase.label
    return [
        Row(f"  {label}: per run, asked to flow Running, median / p95", _med_p95(start_up),
            f"run created {secs(median(created))}, waiting for a slot "
            f"{secs(median(waiting))}, process start {secs(median(process))} (medians)"),
        Row(f"  {label}: per run, flow Running to Completed, median / p95", _med_p95(run_s),
            f"task runs (medians): {step_medians or '-'}; outside them "
            f"{secs(median(outside))}"),
        Row(f"  {label}: per run, Completed to task done, median / p95", _med_p95(hook)),
        Row(f"  {label}: flow runs Running at once, median / max",
            f"{median(running):.0f} / {max(running, default=0)}",
            f"flow-run processes alive {median(alive):.0f} / {max(alive, default=0)} "
            f"(worker limit {worker_limit})"),
        Row(f"  {label}: per flow-run process, lifetime / CPU, median",
            f"{secs(median(lifetimes))} / {secs(median(cpu))}",
            f"floor per encode: wall {secs(median(floor_each))}, CPU {secs(median(floor_cpu))}",
            f"{median(lifetimes) / median(floor_each):.0f}x" if floor_each else ""),
    ]


def _step_order(runs: Sequence[RunTimes]) -> list[str]:
    """Step names in the order the runs went through them (task runs sorted by start)."""
    return list(dict.fromkeys(s for r in runs for s in r.steps))


def _stage_markdown(phases: Sequence[Phase]) -> str:
    head = "| per run | " + " | ".join(f"{p.label}: median | p95" for p in phases) + " |"
    lines = [head, "|---|" + "---:|---:|" * len(phases)]
    for label, start, end in STAGES:
        cells = []
        for p in phases:
            values = _stage_values(p.runs, start, end)
            cells += [secs(median(values)), secs(percentile(values, 95))]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for step in _step_order([r for p in phases for r in p.runs]):
        cells = []
        for p in phases:
            values = [r.steps[step] for r in p.runs if step in r.steps]
            cells += [secs(median(values)), secs(percentile(values, 95))]
        lines.append(f"|   {step} task run(s) | " + " | ".join(cells) + " |")
    cells = []
    for p in phases:
        values = [v for v in (r.outside_steps_s() for r in p.runs) if v is not None]
        cells += [secs(median(values)), secs(percentile(values, 95))]
    lines.append("|   Running to Completed outside task runs | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _not_done_note(phase: Phase) -> str | None:
    failed = [t for t in phase.tasks if t.status != "done"]
    if not failed:
        return None
    return f"{phase.label}: {len(failed)} task(s) did not finish: " + "; ".join(
        f"{t.task_id[:8]} {t.status}"
        + (f" (Prefect: {t.prefect_state})" if t.prefect_state else "")
        + (f" {str(t.task.get('error'))[:160]}" if t.task.get("error") else "")
        for t in failed[:5])


def _new_episodes(bench: BenchStack, keys: list[str], sources: list[Path]) -> Phase:
    n = len(keys)
    floor_s, usages = encode_back_to_back(sources, NEW_FORMAT)
    print(f"   floor: {n} x {NEW_FORMAT} back to back {floor_s:.1f} s", flush=True)
    with TreeSampler(bench.worker_pids, interval_s=0.2) as sampler:
        started = time.time()
        with ThreadPoolExecutor(max_workers=min(n, SUBMIT_THREADS)) as pool:
            outcomes = list(pool.map(lambda key: _submit(bench, key), keys))
        tasks = [t for t in outcomes if isinstance(t, Followed)]
        phase = Phase("new", min((t.submitted_at for t in tasks), default=started), tasks,
                      floor_s, usages, sampler,
                      refused=[t for t in outcomes if isinstance(t, str)])
        print(f"   submitted {len(tasks)} of {n} in {time.time() - started:.1f} s "
              f"({len(phase.refused)} refused)", flush=True)
        bench.follow(tasks, timeout_s=300 + n * EPISODE_S, poll_s=0.5, give_up_on_crashed=True)
    _collect(bench, phase, lambda t: t.submitted_at)
    print(f"   new episodes: {phase.wall_s:.1f} s first POST to last done "
          f"({len(phase.done)} done)", flush=True)
    return phase


def _add_format(
    bench: BenchStack, new: Phase, sources: list[Path]
) -> tuple[Phase, dict[str, float | None]]:
    """Reprocess the done tasks adding `ADDED_FORMAT`; also the reprocessing run's times."""
    n = len(new.done)
    floor_s, usages = encode_back_to_back(sources[:n], ADDED_FORMAT)
    print(f"   floor: {n} x {ADDED_FORMAT} back to back {floor_s:.1f} s", flush=True)
    # What `audioflow reprocess --status done --created-after T --add-formats opus_64` sends.
    body = {
        "taskIds": [],
        "episodeIds": [],
        "addFormats": [ADDED_FORMAT],
        "dryRun": False,
        "reconcile": True,
        "retryFailed": True,
        "status": "done",
        "createdAfter": datetime.fromtimestamp(new.started - 1, UTC).isoformat(),
    }
    with TreeSampler(bench.worker_pids, interval_s=0.2) as sampler:
        asked = time.time()
        response = bench.api.post("/reprocess", json=body)
        if response.status_code not in (200, 201):
            raise RuntimeError(f"POST /reprocess answered {response.status_code}: "
                               f"{response.text[:300]}")
        reprocess_run = str(response.json()["flowRunId"])
        tasks = [
            Followed(task_id=t.task_id, submitted_at=asked, task=t.task,
                     attempt=int(t.task.get("attempts", 1)) + 1)
            for t in new.done
        ]
        phase = Phase("catalogue", asked, tasks, floor_s, usages, sampler)
        bench.follow(tasks, timeout_s=300 + n * EPISODE_S, poll_s=0.5, give_up_on_crashed=True)
    _collect(bench, phase, lambda _t: asked)
    states: dict[str, float | None] = {}
    for state in bench.flow_run_states(reprocess_run):
        states.setdefault(state["type"], parse_time(state["timestamp"]))
    missing = [t for t in phase.done
               if ADDED_FORMAT not in t.task.get("payload", {}).get("encodingFormats", [])]
    if missing:
        raise RuntimeError(f"{len(missing)} reprocessed task(s) do not list {ADDED_FORMAT}")
    print(f"   back catalogue: {phase.wall_s:.1f} s request to last done "
          f"({len(phase.done)} done)", flush=True)
    return phase, {"asked": asked, **{k.lower(): v for k, v in states.items()}}


def run(bench: BenchStack, config: Config, result: ScenarioResult) -> None:
    n = config.backlog_episodes
    worker_limit = max(1, env_int("AUDIOFLOW_WORKER_LIMIT", DEFAULT_WORKER_LIMIT))
    result.sizes = (
        f"{n} distinct {EPISODE_S:g}-second episodes, each its own task ({NEW_FORMAT}, no "
        "transcript, the API's default loudness and waveform), submitted at once to one "
        f"worker (limit {worker_limit}); then `{ADDED_FORMAT}` added to all of them with one "
        "`POST /reprocess` (what `audioflow reprocess --status done --created-after T "
        f"--add-formats {ADDED_FORMAT}` sends); floors: the same {n} encodes back to back by "
        "plain ffmpeg, measured just before each phase"
    )
    sources = audio.short_episodes(n, EPISODE_S)
    keys = [bench.put_source(path) for path in sources]
    new = _new_episodes(bench, keys, sources)
    result.add(_verdict_row(f"new episodes: {n} x {EPISODE_S:g} s, {NEW_FORMAT}, first POST "
                            "to last done", new, n))
    result.add(*_phase_rows(new, worker_limit))
    if new.refused:
        result.add(Row("POST /tasks refused at submission", f"{len(new.refused)} of {n}",
                       new.refused[0][:120]))
    catalogue, reprocess = _add_format(bench, new, sources)
    result.add(_verdict_row(f"back catalogue: {ADDED_FORMAT} added to {len(new.done)} done "
                            "tasks, request to last done", catalogue, len(new.done)))
    asked = reprocess["asked"] or catalogue.started
    created = [r.created for r in catalogue.runs if r.created is not None]
    result.add(
        Row("  catalogue: request to reprocessing run Running / its Running to Completed",
            f"{secs(_gap(asked, reprocess.get('running')))} / "
            f"{secs(_gap(reprocess.get('running'), reprocess.get('completed')))}",
            f"attempts' runs created from {secs(min(created, default=asked) - asked)} to "
            f"{secs(max(created, default=asked) - asked)} after the request"),
        *_phase_rows(catalogue, worker_limit),
    )
    result.section("Where the time goes, per episode's flow run (Prefect states, task runs, "
                   "the API's completedAt)", _stage_markdown([new, catalogue]))
    for note in (_not_done_note(new), _not_done_note(catalogue)):
        if note:
            result.notes.append(note)
    result.notes += _reading(new, catalogue, worker_limit, n)


def _gap(a: float | None, b: float | None) -> float | None:
    return None if a is None or b is None else b - a


def _reading(new: Phase, catalogue: Phase, worker_limit: int, n: int) -> list[str]:
    notes = []
    for phase in (new, catalogue):
        procs = [p for p in phase.sampler.roles("flow")
                 if phase.started - 1 <= p.first_seen <= phase.ended + 1]
        if procs and phase.done:
            life = median([p.last_seen - p.first_seen for p in procs])
            notes.append(
                f"{phase.label}: {len(procs)} flow-run processes seen; {len(phase.done)} runs x "
                f"median process lifetime {life:.1f} s / worker limit {worker_limit} = "
                f"{len(phase.done) * life / worker_limit:.0f} s, against a wall time of "
                f"{phase.wall_s:.0f} s: the batch is paced by one process per episode, "
                f"{worker_limit} at a time."
            )
    if n < ISSUE_LARGE:
        notes.append(
            f"Issue 15 also asks for {ISSUE_LARGE:,} episodes: `BENCH_ONLY=7 "
            f"BENCH_BACKLOG_EPISODES={ISSUE_LARGE} make bench` runs it (at today's pace, "
            "N x the process lifetime / the worker limit above: over an hour per phase)."
        )
    return notes
