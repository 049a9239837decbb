"""Scenario 5: many episodes submitted at once to one worker (as shipped: no concurrency
limit), episodes per minute against the serial floor.

The serial floor is one episode at a time at floor speed (plain ffmpeg side by side plus
the engine alone, the faster schedule), measured in the same run on the same file:
`60 / floor seconds` episodes per minute. The batch's rate is episodes over the makespan,
from the first `POST /tasks` to the last `done`.
"""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor

from bench import audio
from bench.config import Config
from bench.floor import measure_floor
from bench.harness import BenchStack, Followed
from bench.procmon import TreeSampler
from bench.report import Row, ScenarioResult
from bench.scenarios.episodes import FORMATS
from bench.stats import mb, median, percentile, secs


def run(bench: BenchStack, config: Config, result: ScenarioResult) -> None:
    n, minutes = config.throughput_episodes, config.throughput_minutes
    result.sizes = (f"{n} episodes of {minutes:g} min (mp3_128 + mp3_320 + transcript) "
                    "submitted at once to one worker")
    source = audio.episode(minutes)
    floor = measure_floor(source, FORMATS)
    floor_rate = 60 / floor.best_s
    key = bench.put_source(source)
    timeout = 900 + n * floor.best_s * 4
    with TreeSampler(bench.worker_pids, interval_s=0.5) as sampler:
        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [
                pool.submit(bench.create_task, key, formats=FORMATS, transcribe=True,
                            episode_id=f"bench-tp-{uuid.uuid4().hex[:8]}")
                for _ in range(n)
            ]
            tasks: list[Followed] = [f.result() for f in futures]
        print(f"   submitted {n} in {time.time() - min(t.submitted_at for t in tasks):.1f} s",
              flush=True)
        bench.follow(tasks, timeout_s=timeout, poll_s=1.0)
    start = min(t.submitted_at for t in tasks)
    ends = [t.completed_at or t.done_seen or start for t in tasks]
    makespan = max(ends) - start
    done = [t for t in tasks if t.status == "done"]
    rate = len(done) / makespan * 60
    to_running = [t.started_at - start for t in tasks if t.started_at]
    flow_runs = sampler.roles("flow-run")
    result.add(
        Row(f"throughput, {n} x {minutes:g} min at once", f"{rate:.2f} episodes/min",
            f"serial floor {floor_rate:.2f}/min ({secs(floor.best_s)} each, "
            f"{floor.best_schedule})", f"{rate / floor_rate:.2f}x"),
        Row("makespan / failed", f"{secs(makespan)} / {n - len(done)}",
            f"serial floor {secs(n * floor.best_s)}"),
        Row("POST to running: median / max", f"{secs(median(to_running))} / "
            f"{secs(max(to_running, default=float('nan')))}",
            f"p95 {secs(percentile(to_running, 95))}"),
        Row("peak worker-tree RSS (sum)", mb(sampler.peak_total_mb()),
            f"{len(flow_runs)} flow-run processes, largest "
            f"{mb(sampler.hwm_by_role_mb().get('flow-run'))}"),
    )
    failed = [t for t in tasks if t.status != "done"]
    if failed:
        result.notes.append("Failed: " + "; ".join(
            f"{t.task_id}: {t.status} {t.task.get('error')}" for t in failed[:5]))
    concurrent = max(
        (sum(1 for k in s.rss_kb if sampler.procs[k].role == "flow-run") for s in sampler.samples),
        default=0,
    )
    result.notes.append(
        f"At most {concurrent} flow-run processes were alive at once; each loads its own "
        "Whisper model and runs its own two encoders and transcription with "
        "`cpu_threads` = the machine's cores."
    )
