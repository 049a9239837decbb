"""`python -m bench`: run the scenarios, print the table, write bench/RESULTS.md.

One stack serves every scenario, in an order that keeps them from disturbing each other:
orchestration latency first (tiny runs), then the long episodes with their floor, then the
throughput batch and the back catalogue of short episodes, then the API load, with the
worker stopped so that the thousands of flow runs it creates are never executed, and the
push scenario last: it also replaces the stack's API with one that sends webhooks and
creates no flow runs.
"""

from __future__ import annotations

import sys
import time

from bench import audio
from bench.config import Config, from_env
from bench.harness import bench_stack
from bench.report import ScenarioResult, scenario, table_text, write_results
from bench.scenarios import (
    api_load,
    backlog,
    end_to_end,
    memory,
    orchestration,
    push,
    throughput,
)
from bench.scenarios.episodes import EpisodeRun, run_episode


def scaled_notes(config: Config) -> list[str]:
    """What RESULTS.md must say about sizes smaller than the issue asks for."""
    if config.quick:
        return [
            "Quick mode (BENCH_QUICK=1): every scenario runs on much smaller inputs; the "
            "figures only show that the harness works. Do not compare them with targets.",
        ]
    notes = []
    if config.e2e_minutes != 60:
        notes.append(f"Scenario 1 used a {config.e2e_minutes:g}-minute episode, not 60.")
    if config.memory_minutes != (15, 60, 180):
        notes.append(f"Scenario 2 used {config.memory_minutes} minutes, not (15, 60, 180).")
    if config.latency_runs != 20:
        notes.append(f"Scenario 3 used {config.latency_runs} runs, not 20.")
    if (config.throughput_episodes, config.throughput_minutes) != (20, 5):
        notes.append(f"Scenario 5 used {config.throughput_episodes} episodes of "
                     f"{config.throughput_minutes:g} min, not 20 of 5.")
    if config.backlog_episodes != 40:
        notes.append(f"Scenario 7 used {config.backlog_episodes} episodes, not 40 (issue 15 "
                     "asks for 40 and 1,000).")
    if config.push_streams + config.push_all_streams != 500:
        notes.append(f"Scenario 6 held {config.push_streams + config.push_all_streams} "
                     "streams open, not 500.")
    return notes


def main() -> int:
    config = from_env()
    started = time.time()
    print(f"audioflow benchmark ({config.mode})", flush=True)
    audio.speech_clip()
    results: list[ScenarioResult] = []
    try:
        run_all(config, results)
    finally:
        results.sort(key=lambda r: r.key)
        print()
        print(table_text(results))
        path = write_results(
            results, mode=config.mode, scaled=scaled_notes(config), started=started
        )
        print(f"\nwrote {path}")
    return 1 if any(r.error for r in results) else 0


def run_all(config: Config, results: list[ScenarioResult]) -> None:
    """Every selected scenario on one stack; results are appended as they finish."""
    with bench_stack(audio.OUT_DIR / "stack") as bench:
        if "3" in config.only:
            with scenario(results, "3", "Orchestration latency") as result:
                orchestration.run(bench, config, result)
        runs: dict[float, EpisodeRun] = {}
        floor = None
        if "1" in config.only:
            with scenario(results, "1", "End to end, one episode") as result:
                floor, runs[config.e2e_minutes], plain, floors, engines = end_to_end.measure(
                    bench, config
                )
                end_to_end.report(floor, runs[config.e2e_minutes], plain, floors, engines,
                                  config, result)
        if "2" in config.only:
            with scenario(results, "2", "Memory against episode length") as result:
                for minutes in config.memory_minutes:
                    if minutes not in runs:
                        runs[minutes] = run_episode(bench, minutes)
                memory.report([runs[m] for m in config.memory_minutes], floor, config, result)
        if "5" in config.only:
            with scenario(results, "5", "Throughput, one worker") as result:
                throughput.run(bench, config, result)
        if "7" in config.only:  # before 4, which stops the worker
            with scenario(results, "7", "Back catalogue: many short episodes") as result:
                backlog.run(bench, config, result)
        if "4" in config.only:  # last: it stops the worker
            with scenario(results, "4", "API under load (PostgreSQL)") as result:
                api_load.run(bench, config, result)
        if "6" in config.only:  # last: it stops the worker and replaces the API
            with scenario(results, "6", "Push: event streams and webhooks (PostgreSQL)") \
                    as result:
                push.run(bench, config, result)
        if bench.api_errors:
            for result in results:
                result.notes.append(
                    f"Failed polls while following tasks: {dict(bench.api_errors)}"
                )


if __name__ == "__main__":
    sys.exit(main())
