"""Scenario 6: push (issue 14): event latency with many open streams, webhook deliveries per
second, and what both cost the progress endpoint, on PostgreSQL, in one run.

The stack's API is replaced (same port, one uvicorn worker) by one with webhooks on
(`AUDIOFLOW_WEBHOOK_SECRET`, `AUDIOFLOW_WEBHOOK_URLS` = a loopback receiver,
`bench.webhook_receiver`, in its own process) and no dispatcher threads: the tasks it is
given stay queued, so Prefect creates no flow runs during the phases (the worker is
stopped too). Tasks: `push_streams` that the streams follow and the progress reports go to,
and more for the status changes (each one `running`, then `cancelled`: two webhook events).

Phases, each `push_phase_s` after a short warm-up, the progress reports stamped with their
send time in the message (`bench.loadgen`'s `stamp`):

A0. Progress reports, closed loop, with the log's NOTIFY trigger switched off (the app's
    throwaway database): what the notifications themselves cost every report.
A1. Progress reports, closed loop (32 connections, as scenario 4), over the followed
    tasks: nothing open, nothing delivered.
B.  The same while `push_streams` task streams (+ `push_all_streams` `GET /events`) are
    open in `bench.sse_client` and status changes arrive at 3 % of A1's rate (at most
    `push_status_rate`/s, open loop): the endpoint's rate with push, each event's latency,
    deliveries/s.
C.  The same streams and status changes with progress at a steady half of A1's rate (at
    most `push_steady_rate`/s, open loop): the latency when the API is not saturated.
A2. As A1, after the streams closed (the baseline is the mean of A1 and A2).
D.  `push_burst` tasks change status (two changes each) as fast as the API takes them: the
    deliverer's own rate, measured while it works off the backlog.

Latency is from the report's send time (in its message) to the moment the stream client
read the event, over every (stream, event) pair; also from the moment the POST was
answered. Reports of a task superseded by its next report before a stream read the log are
never sent (the log keeps the latest progress per task): the share received is reported.
"""

from __future__ import annotations

import base64
import contextlib
import json
import secrets
import statistics
import subprocess
import sys
import threading
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
from sqlalchemy import create_engine, text

from bench import audio, procmon, profiling
from bench.config import Config
from bench.harness import HEADERS, TOKEN, BenchStack
from bench.report import Row, ScenarioResult, verdict
from bench.scenarios.api_load import _raw, _spec, loadgen, run_load
from bench.stats import ms, percentile
from cli.stack import start_api

TARGET_P99_S = 0.050
TARGET_RATIO = 0.95
#: Replaced by the send time in each stamped report (`bench.loadgen`).
PLACEHOLDER = "@" * 17
PROGRESS_CONNECTIONS = 32


def _report(task_id: str, workflow_id: str, **fields: Any) -> str:
    body = {"taskId": task_id, "workflowId": workflow_id, **fields}
    return _raw("POST", "/internal/workflow-progress", body,
                {"Authorization": f"Bearer {TOKEN}"})


def stamped_progress(workflows: list[tuple[str, str]], count: int = 3000) -> list[str]:
    """Plain reports, round-robin over the workflows, each carrying its send time."""
    out = []
    for n in range(count):
        task_id, workflow_id = workflows[n % len(workflows)]
        out.append(_report(task_id, workflow_id, progress=min(99, n // len(workflows)),
                           step="encode:mp3_128", message=f"t={PLACEHOLDER}"))
    return out


def status_changes(workflows: list[tuple[str, str]], gap: int) -> list[str]:
    """Each workflow `running`, then `cancelled` `gap` requests later: one status event (and
    one webhook) per request."""
    out = []
    for n, (task_id, workflow_id) in enumerate(workflows):
        out.append(_report(task_id, workflow_id, status="running", step="download"))
        if n >= gap:
            out.append(_report(*workflows[n - gap], status="cancelled"))
    out += [_report(*w, status="cancelled") for w in workflows[max(0, len(workflows) - gap):]]
    return out


def create_tasks(api_url: str, audio_key: str, episode: str, n: int) -> list[tuple[str, str]]:
    """`POST /tasks` n times (8 at once); their (task, workflow) ids."""
    payload = {
        "type": "audio_processing",
        "payload": {"episodeId": episode, "audioKey": audio_key,
                    "encodingFormats": ["mp3_128"], "transcribe": False, "language": "en"},
    }
    with httpx.Client(base_url=api_url, headers=HEADERS, timeout=60) as client:
        def one(_: int) -> tuple[str, str]:
            response = client.post("/tasks", json=payload)
            if response.status_code != 201:
                raise RuntimeError(f"POST /tasks answered {response.status_code}: "
                                   f"{response.text[:200]}")
            body = response.json()
            return str(body["id"]), str(body["workflowId"])

        with ThreadPoolExecutor(8) as pool:
            return list(pool.map(one, range(n)))


class Helper:
    """A helper process (`python -m <module>`) spoken to by lines on stdin and stdout."""

    def __init__(self, module: str, *first_lines: str) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", module], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
            text=True,
        )
        assert self.proc.stdin is not None and self.proc.stdout is not None
        for line in first_lines:
            self.proc.stdin.write(line + "\n")
        self.proc.stdin.flush()
        ready = self.proc.stdout.readline().split()
        if not ready or ready[0] != "ready":
            self.proc.kill()
            raise RuntimeError(f"{module} did not start: {ready}")
        self.ready = int(ready[1])

    def stop(self) -> dict[str, Any]:
        assert self.proc.stdin is not None and self.proc.stdout is not None
        self.proc.stdin.write("stop\n")
        self.proc.stdin.flush()
        out = self.proc.stdout.readline()
        self.proc.wait(60)
        if not out:
            raise RuntimeError(f"helper exited with {self.proc.returncode} and no result")
        result: dict[str, Any] = json.loads(out)
        return result

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()


