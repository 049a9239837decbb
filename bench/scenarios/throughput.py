"""Scenario 5: many episodes submitted at once to one worker (as shipped: at most two
runs at once, one transcription at a time), episodes per minute against the serial floor.

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


def _submit(bench: BenchStack, key: str) -> Followed | str:
    """Create one task; a refusal (the API's 503 when Prefect is overloaded) is a result,
    not a crash: it is what a client submitting a batch would see."""
    try:
        return bench.create_task(key, formats=FORMATS, transcribe=True,
                                 episode_id=f"bench-tp-{uuid.uuid4().hex[:8]}")
    except RuntimeError as exc:
        return str(exc)


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
        start = time.time()
        with ThreadPoolExecutor(max_workers=n) as pool:
            futures = [pool.submit(_submit, bench, key) for _ in range(n)]
            outcomes = [f.result() for f in futures]
        tasks: list[Followed] = [t for t in outcomes if isinstance(t, Followed)]
        refused = [t for t in outcomes if isinstance(t, str)]
        print(f"   submitted {len(tasks)} of {n} in {time.time() - start:.1f} s "
              f"({len(refused)} refused)", flush=True)
        bench.follow(tasks, timeout_s=timeout, poll_s=1.0, give_up_on_crashed=True)
    done = [t for t in tasks if t.status == "done"]
    ends = [t.completed_at or t.done_seen or start for t in done]
    makespan = max(ends, default=start) - start
    rate = len(done) / makespan * 60
    to_running = [t.started_at - start for t in tasks if t.started_at]
    flow_runs = sampler.roles("flow-run")
    result.add(
        Row(f"throughput, {n} x {minutes:g} min at once", f"{rate:.2f} episodes/min",
            f"serial floor {floor_rate:.2f}/min ({secs(floor.best_s)} each, "
            f"{floor.best_schedule})", f"{rate / floor_rate:.2f}x"),
        Row("makespan (to the last done) / episodes not done",
            f"{secs(makespan)} / {n - len(done)}",
            f"serial floor {secs(n * floor.best_s)}"),
        Row("POST to running: median / max", f"{secs(median(to_running))} / "
            f"{secs(max(to_running, default=float('nan')))}",
            f"p95 {secs(percentile(to_running, 95))}"),
        Row("peak worker-tree RSS (sum)", mb(sampler.peak_total_mb()),
            f"{len(flow_runs)} flow-run processes, largest "
            f"{mb(sampler.hwm_by_role_mb().get('flow-run'))}"),
    )
    if refused:
        result.add(Row("POST /tasks refused at submission", f"{len(refused)} of {n}",
                       refused[0][:120]))
    failed = [t for t in tasks if t.status != "done"]
    if failed:
        result.notes.append(f"{len(failed)} accepted task(s) did not finish: " + "; ".join(
            f"{t.task_id[:8]} {t.status}"
            + (f" (Prefect: {t.prefect_state}, no hook reported it)" if t.prefect_state else "")
            + (f" {str(t.task.get('error'))[:160]}" if t.task.get("error") else "")
            for t in failed[:5]))
    concurrent = max(
        (sum(1 for k in s.rss_kb if sampler.procs[k].role == "flow-run") for s in sampler.samples),
        default=0,
    )
    result.notes.append(
        f"At most {concurrent} flow-run processes were alive at once; each loads its own "
        "Whisper model and runs its own two encoders and transcription with "
        "`cpu_threads` = the machine's cores."
    )
