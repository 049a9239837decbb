"""Scenario 4: the API under load, on PostgreSQL, from a load generator in a second process.

Phases, each `api_phase_s` long after a short warm-up, all on loopback:

1. `POST /tasks`, closed loop: tasks accepted per second. The API answers once the rows
   are committed; its dispatcher threads create the Prefect flow runs behind it (the
   outbox, `domain.dispatch`), so the phase also reports the flow runs created per
   second and how long the backlog took to drain. The worker is stopped first: the runs
   stay Scheduled, and the next phase waits until Prefect's late-runs service has marked
   them Late (see `wait_until_idle`).
2. `POST /internal/workflow-progress`, closed loop over `progress_workflows` live
   workflows: the updates a fleet of running flows would send.
3. `GET /tasks/{id}`, open loop at `get_rate` requests/s: p50/p99 latency, measured from
   when each request was due.
4. The same GETs while progress updates arrive at a steady 200/s from a second generator.

Then phases 1-3 again against a second API process with two uvicorn workers (as the README
recommends for production), and, untimed, py-spy profiles of the one-worker API (and the
Prefect server) under phases 1 and 2.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench import audio, procmon, profiling
from bench.config import Config
from bench.harness import API_KEY, TOKEN, BenchStack
from bench.report import Row, ScenarioResult, verdict
from bench.stats import ms
from cli.stack import ManagedProcess, free_port, start_api

TARGET_PROGRESS_PER_S = 1500
TARGET_CREATE_PER_S = 100
TARGET_GET_P99_S = 0.020
BACKGROUND_PROGRESS_RATE = 200
AUDIO_DEPLOYMENT = "audio-processing/audio-processing"


def _raw(method: str, path: str, body: dict[str, Any] | None, headers: dict[str, str]) -> str:
    data = json.dumps(body) if body is not None else ""
    lines = [f"{method} {path} HTTP/1.1", "Host: 127.0.0.1"]
    lines += [f"{name}: {value}" for name, value in headers.items()]
    if body is not None:
        lines += ["Content-Type: application/json", f"Content-Length: {len(data.encode())}"]
    return "\r\n".join(lines) + "\r\n\r\n" + data


def create_requests(audio_key: str) -> list[str]:
    payload = {
        "type": "audio_processing",
        "payload": {
            "episodeId": "bench-load",
            "audioKey": audio_key,
            "encodingFormats": ["mp3_128", "mp3_320"],
            "transcribe": True,
            "language": "en",
        },
    }
    return [_raw("POST", "/tasks", payload, {"X-API-Key": API_KEY})]


def progress_requests(workflows: list[tuple[str, str]], count: int = 3000) -> list[str]:
    """Reports like the flow's reporter sends, rising per workflow, round-robin."""
    out = []
    for n in range(count):
        task_id, workflow_id = workflows[n % len(workflows)]
        percent = min(99, n // len(workflows))
        body = {
            "taskId": task_id,
            "workflowId": workflow_id,
            "progress": percent,
            "step": "encode:mp3_128",
            "message": f"encoding mp3_128 ({percent}%)",
        }
        out.append(
            _raw("POST", "/internal/workflow-progress", body, {"Authorization": f"Bearer {TOKEN}"})
        )
    return out


def get_requests(task_ids: list[str]) -> list[str]:
    ids = task_ids * max(1, 2000 // max(1, len(task_ids)))
    return [_raw("GET", f"/tasks/{tid}", None, {"X-API-Key": API_KEY}) for tid in ids]


def _spec(port: int, requests: list[str], **fields: Any) -> dict[str, Any]:
    return {"host": "127.0.0.1", "port": port, "requests": requests, **fields}


@contextmanager
def loadgen(spec: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Run `bench.loadgen` in its own process for the spec; the dict fills with its result
    when the block ends (so two generators can run at once)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.loadgen"],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdin is not None and proc.stdout is not None
    proc.stdin.write(json.dumps(spec))
    proc.stdin.close()
    result: dict[str, Any] = {}
    try:
        yield result
    finally:
        out = proc.stdout.read()
        proc.wait()
        if proc.returncode != 0 or not out:
            raise RuntimeError(f"bench.loadgen failed with {proc.returncode}")
        result.update(json.loads(out))


def run_load(spec: dict[str, Any]) -> dict[str, Any]:
    with loadgen(spec) as result:
        pass
    print(
        f"   {spec['mode']} {spec['requests'][0].split(' HTTP')[0][:40]}: "
        f"{result['ok_per_s']:.0f} ok/s, p50 {ms(result['p50_s'])}, p99 {ms(result['p99_s'])}, "
        f"statuses {result['statuses']}, errors {result['errors']}",
        flush=True,
    )
    return result


def live_tasks(api_url: str, limit: int) -> list[dict[str, Any]]:
    """Up to `limit` pending tasks (with their current workflow), newest first."""
    out: list[dict[str, Any]] = []
    with httpx.Client(base_url=api_url, headers={"X-API-Key": API_KEY}, timeout=60) as client:
        offset = 0
        while len(out) < limit:
            page = client.get(
                "/tasks", params={"status": "pending", "limit": 200, "offset": offset}
            ).json()
            out += page["items"]
            if len(page["items"]) < 200:
                break
            offset += 200
    return out[:limit]


@contextmanager
def dispatch_watch(db_url: str, drain_timeout_s: float = 600) -> Iterator[dict[str, Any]]:
    """How fast the dispatcher creates flow runs behind `POST /tasks` (the outbox).

    Counts dispatched workflows in the app's database when the block starts and ends, then
    waits until none is left waiting: the block's dict gets the backlog at its end, the
    time to drain it and the flow runs created per second over the whole span.
    Run with `AUDIOFLOW_DISPATCH_THREADS=0` (no API process dispatches; the phases then time
    the request path without the dispatcher's share of the CPU) it does not wait.
    """
    if os.environ.get("AUDIOFLOW_DISPATCH_THREADS") == "0":
        drain_timeout_s = 0
    engine = create_engine(db_url)
    waiting_sql = text("SELECT count(*) FROM workflows WHERE instance_id IS NULL "
                       "AND status = 'queued'")
    done_sql = text("SELECT count(*) FROM workflows WHERE instance_id IS NOT NULL")

    def counts() -> tuple[int, int]:
        with engine.connect() as conn:
            return int(conn.scalar(waiting_sql) or 0), int(conn.scalar(done_sql) or 0)

    out: dict[str, Any] = {}
    try:
        _, done_before = counts()
        start = time.perf_counter()
        yield out
        end = time.perf_counter()
        backlog, _ = counts()
        waiting = backlog
        while waiting and time.perf_counter() - end < drain_timeout_s:
            time.sleep(0.25)
            waiting, _ = counts()
        drained = time.perf_counter()
        _, done_after = counts()
        out.update(
            backlog=backlog,
            left=waiting,
            drain_s=drained - end,
            runs=done_after - done_before,
            runs_per_s=(done_after - done_before) / max(drained - start, 1e-9),
        )
    finally:
        engine.dispose()


def wait_until_idle(pid: int, *, below_cores: float = 0.05, settle_s: float = 3.0,
                    max_s: float = 240.0) -> float:
    """Wait until a process has used less than `below_cores` for `settle_s`; the seconds waited.

    After the create phase Prefect's server holds thousands of Scheduled runs that no
    worker takes (the worker is stopped), and its late-runs service marks each one Late:
    measured at 0.3-0.4 of a core for a minute or more. A stack with running workers never
    has that backlog, so the next phases start only when Prefect is quiet again.
    """
    start = time.perf_counter()
    quiet_since: float | None = None
    last = procmon.cpu_seconds(pid)
    while time.perf_counter() - start < max_s:
        time.sleep(1.0)
        now = procmon.cpu_seconds(pid)
        if now is None or last is None:
            break
        busy = now - last
        last = now
        if busy < below_cores:
            quiet_since = quiet_since or time.perf_counter()
            if time.perf_counter() - quiet_since >= settle_s:
                break
        else:
            quiet_since = None
    return time.perf_counter() - start


def _tree_cpu_s(pid: int) -> float:
    """CPU seconds used so far by a process and its children (uvicorn's workers)."""
    return sum(procmon.cpu_seconds(p) or 0.0 for p in procmon.descendants([pid]))


def _phases(
    port: int, audio_key: str, config: Config, label: str, *, background: bool, db_url: str,
    prefect_pid: int, api_pid: int,
) -> dict[str, dict[str, Any]]:
    """Phases 1-3 (and 4 if `background`) against the API on `port` (process `api_pid`)."""
    d, warm = config.api_phase_s, min(2.0, config.api_phase_s / 4)
    out: dict[str, dict[str, Any]] = {}
    print(f"   [{label}]", flush=True)
    with dispatch_watch(db_url) as dispatch:
        cpu_before = _tree_cpu_s(api_pid)
        out["create"] = run_load(_spec(port, create_requests(audio_key), mode="closed",
                                       connections=8, duration_s=config.api_create_s + warm,
                                       warmup_s=warm))
        # The API's CPU per request, warm-up included (at the phase's rate): less sensitive
        # to other load on the machine than the rate itself.
        out["create"]["api_cpu_ms"] = 1000 * (_tree_cpu_s(api_pid) - cpu_before) / max(
            out["create"]["ok_per_s"] * (config.api_create_s + warm), 1e-9)
    out["dispatch"] = dispatch
    dispatch["prefect_settle_s"] = (
        0.0 if os.environ.get("AUDIOFLOW_DISPATCH_THREADS") == "0"  # no runs to settle
        else wait_until_idle(prefect_pid)
    )
    tasks = live_tasks(f"http://127.0.0.1:{port}", 1000)
    if not tasks:
        raise RuntimeError("no pending tasks to load with progress updates and reads")
    workflows = [(t["id"], t["workflowId"]) for t in tasks[: config.progress_workflows]]
    out["progress"] = run_load(_spec(port, progress_requests(workflows), mode="closed",
                                     connections=32, duration_s=d + warm, warmup_s=warm))
    out["progress"]["workflows"] = workflows
    ids = [t["id"] for t in tasks]
    out["get_capacity"] = run_load(_spec(port, get_requests(ids), mode="closed",
                                         connections=16, duration_s=d + warm, warmup_s=warm))
    out["get"] = run_load(_spec(port, get_requests(ids), mode="open", rate=config.get_rate,
                                connections=32, duration_s=d + warm, warmup_s=warm))
    if background:
        others = [(t["id"], t["workflowId"]) for t in tasks[config.progress_workflows :]][:200]
        with loadgen(_spec(port, progress_requests(others or workflows), mode="open",
                           rate=BACKGROUND_PROGRESS_RATE, connections=16,
                           duration_s=d + warm + 1, warmup_s=warm)) as bg:
            out["get_mixed"] = run_load(_spec(port, get_requests(ids), mode="open",
                                              rate=config.get_rate, connections=32,
                                              duration_s=d + warm, warmup_s=warm))
        out["background"] = bg
    return out


def _rows(result: ScenarioResult, label: str, phases: dict[str, dict[str, Any]]) -> None:
    create, progress, get = phases["create"], phases["progress"], phases["get"]
    dispatch = phases["dispatch"]
    bad_create = {k: v for k, v in create["statuses"].items() if not k.startswith("2")}
    result.add(
        Row(
            f"{label}: POST /tasks per second",
            f"{create['ok_per_s']:.1f}/s",
            f"p50 {ms(create['p50_s'])}, p99 {ms(create['p99_s'])}; API CPU "
            f"{create['api_cpu_ms']:.2f} ms per request"
            + (f"; non-2xx {bad_create}" if bad_create else ""),
            f"{create['ok_per_s'] / TARGET_CREATE_PER_S:.2f}x of target",
            f">= {TARGET_CREATE_PER_S}/s",
            verdict(create["ok_per_s"] >= TARGET_CREATE_PER_S),
            "" if create["ok_per_s"] >= TARGET_CREATE_PER_S
            else f"{TARGET_CREATE_PER_S / max(create['ok_per_s'], 1e-9):.1f}x short",
        ),
        Row(
            f"{label}: flow runs created behind them (dispatcher)",
            f"{dispatch['runs_per_s']:.1f}/s",
            f"{dispatch['runs']} runs; backlog {dispatch['backlog']} at the phase's end, "
            f"drained in {dispatch['drain_s']:.1f} s"
            + (f", {dispatch['left']} LEFT" if dispatch["left"] else "")
            + f"; Prefect busy {dispatch['prefect_settle_s']:.0f} s more (late-runs service)",
            f"POST /tasks {create['ok_per_s'] / max(dispatch['runs_per_s'], 1e-9):.1f}x faster",
        ),
        Row(
            f"{label}: progress updates per second",
            f"{progress['ok_per_s']:.0f}/s",
            f"p50 {ms(progress['p50_s'])}, p99 {ms(progress['p99_s'])}",
            f"{progress['ok_per_s'] / TARGET_PROGRESS_PER_S:.2f}x of target",
            f">= {TARGET_PROGRESS_PER_S}/s",
            verdict(progress["ok_per_s"] >= TARGET_PROGRESS_PER_S),
            "" if progress["ok_per_s"] >= TARGET_PROGRESS_PER_S
            else f"{TARGET_PROGRESS_PER_S / max(progress['ok_per_s'], 1e-9):.1f}x short",
        ),
        _get_row(f"{label}: GET /tasks/{{id}} p99 at {get_rate_of(get)}/s", get),
        Row(f"{label}: GET /tasks/{{id}} capacity (closed loop, 16 conns)",
            f"{phases['get_capacity']['ok_per_s']:.0f}/s",
            f"p50 {ms(phases['get_capacity']['p50_s'])}, "
            f"p99 {ms(phases['get_capacity']['p99_s'])}"),
    )
    if "get_mixed" in phases:
        bg = phases["background"]
        result.add(
            _get_row(
                f"{label}: GET p99 at {get_rate_of(phases['get_mixed'])}/s "
                f"+ {bg['ok_per_s']:.0f} progress/s",
                phases["get_mixed"],
            )
        )


def get_rate_of(phase: dict[str, Any]) -> int:
    return round(phase["completed"] / phase["window_s"]) if phase["window_s"] else 0


def _get_row(metric: str, get: dict[str, Any]) -> Row:
    p99 = get["p99_s"] if get["p99_s"] is not None else float("inf")
    return Row(
        metric,
        ms(get["p99_s"]),
        f"p50 {ms(get['p50_s'])}, max {ms(get['max_s'])}",
        f"{p99 / TARGET_GET_P99_S:.2f}x of target",
        f"<= {ms(TARGET_GET_P99_S)}",
        verdict(p99 <= TARGET_GET_P99_S),
        "" if p99 <= TARGET_GET_P99_S else f"{(p99 - TARGET_GET_P99_S) * 1000:.1f} ms over",
    )


def _loadgen_cpu_note(phases: dict[str, dict[str, Any]]) -> str:
    parts = [
        f"{name} {p['cpu_s'] / max(p['window_s'], 1e-9):.0%} of a core"
        for name, p in phases.items()
        if "cpu_s" in p
    ]
    return "Load generator CPU (its own process, over each phase): " + ", ".join(parts) + "."


def run(bench: BenchStack, config: Config, result: ScenarioResult) -> None:
    result.sizes = (
        f"phases of {config.api_phase_s:g} s (+ warm-up) per figure, {config.api_create_s:g} s "
        "for POST /tasks; progress over "
        f"{config.progress_workflows} workflows; GETs at {config.get_rate}/s; 1 uvicorn "
        "worker (as running_stack starts it)"
        + (", then a second API process with 2 workers" if config.api_two_workers else "")
    )
    for process in bench.stack.processes:
        if process.name.startswith("worker"):
            process.stop()
    audio_key = bench.put_source(audio.episode(10 / 60))
    port = int(bench.stack.api_url.rsplit(":", 1)[1])
    db_url = bench.env["DATABASE_URL"]
    prefect_pid = bench.stack.process("prefect-server").popen.pid
    one: dict[str, dict[str, Any]] | None = None
    if config.api_one_worker:
        one = _phases(port, audio_key, config, "1 uvicorn worker", background=True,
                      db_url=db_url, prefect_pid=prefect_pid,
                      api_pid=bench.stack.process("api").popen.pid)
        _rows(result, "1 worker", one)
        result.notes.append(_loadgen_cpu_note(one))

    if config.api_two_workers:
        port2 = free_port()
        api2: ManagedProcess = start_api(
            bench.env, port2, bench.stack.home / "logs", workers=2
        )
        try:
            time.sleep(2)  # both workers up
            two = _phases(port2, audio_key, config, "2 uvicorn workers", background=False,
                          db_url=db_url, prefect_pid=prefect_pid, api_pid=api2.popen.pid)
        finally:
            api2.stop()
        _rows(result, "2 workers", two)

    if one is None:
        return
    _event_loop_variant(bench, config, result, workflows_of(one))
    _schema_check_variant(bench, port, audio_key, config, result, db_url, prefect_pid)
    _gateway_probe(bench, config, result)
    _progress_probe(bench, config, result)
    if config.profile:
        _profiles(bench, port, audio_key, config, result)
    result.notes.append(
        "The embedded Prefect server (SQLite) answered some requests with 503 "
        f"('database is locked'); the harness itself retried {bench.prefect_503s} of its own."
        if bench.prefect_503s
        else "The harness saw no 503 from Prefect's API."
    )


def workflows_of(phases: dict[str, dict[str, Any]]) -> list[tuple[str, str]]:
    """The (task, workflow) ids the progress phase reported on."""
    return list(phases["progress"]["workflows"])


def _event_loop_variant(
    bench: BenchStack, config: Config, result: ScenarioResult, workflows: list[tuple[str, str]]
) -> None:
    """Progress reports per second on a second API process (one worker) running uvicorn's
    pure-Python stack, `--loop asyncio --http h11`: the baseline for uvloop + httptools,
    which the shipped API picks up by itself. The two phases alternate, twice each."""
    d, warm = config.api_phase_s, min(2.0, config.api_phase_s / 4)
    port = int(bench.stack.api_url.rsplit(":", 1)[1])
    base_port = free_port()
    base = start_api(bench.env, base_port, bench.stack.home / "logs",
                     uvicorn_args=("--loop", "asyncio", "--http", "h11"))
    rates: dict[str, list[float]] = {"shipped": [], "asyncio": []}
    try:
        for _ in range(2):
            for name, target in (("asyncio", base_port), ("shipped", port)):
                phase = run_load(_spec(target, progress_requests(workflows), mode="closed",
                                       connections=32, duration_s=d / 2 + warm, warmup_s=warm))
                rates[name].append(phase["ok_per_s"])
    finally:
        base.stop()
    shipped, before = statistics.median(rates["shipped"]), statistics.median(rates["asyncio"])
    result.add(
        Row("progress updates per second, uvicorn on asyncio + h11 (before)",
            f"{before:.0f}/s", ", ".join(f"{r:.0f}" for r in rates["asyncio"])),
        Row("progress updates per second, uvicorn on uvloop + httptools (as shipped)",
            f"{shipped:.0f}/s", ", ".join(f"{r:.0f}" for r in rates["shipped"]),
            f"{shipped / max(before, 1e-9):.2f}x"),
    )
    result.notes.append(
        f"Event-loop variant: alternating closed-loop progress phases of {d / 2:g} s against "
        "the stack's API and a second one-worker API with `--loop asyncio --http h11`, two "
        "each, medians."
    )


def _schema_check_variant(
    bench: BenchStack, port: int, audio_key: str, config: Config, result: ScenarioResult,
    db_url: str, prefect_pid: int,
) -> None:
    """Flow runs created per second with Prefect's parameter-schema check on (its default,
    the baseline) and off (as shipped), alternating short bursts on the same stack."""
    rates: dict[bool, list[float]] = {True: [], False: []}
    rounds = 1 if config.quick else 2
    try:
        for _ in range(rounds):
            for enforce in (True, False):
                bench.set_enforce_parameter_schema(AUDIO_DEPLOYMENT, enforce)
                with dispatch_watch(db_url) as dispatch:
                    run_load(_spec(port, create_requests(audio_key), mode="closed",
                                   connections=8, duration_s=2.5, warmup_s=0.5))
                wait_until_idle(prefect_pid)
                rates[enforce].append(dispatch["runs_per_s"])
    finally:
        bench.set_enforce_parameter_schema(AUDIO_DEPLOYMENT, False)  # as prefect.yaml ships
    on, off = statistics.median(rates[True]), statistics.median(rates[False])
    result.add(
        Row("flow runs created per second, Prefect checks the parameter schema (default)",
            f"{on:.1f}/s", ", ".join(f"{r:.1f}" for r in rates[True])),
        Row("flow runs created per second, schema check off (as shipped)",
            f"{off:.1f}/s", ", ".join(f"{r:.1f}" for r in rates[False]),
            f"{off / max(on, 1e-9):.2f}x"),
    )
    result.notes.append(
        f"Schema-check variant: {rounds} alternating burst(s) of 2.5 s of POST /tasks per "
        "setting, each drained by the dispatcher; medians of the runs created per second."
    )


def _run_probe(bench: BenchStack, module: str, n: int) -> dict[str, Any]:
    """Run `python -m <module> n` with the stack's environment; its last line is JSON."""
    out = subprocess.run(
        [sys.executable, "-m", module, str(n)],
        env=bench.env, capture_output=True, text=True, timeout=600, check=True,
    ).stdout
    probe: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return probe


def _gateway_probe(bench: BenchStack, config: Config, result: ScenarioResult) -> None:
    """Time the API's Prefect client outside the API (`bench.gateway_probe`)."""
    n = 5 if config.quick else 30
    probe = _run_probe(bench, "bench.gateway_probe", n)
    build, new_client, shipped = (probe["build_client"], probe["create_new_client"],
                                  probe["create_reused_client"])
    result.add(
        Row("Prefect create_flow_run, new client per call (before)",
            f"{new_client['wall_ms']:.0f} ms",
            f"CPU {new_client['cpu_ms']:.0f} ms in the caller"),
        Row("Prefect create_flow_run, shared client (as shipped)",
            f"{shipped['wall_ms']:.0f} ms", f"CPU {shipped['cpu_ms']:.0f} ms in the caller",
            f"{new_client['wall_ms'] / max(shipped['wall_ms'], 1e-9):.1f}x faster"),
        Row("building one SyncPrefectClient", f"{build['wall_ms']:.0f} ms",
            f"CPU {build['cpu_ms']:.0f} ms"),
    )
    result.notes.append(
        f"Gateway probe: {n} sequential calls each, medians, from a separate process with the "
        "stack's environment while no load ran (`python -m bench.gateway_probe`)."
    )


def _progress_probe(bench: BenchStack, config: Config, result: ScenarioResult) -> None:
    """Time one progress report in the service, hot path vs the general path
    (`bench.progress_probe`, its own throwaway database, no HTTP)."""
    n = 100 if config.quick else 500
    probe = _run_probe(bench, "bench.progress_probe", n)
    shipped, two, general = probe["shipped"], probe["two_statements"], probe["general"]
    result.add(
        Row("progress report in the service, general path (first)",
            f"{general['wall_ms']:.2f} ms", f"CPU {general['cpu_ms']:.2f} ms"),
        Row("progress report in the service, two UPDATE ... RETURNING (before)",
            f"{two['wall_ms']:.2f} ms", f"CPU {two['cpu_ms']:.2f} ms",
            f"{general['cpu_ms'] / max(two['cpu_ms'], 1e-9):.1f}x less CPU than first"),
        Row("progress report in the service, one autocommitted statement (as shipped)",
            f"{shipped['wall_ms']:.2f} ms", f"CPU {shipped['cpu_ms']:.2f} ms",
            f"{two['wall_ms'] / max(shipped['wall_ms'], 1e-9):.1f}x faster, "
            f"{two['cpu_ms'] / max(shipped['cpu_ms'], 1e-9):.1f}x less CPU than before"),
    )
    result.notes.append(
        f"Progress probe: 5 batches of {n} sequential plain reports per path through "
        "`WorkflowService.apply_progress` on PostgreSQL, medians per report "
        "(`python -m bench.progress_probe`)."
    )


def _profiles(
    bench: BenchStack, port: int, audio_key: str, config: Config, result: ScenarioResult
) -> None:
    api_pid = bench.stack.process("api").popen.pid
    prefect_pid = bench.stack.process("prefect-server").popen.pid
    d = max(4.0, config.api_phase_s / 2)
    tag = uuid.uuid4().hex[:6]
    with profiling.record(api_pid, f"s4-api-create-{tag}", subprocesses=True) as api_prof, \
            profiling.record(prefect_pid, f"s4-prefect-create-{tag}",
                             subprocesses=True) as prefect_prof:
        run_load(_spec(port, create_requests(audio_key), mode="closed", connections=8,
                       duration_s=d, warmup_s=0.5))
    with dispatch_watch(bench.env["DATABASE_URL"]):
        pass  # let the dispatcher finish the runs the profiled phase left
    wait_until_idle(prefect_pid)
    tasks = live_tasks(f"http://127.0.0.1:{port}", config.progress_workflows)
    workflows = [(t["id"], t["workflowId"]) for t in tasks]
    with profiling.record(api_pid, f"s4-api-progress-{tag}", subprocesses=True) as prog_prof:
        run_load(_spec(port, progress_requests(workflows), mode="closed", connections=32,
                       duration_s=d, warmup_s=0.5))
    result.section("Profile: the API (1 worker) under POST /tasks (py-spy)",
                   profiling.summary_markdown(api_prof))
    result.section("Profile: the Prefect server under POST /tasks (py-spy)",
                   profiling.summary_markdown(prefect_prof))
    result.section("Profile: the API (1 worker) under progress updates (py-spy)",
                   profiling.summary_markdown(prog_prof))