@contextlib.contextmanager
def helper(module: str, *first_lines: str) -> Iterator[Helper]:
    process = Helper(module, *first_lines)
    try:
        yield process
    finally:
        process.kill()


def _tree_cpu_s(pid: int) -> float:
    return sum(procmon.cpu_seconds(p) or 0.0 for p in procmon.descendants([pid]))


def _cpu(pid: int) -> dict[str, float]:
    """CPU seconds so far: the API's tree, its event loop (uvicorn's main thread: the
    streams, the hub, HTTP parsing) and PostgreSQL's processes (all of them)."""
    return {
        "api": _tree_cpu_s(pid),
        "loop": procmon.thread_cpu_seconds(pid, pid) or 0.0,
        "postgres": procmon.named_cpu_seconds("postgres"),
    }


def _cpu_since(pid: int, before: dict[str, float]) -> dict[str, float]:
    now = _cpu(pid)
    return {key: now[key] - before[key] for key in before}


def _wait_delivered(db_url: str, timeout_s: float) -> float:
    """Wait until no webhook event or delivery is left pending; seconds waited."""
    engine = create_engine(db_url)
    sql = text("SELECT (SELECT count(*) FROM task_events WHERE fanout_pending) "
               "+ (SELECT count(*) FROM webhook_deliveries WHERE status = 'pending')")
    start = time.perf_counter()
    try:
        while time.perf_counter() - start < timeout_s:
            with engine.connect() as conn:
                if not conn.scalar(sql):
                    break
            time.sleep(0.25)
    finally:
        engine.dispose()
    return time.perf_counter() - start


@contextlib.contextmanager
def wait_events(db_url: str, every_s: float = 0.1) -> Iterator[Counter[str]]:
    """What the app database's active backends wait on, sampled from `pg_stat_activity`
    while the block runs (one count per backend per sample; `running` when not waiting)."""
    counts: Counter[str] = Counter()
    stop = threading.Event()
    engine = create_engine(db_url)
    sql = text("SELECT coalesce(wait_event_type || ': ' || wait_event, 'running') "
               "FROM pg_stat_activity WHERE datname = current_database() "
               "AND state = 'active' AND pid <> pg_backend_pid()")

    def sample() -> None:
        with engine.connect() as conn:
            while not stop.wait(every_s):
                counts.update(str(row[0]) for row in conn.execute(sql))
                conn.rollback()

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        yield counts
    finally:
        stop.set()
        thread.join(10)
        engine.dispose()


def _waits(counts: Counter[str], top: int = 4) -> str:
    total = sum(counts.values())
    if not total:
        return "none sampled"
    return ", ".join(f"{name} {n / total:.0%}" for name, n in counts.most_common(top))


def _notify_trigger(db_url: str, *, enabled: bool) -> None:
    """Switch the event log's NOTIFY trigger (migration 0004) on or off."""
    engine = create_engine(db_url)
    try:
        with engine.begin() as conn:
            conn.execute(text(f"ALTER TABLE task_events {'ENABLE' if enabled else 'DISABLE'} "
                              "TRIGGER task_events_notify"))
    finally:
        engine.dispose()


