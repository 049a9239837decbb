"""One episode through the whole stack, with the worker's process tree sampled throughout.

Shared by scenario 1 (end to end against the floor), 2 (memory against length) and 5
(throughput). Times come from three places that agree on one clock (same machine): the
client (when `POST /tasks` was sent), the API (`completedAt`, written when the completion
report lands) and Prefect (state and task-run timestamps). Memory comes from the sampler.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from bench import audio
from bench.harness import BenchStack, Followed, parse_time
from bench.procmon import TreeSampler

FORMATS = ("mp3_128", "mp3_320")

#: The flow's steps as Prefect names its task runs; encodes are merged into one step.
STEP_ORDER = ("download", "encode", "transcribe", "upload")


#: The payload fields that turn off what issue 12 added (loudness normalisation, tags,
#: chapters, the waveform file): the job as it was before, for the same-run comparison.
PLAIN_PAYLOAD: dict[str, Any] = {"loudness": None, "waveform": False, "chapters": []}


def podcast_payload(bench: BenchStack, minutes: float) -> dict[str, Any]:
    """What a podcast platform sends: default loudness (-16/-19 LUFS, -1 dBTP), episode
    tags with a 1400x1400 cover, a chapter every 10 minutes, the waveform file."""
    cover_key = bench.put_source(audio.cover_image())
    seconds = minutes * 60
    chapters = [
        {"startTime": float(start), "title": f"Part {n + 1}"}
        for n, start in enumerate(range(0, max(1, int(seconds)), 600))
    ]
    return {
        "metadata": {
            "title": f"Benchmark episode ({minutes:g} min)",
            "artist": "audioflow bench",
            "album": "audioflow benchmarks",
            "date": "2026-11-29",
            "episodeNumber": 1,
            "description": "A looped speech clip, for timing the podcast audio steps.",
            "coverKey": cover_key,
        },
        "chapters": chapters,
        "waveform": True,
    }


def step_of(task_run_name: str) -> str:
    """`encode-mp3_128` -> encode, `transcribe-a1b` -> transcribe (Prefect adds suffixes)."""
    for step in STEP_ORDER:
        if task_run_name.startswith(step):
            return step
    return task_run_name


@dataclass
class EpisodeRun:
    """One episode processed by the stack, and everything measured about it."""

    minutes: float
    followed: Followed
    sampler: TreeSampler
    flow_run: dict[str, Any]
    task_runs: list[dict[str, Any]]
    states: dict[str, float]

    @property
    def submitted(self) -> float:
        return self.followed.submitted_at

    @property
    def wall_s(self) -> float:
        """`POST /tasks` to the API recording `done` (its completedAt)."""
        done = self.followed.completed_at or self.followed.done_seen or self.submitted
        return done - self.submitted

    def steps(self) -> dict[str, tuple[float, float]]:
        """Step -> (start, end) as Unix times, from Prefect's task runs."""
        out: dict[str, tuple[float, float]] = {}
        for run in self.task_runs:
            start, end = parse_time(run.get("start_time")), parse_time(run.get("end_time"))
            if start is None or end is None:
                continue
            step = step_of(run["name"])
            if step in out:
                start, end = min(start, out[step][0]), max(end, out[step][1])
            out[step] = (start, end)
        return out

    def step_s(self, step: str) -> float | None:
        window = self.steps().get(step)
        return None if window is None else window[1] - window[0]

    def process_span_s(self, role: str) -> float | None:
        """First seen to last seen of the processes in `role` (±1 sample interval)."""
        procs = self.sampler.roles(role)
        if not procs:
            return None
        return max(p.last_seen for p in procs) - min(p.first_seen for p in procs)

    def timeline(self) -> list[tuple[str, float]]:
        """Consecutive segments from `POST /tasks` to `done`, in seconds, adding up to wall_s."""
        marks: list[tuple[str, float]] = []
        running = self.states.get("RUNNING")
        if running is not None:
            marks.append(("POST /tasks to flow Running (start-up)", running))
        previous_end = running
        for step in STEP_ORDER:
            window = self.steps().get(step)
            if window is None:
                continue
            if previous_end is not None:
                marks.append((f"before {step} (flow code, Prefect task start)", window[0]))
            marks.append((f"{step} step", window[1]))
            previous_end = window[1]
        completed = self.states.get("COMPLETED")
        if completed is not None:
            marks.append(("after upload to flow Completed (result, artifacts)", completed))
        marks.append(("flow Completed to API `done` (completion hook)", self.submitted
                      + self.wall_s))
        out, last = [], self.submitted
        for label, t in marks:
            out.append((label, t - last))
            last = t
        return out


def run_episode(
    bench: BenchStack,
    minutes: float,
    *,
    formats: tuple[str, ...] = FORMATS,
    timeout_s: float | None = None,
    extra: dict[str, Any] | None = None,
    label: str = "",
) -> EpisodeRun:
    """Process one `minutes`-long speech episode (formats + transcript), sampling memory;
    `extra`: more payload fields (see `podcast_payload`, `PLAIN_PAYLOAD`)."""
    key = bench.put_source(audio.episode(minutes))
    timeout_s = timeout_s or 600 + minutes * 60 * 3
    with TreeSampler(bench.worker_pids, interval_s=0.2) as sampler:
        followed = bench.create_task(key, formats=formats, transcribe=True, extra=extra)
        bench.follow([followed], timeout_s=timeout_s, poll_s=0.5)
    if followed.status != "done":
        raise RuntimeError(
            f"{minutes:g}-minute episode ended {followed.status}: {followed.task.get('error')}"
        )
    flow_run_id = followed.flow_run_id or ""
    states: dict[str, float] = {}
    for state in bench.flow_run_states(flow_run_id):
        t = parse_time(state["timestamp"])
        if t is not None:
            states.setdefault(state["type"], t)
    run = EpisodeRun(
        minutes=minutes,
        followed=followed,
        sampler=sampler,
        flow_run=bench.flow_run(flow_run_id),
        task_runs=bench.task_runs(flow_run_id),
        states=states,
    )
    print(f"   {minutes:g} min episode{label}: {run.wall_s:.1f} s POST to done; peak tree RSS "
          f"{sampler.peak_total_mb():.0f} MB", flush=True)
    return run
