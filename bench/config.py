"""Sizes of each scenario, full and quick (`BENCH_QUICK=1`), and the environment switches.

Quick mode runs every scenario with the same code on smaller inputs so that a change to the
harness can be checked in a few minutes; its figures are for smoke-testing only (episodes
shorter than one 10-minute transcription window say nothing about memory against length).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, replace


@dataclass(frozen=True)
class Config:
    """How big each scenario is."""

    quick: bool
    #: Scenario 1: the episode measured end to end against the floor (minutes).
    e2e_minutes: float
    #: Scenario 1: measure the floor again after the run (each part's faster one is used).
    floor_after: bool
    #: Scenario 2: episode lengths for memory against length (minutes).
    memory_minutes: tuple[float, ...]
    #: Scenario 3: timed trigger-to-running runs, runs of the variant, `import prefect` repeats.
    latency_runs: int
    latency_variant_runs: int
    import_repeats: int
    #: Scenario 4: seconds per load phase, the GET rate, tasks that receive progress updates.
    api_phase_s: float
    #: Seconds of the `POST /tasks` phase: each second at ~300/s leaves ~300 flow runs for
    #: the dispatcher and Prefect to work through before the next phase.
    api_create_s: float
    get_rate: int
    progress_workflows: int
    #: Scenario 5: episodes submitted at once and their length (minutes).
    throughput_episodes: int
    throughput_minutes: float
    #: Scenario 4: also measure an API with two uvicorn workers.
    api_two_workers: bool
    #: Take py-spy profiles (extra, untimed runs).
    profile: bool
    #: Which scenarios to run ("1".."7"); all by default.
    only: frozenset[str]
    #: Scenario 4: the one-worker phases, variants and probes (`BENCH_API_WORKERS=2`: only
    #: the two-worker phases, for repeated before/after runs of exactly those).
    api_one_worker: bool = True
    #: Scenario 6 (push): task streams and all-task streams open at once, seconds per
    #: phase, status changes per second beside the progress load (each one a webhook),
    #: the steady progress rate the latency is also measured at, and the status changes
    #: of the backlog that measures the deliverer alone.
    push_streams: int = 500
    push_all_streams: int = 0
    push_phase_s: float = 15
    push_status_rate: int = 50
    push_steady_rate: int = 500
    push_burst: int = 500
    #: Scenario 7 (back catalogue): ten-second episodes, each its own task, submitted at
    #: once; then a format added to all of them. Issue 15 also asks for 1,000.
    backlog_episodes: int = 40

    @property
    def mode(self) -> str:
        return "BENCH_QUICK=1, scaled down for smoke-testing" if self.quick else "full"


ALL = frozenset("1234567")


def from_env() -> Config:
    """The sizes for this run, from the environment.

    `BENCH_QUICK=1`: the short run. `BENCH_ONLY=1,3`: some scenarios. `BENCH_PROFILE=0|1`:
    skip or take the py-spy profiles (default: on in full runs, off in quick ones).
    To scale a full run down on a busy machine (RESULTS.md then lists what was smaller):
    `BENCH_E2E_MINUTES=15`, `BENCH_MEMORY_MINUTES=5,15,45`, `BENCH_LATENCY_RUNS=10`,
    `BENCH_THROUGHPUT=10x2` (episodes x minutes). `BENCH_API_WORKERS=2`: scenario 4's
    two-worker phases alone (`1`: the one-worker ones and the variants alone).
    Scenario 6: `BENCH_PUSH_STREAMS=N` task streams, `BENCH_PUSH_ALL_STREAMS=N` all-task
    (`GET /events`) streams, `BENCH_PUSH_PHASE_S=S` seconds per phase.
    Scenario 7: `BENCH_BACKLOG_EPISODES=N` ten-second episodes (40; issue 15 also asks 1,000).
    """
    quick = os.environ.get("BENCH_QUICK", "") not in ("", "0")
    only_raw = os.environ.get("BENCH_ONLY", "")
    only = frozenset(x.strip() for x in only_raw.split(",") if x.strip()) or ALL
    profile = os.environ.get("BENCH_PROFILE", "0" if quick else "1") not in ("0", "")
    base = _quick(profile, only) if quick else _full(profile, only)
    return _overridden(base)


def _overridden(config: Config) -> Config:
    env = os.environ
    changes: dict[str, object] = {}
    if env.get("BENCH_E2E_MINUTES"):
        changes["e2e_minutes"] = float(env["BENCH_E2E_MINUTES"])
    if env.get("BENCH_MEMORY_MINUTES"):
        changes["memory_minutes"] = tuple(
            float(x) for x in env["BENCH_MEMORY_MINUTES"].split(",") if x.strip()
        )
    if env.get("BENCH_LATENCY_RUNS"):
        changes["latency_runs"] = int(env["BENCH_LATENCY_RUNS"])
    if env.get("BENCH_API_WORKERS"):
        workers = {x.strip() for x in env["BENCH_API_WORKERS"].split(",") if x.strip()}
        changes["api_one_worker"] = "1" in workers
        changes["api_two_workers"] = "2" in workers
    if env.get("BENCH_PUSH_STREAMS"):
        changes["push_streams"] = int(env["BENCH_PUSH_STREAMS"])
    if env.get("BENCH_PUSH_ALL_STREAMS"):
        changes["push_all_streams"] = int(env["BENCH_PUSH_ALL_STREAMS"])
    if env.get("BENCH_PUSH_STATUS_RATE"):  # 0: no status changes (nor webhooks) beside B, C
        changes["push_status_rate"] = int(env["BENCH_PUSH_STATUS_RATE"])
    if env.get("BENCH_PUSH_PHASE_S"):
        changes["push_phase_s"] = float(env["BENCH_PUSH_PHASE_S"])
    if env.get("BENCH_BACKLOG_EPISODES"):
        changes["backlog_episodes"] = int(env["BENCH_BACKLOG_EPISODES"])
    if env.get("BENCH_THROUGHPUT"):
        episodes, _, minutes = env["BENCH_THROUGHPUT"].partition("x")
        changes["throughput_episodes"] = int(episodes)
        changes["throughput_minutes"] = float(minutes)
    return replace(config, **changes)  # type: ignore[arg-type]


def _quick(profile: bool, only: frozenset[str]) -> Config:
    return Config(
        quick=True,
        e2e_minutes=0.5,
        floor_after=False,
        memory_minutes=(0.25, 0.5),
        latency_runs=3,
        latency_variant_runs=1,
        import_repeats=1,
        api_phase_s=3,
        api_create_s=3,
        api_two_workers=False,
        get_rate=500,
        progress_workflows=16,
        throughput_episodes=2,
        throughput_minutes=0.25,
        profile=profile,
        only=only,
        push_streams=20,
        push_phase_s=3,
        push_status_rate=10,
        push_steady_rate=100,
        push_burst=50,
        backlog_episodes=4,
    )


def _full(profile: bool, only: frozenset[str]) -> Config:
    return Config(
        quick=False,
        e2e_minutes=60,
        floor_after=True,
        memory_minutes=(15, 60, 180),
        latency_runs=20,
        latency_variant_runs=10,
        import_repeats=5,
        api_phase_s=20,
        api_create_s=8,
        api_two_workers=True,
        get_rate=500,
        progress_workflows=64,
        throughput_episodes=20,
        throughput_minutes=5,
        profile=profile,
        only=only,
    )