def _phase_latency(stamps: list[list[float]], received: list[list[float]], since: float,
                   streams_per_event: float) -> dict[str, Any]:
    """Latencies of the phase's stamped reports sent after `since` (its warm-up)."""
    answered = {s: a for s, a in stamps if s >= since}
    from_send, from_answer, got = [], [], set()
    for stamp, at, _kind in received:
        if stamp in answered:
            from_send.append(at - stamp)
            from_answer.append(at - answered[stamp])
            got.add(stamp)
    return {
        "pairs": len(from_send),
        "reports": len(answered),
        "received_share": len(got) / max(len(answered), 1),
        "pairs_per_report": len(from_send) / max(len(got), 1),
        "expected_per_report": streams_per_event,
        "p50_s": percentile(from_send, 50),
        "p99_s": percentile(from_send, 99),
        "max_s": max(from_send) if from_send else float("nan"),
        "answer_p50_s": percentile(from_answer, 50),
        "answer_p99_s": percentile(from_answer, 99),
    }


def _deliveries(deliveries: list[list[Any]], start: float, end: float) -> dict[str, Any]:
    """Deliveries received in [start, end): per second, and written-to-received latency."""
    inside = [d for d in deliveries if start <= d[0] < end]
    lags = [d[0] - d[1] for d in inside if d[1] is not None]
    return {
        "count": len(inside),
        "per_s": len(inside) / max(end - start, 1e-9),
        "p50_s": percentile(lags, 50),
        "p99_s": percentile(lags, 99),
    }


def run(bench: BenchStack, config: Config, result: ScenarioResult) -> None:
    d, warm = config.push_phase_s, min(2.0, config.push_phase_s / 4)
    streams, all_streams = config.push_streams, config.push_all_streams
    status_rate = config.push_status_rate
    result.sizes = (
        f"{streams} task streams + {all_streams} all-task streams; phases of {d:g} s "
        f"(+ {warm:g} s warm-up); progress closed loop ({PROGRESS_CONNECTIONS} connections) "
        f"over the {streams} followed tasks, and at half its no-stream rate (at most "
        f"{config.push_steady_rate}/s); status changes beside it at 3 % of that rate (at most "
        f"{status_rate}/s); a backlog of {2 * config.push_burst} "
        "status changes; 1 uvicorn worker with webhooks on, no dispatcher"
    )
    for process in bench.stack.processes:
        if process.name.startswith("worker"):
            process.stop()
    audio_key = bench.put_source(audio.episode(10 / 60))
    port = int(bench.stack.api_url.rsplit(":", 1)[1])
    db_url = bench.env["DATABASE_URL"]
    secret = "whsec_" + base64.b64encode(secrets.token_bytes(32)).decode()
    with helper("bench.webhook_receiver", secret, "10") as receiver:
        old = bench.stack.process("api")
        old.stop()
        env = {
            **bench.env,
            "AUDIOFLOW_WEBHOOK_SECRET": secret,
            "AUDIOFLOW_WEBHOOK_URLS": f"http://127.0.0.1:{receiver.ready}/hook",
            "AUDIOFLOW_WEBHOOK_ALLOW_PRIVATE": "true",
            "AUDIOFLOW_DISPATCH_THREADS": "0",
        }
        api = bench.stack.replace(old, start_api(env, port, bench.stack.home / "logs"))
        api_pid = api.popen.pid
        _measure(bench, config, result, receiver, port, db_url, audio_key, api_pid, d, warm)


def _measure(
    bench: BenchStack, config: Config, result: ScenarioResult, receiver: Helper, port: int,
    db_url: str, audio_key: str, api_pid: int, d: float, warm: float,
) -> None:
    streams, all_streams = config.push_streams, config.push_all_streams
    status_rate = config.push_status_rate
    tag = uuid.uuid4().hex[:6]
    per_phase = int(status_rate * (d + warm)) // 2 + 1
    t0 = time.perf_counter()
    followed = create_tasks(bench.stack.api_url, audio_key, f"push-{tag}", streams)
    churn = create_tasks(bench.stack.api_url, audio_key, f"push-churn-{tag}", 2 * per_phase)
    burst = create_tasks(bench.stack.api_url, audio_key, f"push-burst-{tag}", config.push_burst)
    created_s = time.perf_counter() - t0
    print(f"   created {len(followed) + len(churn) + len(burst)} tasks in {created_s:.1f} s",
          flush=True)
    progress = stamped_progress(followed)

    def closed(label: str) -> dict[str, Any]:
        cpu0 = _cpu(api_pid)
        with wait_events(db_url) as waits:
            phase = run_load(_spec(port, progress, mode="closed",
                                   connections=PROGRESS_CONNECTIONS, duration_s=d + warm,
                                   warmup_s=warm, stamp=PLACEHOLDER, record_stamps=True,
                                   label=label))
        phase["cpu"] = _cpu_since(api_pid, cpu0)
        phase["api_cpu_s"] = phase["cpu"]["api"]
        phase["waits"] = waits
        return phase

    def with_status(spec: dict[str, Any], tasks: list[tuple[str, str]]) -> dict[str, Any]:
        """A progress phase with `rate` status changes per second beside it."""
        rate = phases["rates"]["status"]
        started = time.time()
        cpu0 = _cpu(api_pid)
        if not rate:  # BENCH_PUSH_STATUS_RATE=0: the streams' cost alone
            with wait_events(db_url) as waits:
                phase = run_load(spec)
            phase.update(waits=waits, cpu=_cpu_since(api_pid, cpu0), started=started,
                         status={"ok_per_s": 0.0})
            phase["api_cpu_s"] = phase["cpu"]["api"]
            return phase
        changes = status_changes(tasks, max(1, rate // 2))[: int(rate * (d + warm))]
        with loadgen(_spec(port, changes, mode="open", rate=rate, connections=4,
                           duration_s=len(changes) / rate + 1e-6, warmup_s=warm)) as side, \
                wait_events(db_url) as waits:
            phase = run_load(spec)
        phase["waits"] = waits
        phase["cpu"] = _cpu_since(api_pid, cpu0)
        phase["api_cpu_s"] = phase["cpu"]["api"]
        phase["status"] = side
        phase["started"] = started
        return phase

    phases: dict[str, dict[str, Any]] = {}
    _notify_trigger(db_url, enabled=False)
    try:
        phases["A0"] = closed("A0")
    finally:
        _notify_trigger(db_url, enabled=True)
    phases["A1"] = closed("A1")
    # The other loads follow the capacity just measured, so that they mean the same on a
    # busy machine: status changes at 3 % of it (at most `push_status_rate`; a fleet
    # reporting progress every second or two changes status that often), and the steady
    # progress rate at half of it (at most `push_steady_rate`).
    capacity = phases["A1"]["ok_per_s"]
    phases["rates"] = {
        "status": max(2, min(status_rate, round(0.03 * capacity))) if status_rate else 0,
        "steady": max(10, min(config.push_steady_rate, round(0.5 * capacity))),
    }
    # Let the last reports' notifications settle before the streams replay the log.
    ids = [task_id for task_id, _ in followed]
    with helper("bench.sse_client",
                json.dumps({"host": "127.0.0.1", "port": port, "api_key": HEADERS["X-API-Key"],
                            "task_ids": ids, "all_streams": all_streams})) as client:
        opened = client.ready
        print(f"   {opened} of {streams + all_streams} streams open", flush=True)
        time.sleep(1.0)  # the streams' replays done
        half = len(churn) // 2
        phases["B"] = with_status(
            _spec(port, progress, mode="closed", connections=PROGRESS_CONNECTIONS,
                  duration_s=d + warm, warmup_s=warm, stamp=PLACEHOLDER, record_stamps=True),
            churn[:half],
        )
        phases["C"] = with_status(
            _spec(port, progress, mode="open", rate=phases["rates"]["steady"],
                  connections=PROGRESS_CONNECTIONS, duration_s=d + warm, warmup_s=warm,
                  stamp=PLACEHOLDER, record_stamps=True),
            churn[half:],
        )
        time.sleep(1.0)  # the last events reach the streams
        if config.profile:  # untimed, after the timed phases: where the API's time goes
            prof = _profile(port, progress, api_pid, d)
            result.section(f"Profile: the API under progress reports with {opened} streams "
                           "open (py-spy)", profiling.summary_markdown(prof))
        got = client.stop()
    phases["A2"] = closed("A2")
    # D: the deliverer alone against a backlog (nothing else runs once the reports are in).
    _wait_delivered(db_url, 60)
    changes = status_changes(burst, max(1, len(burst) // 4))
    burst_start = time.time()
    phases["D"] = run_load(_spec(port, changes, mode="open", rate=2000, connections=8,
                                 duration_s=len(changes) / 2000 + 1e-6, warmup_s=0,
                                 drain_s=300))
    reports_done = time.time()
    drained_s = _wait_delivered(db_url, 180)
    delivered = receiver.stop()
    _rows(result, config, phases, got, delivered, burst_start, reports_done, drained_s,
          len(changes), opened, warm)


def _rows(
    result: ScenarioResult, config: Config, phases: dict[str, dict[str, Any]],
    got: dict[str, Any], delivered: dict[str, Any], burst_start: float, reports_done: float,
    drained_s: float, burst_changes: int, opened: int, warm: float,
) -> None:
    streams = config.push_streams + config.push_all_streams
    received = got["stamped"]
    a1, a2, b, c = (phases[k] for k in ("A1", "A2", "B", "C"))
    base = statistics.mean([a1["ok_per_s"], a2["ok_per_s"]])
    b_status = b["status"]["ok_per_s"]
    b_total = b["ok_per_s"] + b_status
    ratio = b_total / max(base, 1e-9)
    per_event = 1 + config.push_all_streams
    lat_b = _phase_latency(b["stamps"], received, b["started"] + warm, per_event)
    lat_c = _phase_latency(c["stamps"], received, c["started"] + warm, per_event)
    deliveries = delivered["deliveries"]
    web_b = _deliveries(deliveries, b["started"] + warm, b["started"] + warm + b["window_s"])
    web_c = _deliveries(deliveries, c["started"] + warm, c["started"] + warm + c["window_s"])
    burst = [x for x in deliveries if x[0] >= burst_start]
    drain = [x for x in burst if x[0] >= reports_done]
    burst_rate = (len(burst) - 1) / max(burst[-1][0] - burst[0][0], 1e-9) if burst else 0.0
    drain_rate = (len(drain) - 1) / max(drain[-1][0] - drain[0][0], 1e-9) if len(drain) > 1 \
        else float("nan")

    def cpu_ms(phase: dict[str, Any], per_s: float, key: str = "api") -> float:
        """CPU per request over the phase (warm-up included, at the phase's rate): the
        API's (`api`), its event loop's (`loop`), PostgreSQL's (`postgres`); less sensitive
        to other load on the machine than the rate itself."""
        return 1000 * phase["cpu"][key] / max(per_s * (phase["window_s"] + warm), 1e-9)

    def a_mean(key: str) -> float:
        return statistics.mean(
            [cpu_ms(a1, a1["ok_per_s"], key), cpu_ms(a2, a2["ok_per_s"], key)]
        )

    a_cpu_ms = a_mean("api")
    b_cpu_ms = cpu_ms(b, b_total)

    def lat_row(label: str, lat: dict[str, Any], progress_rate: float) -> Row:
        p99 = lat["p99_s"]
        return Row(
            f"event latency, {streams} streams, {label}: p99",
            ms(p99),
            f"p50 {ms(lat['p50_s'])}, max {ms(lat['max_s'])}; from the POST's answer p50 "
            f"{ms(lat['answer_p50_s'])}, p99 {ms(lat['answer_p99_s'])}; {lat['pairs']} "
            f"(stream, event) pairs at {progress_rate:.0f} reports/s, "
            f"{lat['received_share']:.0%} of reports sent",
            f"{p99 / TARGET_P99_S:.2f}x of target",
            f"<= {ms(TARGET_P99_S)}",
            verdict(p99 <= TARGET_P99_S),
            "" if p99 <= TARGET_P99_S else f"{(p99 - TARGET_P99_S) * 1000:.0f} ms over",
        )

    result.add(
        Row("progress reports per second, nothing open (A1, A2)",
            f"{base:.0f}/s",
            f"A1 {a1['ok_per_s']:.0f}/s, A2 {a2['ok_per_s']:.0f}/s; p99 {ms(a1['p99_s'])}, "
            f"{ms(a2['p99_s'])}"),
        Row("progress reports per second, NOTIFY trigger off (A0)",
            f"{phases['A0']['ok_per_s']:.0f}/s",
            f"p99 {ms(phases['A0']['p99_s'])}; trigger on, nothing open: {base:.0f}/s",
            f"on/off {base / max(phases['A0']['ok_per_s'], 1e-9):.2f}x"),
        Row(f"progress endpoint per second, {streams} streams + webhooks (B)",
            f"{b_total:.0f}/s",
            f"{b['ok_per_s']:.0f} plain + {b_status:.0f} status changes/s; p99 "
            f"{ms(b['p99_s'])}; nothing open {base:.0f}/s",
            f"{ratio:.2f}x", f">= {TARGET_RATIO:.2f}x", verdict(ratio >= TARGET_RATIO),
            "" if ratio >= TARGET_RATIO else f"{(TARGET_RATIO - ratio) * 100:.0f} points short"),
        lat_row("progress saturated (B)", lat_b, b["ok_per_s"]),
        lat_row(f"progress at {phases['rates']['steady']}/s, half of A1 (C)", lat_c,
                c["ok_per_s"]),
        Row(f"API CPU per request, {streams} streams + webhooks (B)",
            f"{b_cpu_ms:.2f} ms",
            f"nothing open (A1, A2) {a_cpu_ms:.2f} ms; NOTIFY trigger off (A0) "
            f"{cpu_ms(phases['A0'], phases['A0']['ok_per_s']):.2f} ms",
            f"{b_cpu_ms / max(a_cpu_ms, 1e-9):.2f}x"),
        Row(f"where the CPU per request goes, {streams} streams + webhooks (B)",
            f"{cpu_ms(b, b_total, 'loop'):.2f} ms loop",
            f"API event loop {cpu_ms(b, b_total, 'loop'):.2f} ms, API threads "
            f"{b_cpu_ms - cpu_ms(b, b_total, 'loop'):.2f} ms, PostgreSQL "
            f"{cpu_ms(b, b_total, 'postgres'):.2f} ms; nothing open: loop "
            f"{a_mean('loop'):.2f} ms, threads {a_cpu_ms - a_mean('loop'):.2f} ms, "
            f"PostgreSQL {a_mean('postgres'):.2f} ms"),
        Row(f"webhook deliveries per second beside B ({b_status:.0f} status changes/s)",
            f"{web_b['per_s']:.1f}/s",
            f"written to received p50 {ms(web_b['p50_s'])}, p99 {ms(web_b['p99_s'])}; "
            f"beside C: {web_c['per_s']:.1f}/s, p99 {ms(web_c['p99_s'])}"),
        Row(f"webhook deliveries per second, backlog of {burst_changes} (D)",
            f"{drain_rate:.0f}/s",
            f"while the reports still arrived and after: {burst_rate:.0f}/s over "
            f"{len(burst)} deliveries; status changes "
            f"{burst_changes / max(reports_done - burst_start, 1e-9):.0f}/s; "
            f"backlog drained {drained_s:.1f} s after the last report"),
    )
    result.notes += [
        f"Streams: {opened} of {streams} opened in {got['open_s']:.1f} s; statuses "
        f"{got['statuses']}, errors {got['errors'] or 'none'}, {got['ended']} ended early; "
        f"events received by type {got['types']}. Latency is over every (stream, event) "
        f"pair ({config.push_all_streams} all-task streams: each report's event reaches its "
        f"task's stream{' and every all-task stream' if config.push_all_streams else ''}).",
        f"Reports superseded before a stream read the log are not sent (the log keeps the "
        f"latest progress per task): B delivered {lat_b['received_share']:.0%} of its "
        f"reports' events, C {lat_c['received_share']:.0%}.",
        f"Webhooks: {len(deliveries)} deliveries received, {delivered['unique_ids']} distinct "
        f"webhook-ids ({delivered['repeated_ids']} repeats); {delivered['verified']} "
        "signatures checked with `standardwebhooks` (every 10th), failures "
        f"{delivered['verify_failed'] or 'none'}. Receiver CPU {delivered['cpu_s']:.1f} s.",
        "What the app database's active backends waited on (pg_stat_activity, every 0.1 s): "
        + "; ".join(f"{k} {_waits(phases[k]['waits'])}" for k in ("A0", "A1", "B", "A2"))
        + ".",
        f"Stream client CPU "
        f"{got['cpu_s']:.1f} s over B and C; load generator in B "
        f"{b['cpu_s'] / max(b['window_s'], 1e-9):.0%} of a core.",
    ]


def _profile(port: int, progress: list[str], api_pid: int, d: float) -> profiling.Profile:
    """Untimed: py-spy on the API under closed-loop progress reports, streams open."""
    with profiling.record(api_pid, f"s6-api-push-{uuid.uuid4().hex[:6]}",
                          subprocesses=True) as prof:
        run_load(_spec(port, progress, mode="closed", connections=PROGRESS_CONNECTIONS,
                       duration_s=max(4.0, d / 2), warmup_s=0.5, stamp=PLACEHOLDER))
    return prof
