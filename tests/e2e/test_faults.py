"""Fault tests with real processes: killed flows and workers, the API, S3 and PostgreSQL going
away, cancels racing completions. Each ends with the same check: no task claims to be
processing without a live flow run, every done task's outputs are present and decode, and
the tasks the fault did not touch are unchanged. Loopback only, bounded in time."""

from __future__ import annotations

import functools
import json
import os
import subprocess
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from cli.stack import Stack, running_stack, start_api, start_prefect_server, start_worker
from core.storage.s3 import S3Store
from media.probe import probe
from tests.e2e.conftest import HEADERS, dispatched, stack_databases, stack_env
from tests.prefect_fixtures import prefect_client
from tests.support.processes import flow_run_pids, kill_tree
from tests.support.tcp_proxy import TcpProxy, tcp_proxy
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
BUCKET = "audioflow-faults"
LIVE_PREFECT_STATES = {"RUNNING", "PENDING", "SCHEDULED", "CANCELLING"}
ENDED_PREFECT_STATES = {"COMPLETED", "FAILED", "CRASHED", "CANCELLED"}
TERMINAL = {"done", "failed", "cancelled"}


# -- fixtures -----------------------------------------------------------------------------


@pytest.fixture(scope="module")
def s3_proxy(s3_endpoint: str) -> Iterator[TcpProxy]:
    with tcp_proxy(s3_endpoint) as proxy:
        yield proxy


@pytest.fixture(scope="module")
def store(s3_endpoint: str) -> S3Store:
    """Talks to moto directly, so that test set-up is never hit by a cut proxy."""
    direct = S3Store(BUCKET, endpoint_url=s3_endpoint, region="us-east-1")
    direct.ensure_bucket()
    return direct


@pytest.fixture(scope="module")
def fstack(
    s3_proxy: TcpProxy, store: S3Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("faults")
    with stack_databases("audioflow_faults") as dbs:
        env = stack_env(
            dbs,
            s3_proxy.url,
            BUCKET,
            AUDIOFLOW_RETRY_BACKOFF_S="0",
            AUDIOFLOW_MAX_ATTEMPTS="4",
        )
        with running_stack(home, env=env, worker_limit=4) as stack:
            yield stack


@pytest.fixture(scope="module")
def long_source(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Twenty minutes of tone over noise: long enough to be caught mid-encode.

    Four minutes was not: on an idle machine mp3_64 encoded them in under two seconds,
    before a poll could see the step. Two minutes are made, then looped by stream copy.
    """
    folder = tmp_path_factory.mktemp("long")
    piece, path = folder / "piece.mp3", folder / "long.mp3"
    ffmpeg = ["ffmpeg", "-nostdin", "-v", "error", "-y"]
    subprocess.run(
        [
            *ffmpeg,
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=330:duration=120",
            "-f",
            "lavfi",
            "-i",
            "anoisesrc=duration=120:amplitude=0.05",
            "-filter_complex",
            "amix=inputs=2",
            "-ac",
            "2",
            "-ar",
            "44100",
            "-b:a",
            "192k",
            str(piece),
        ],
        check=True,
    )
    subprocess.run(
        [*ffmpeg, "-stream_loop", "9", "-i", str(piece), "-c", "copy", str(path)], check=True
    )
    return path


# -- helpers ------------------------------------------------------------------------------


def api(stack: Stack, method: str, path: str, **kwargs: Any) -> httpx.Response:
    return httpx.request(method, f"{stack.api_url}{path}", headers=HEADERS, timeout=120, **kwargs)


def submit(
    stack: Stack,
    store: S3Store,
    source: Path,
    formats: list[str],
    episode: str | None = None,
    *,
    dispatch: bool = True,
) -> dict[str, Any]:
    """Upload and create a task; with `dispatch`, return it once its flow run exists."""
    episode = episode or f"ep-{uuid.uuid4().hex[:8]}"
    key = f"uploads/{episode}/{source.name}"
    store.put_file(key, source)
    response = api(
        stack,
        "POST",
        "/tasks",
        json={
            "type": "audio_processing",
            "payload": {
                "episodeId": episode,
                "audioKey": key,
                "encodingFormats": formats,
                "transcribe": False,
                # Faults, not loudness (tests/e2e/test_podcast_finishing_e2e.py): without
                # the meters and the waveform each 20-minute attempt costs about half.
                "loudness": None,
                "waveform": False,
            },
        },
    )
    assert response.status_code == 201, response.text
    created: dict[str, Any] = response.json()
    return dispatched(stack, created["id"]) if dispatch else created


def task_row(stack: Stack, task_id: str) -> dict[str, Any]:
    response = api(stack, "GET", f"/tasks/{task_id}")
    assert response.status_code == 200, response.text
    body: dict[str, Any] = response.json()
    return body


def mid_encode(stack: Stack, task_id: str) -> dict[str, Any]:
    def check() -> dict[str, Any] | None:
        row = task_row(stack, task_id)
        assert row["status"] not in ("done", "failed", "cancelled"), f"ended too early: {row}"
        step = row["currentStep"] or ""
        return row if step.startswith("encode:") and row["progress"] > 5 else None

    row: dict[str, Any] = wait_for(f"task {task_id} mid-encode", check, 120)
    return row


def prefect_state(stack: Stack, flow_run_id: str) -> str | None:
    with prefect_client(stack.env["PREFECT_API_URL"]) as client:
        state = client.read_flow_run(uuid.UUID(flow_run_id)).state
    return state.type.value if state is not None else None


def _run_ended(stack: Stack, run_id: str) -> Callable[[], bool]:
    return lambda: prefect_state(stack, run_id) in ENDED_PREFECT_STATES


def reprocess_until(
    stack: Stack, task_ids: list[str], timeout_s: float = 300
) -> dict[str, dict[str, Any]]:
    """Run the reprocessing deployment (as its schedule would) until every task has ended."""
    deadline = time.monotonic() + timeout_s
    while True:
        rows = {t: task_row(stack, t) for t in task_ids}
        if all(r["status"] in ("done", "failed", "cancelled") for r in rows.values()) and not any(
            r["status"] == "failed" and r["errorKind"] == "transient" for r in rows.values()
        ):
            return rows
        if time.monotonic() > deadline:
            raise AssertionError(
                f"not settled after {timeout_s:.0f} s: "
                f"{[(r['status'], r['error']) for r in rows.values()]}"
            )
        run = api(stack, "POST", "/reprocess", json={"staleAfterS": 30})
        assert run.status_code == 201, run.text
        run_id = run.json()["flowRunId"]
        wait_for("the reprocessing run", _run_ended(stack, run_id), 120, poll_s=0.5)
        assert prefect_state(stack, run_id) == "COMPLETED"
        time.sleep(1)  # give the attempts the run started a moment before looking again


def assert_consistent(
    stack: Stack,
    store: S3Store,
    tmp_path: Path,
    untouched: dict[str, dict[str, Any]] | None = None,
) -> None:
    """No processing row without a live run; done outputs decode; the rest is unchanged."""
    items = api(stack, "GET", "/tasks", params={"limit": 200}).json()["items"]
    for row in items:
        if row["status"] == "processing":
            state = prefect_state(stack, row["workflowInstanceId"])
            assert state in LIVE_PREFECT_STATES, (
                f"task {row['id']} processing but its run is {state}"
            )
        if row["status"] == "done":
            for name, out in row["result"]["outputs"].items():
                local = tmp_path / f"{row['id']}-{name}"
                store.get_file(out["key"], local)
                info = probe(local)
                assert info.duration_s > 0, (row["id"], name)
    for task_id, before in (untouched or {}).items():
        assert task_row(stack, task_id) == before, f"task {task_id} changed"


def done_bystander(stack: Stack, store: S3Store, source: Path) -> dict[str, dict[str, Any]]:
    """A finished task that no fault should touch."""
    task = submit(stack, store, source, ["mp3_64"])
    wait_for("bystander done", lambda: task_row(stack, task["id"])["status"] == "done", 120)
    return {task["id"]: task_row(stack, task["id"])}


# -- the faults ---------------------------------------------------------------------------


def test_sigkill_of_the_flow_process_mid_encode(
    fstack: Stack, store: S3Store, long_source: Path, speech_mp3: Path, tmp_path: Path
) -> None:
    bystander = done_bystander(fstack, store, speech_mp3)
    task = submit(fstack, store, long_source, ["aac_128", "mp3_320"])
    mid_encode(fstack, task["id"])
    pids = flow_run_pids(task["workflowInstanceId"])
    assert pids, "no process found for the flow run"
    for pid in pids:
        kill_tree(pid)

    # The worker sees its child die and reports the run crashed; the hook fails the task.
    failed = wait_for(
        "the task to fail after the kill",
        lambda: (row := task_row(fstack, task["id"]))["status"] == "failed" and row,
        150,
    )
    assert failed["errorKind"] == "transient", failed
    rows = reprocess_until(fstack, [task["id"]])
    assert rows[task["id"]]["status"] == "done" and rows[task["id"]]["attempts"] == 2
    assert_consistent(fstack, store, tmp_path, bystander)


def _commands(pids: list[int]) -> list[str]:
    names = []
    for pid in pids:
        try:
            names.append(Path(f"/proc/{pid}/comm").read_text().strip())
        except OSError:
            continue  # gone already
    return names


def test_a_run_the_database_gave_up_on_stops_and_uploads_nothing(
    fstack: Stack, store: S3Store, long_source: Path
) -> None:
    """Issue 10: the workflow is made terminal in the database while Prefect is not told
    (a cancel while Prefect was unreachable, or the reconciler's correction). The flow
    learns it at its next report: its ffmpeg children stop and nothing is uploaded."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from db.models import WorkflowStatus
    from domain.workflows import WorkflowService

    task = submit(fstack, store, long_source, ["aac_128", "mp3_320"])
    run_id = task["workflowInstanceId"]
    mid_encode(fstack, task["id"])
    assert "ffmpeg" in _commands(flow_run_pids(run_id)), "no encode to stop"

    engine = create_engine(fstack.env["DATABASE_URL"])
    try:
        corrected = WorkflowService(sessionmaker(engine)).correct(
            uuid.UUID(task["workflowId"]),
            WorkflowStatus.CANCELLED,
            "cancelled while Prefect was unreachable",
            error="cancelled by request",
        )
    finally:
        engine.dispose()
    assert corrected is not None

    wait_for("the run to stop", _run_ended(fstack, run_id), 90, poll_s=0.5)
    assert prefect_state(fstack, run_id) == "FAILED"
    wait_for("its processes to exit", lambda: not flow_run_pids(run_id), 60, poll_s=0.5)
    assert store.list_keys(f"episodes/{task['episodeId']}/") == []
    row = task_row(fstack, task["id"])
    assert row["status"] == "cancelled" and row["error"] == "cancelled by request", row


def test_sigkill_of_the_whole_worker(
    fstack: Stack, store: S3Store, long_source: Path, speech_mp3: Path, tmp_path: Path
) -> None:
    bystander = done_bystander(fstack, store, speech_mp3)
    task = submit(fstack, store, long_source, ["aac_128", "mp3_320"])
    mid_encode(fstack, task["id"])
    worker = fstack.process("worker-1")
    kill_tree(worker.popen.pid)  # the worker, its flow process, its ffmpeg children
    worker.popen.wait(10)
    # Nobody is left to report: Prefect still says Running, the row says processing.
    assert prefect_state(fstack, task["workflowInstanceId"]) == "RUNNING"
    fstack.replace(worker, start_worker(fstack.env, fstack.log_dir, name="worker-1", limit=4))

    rows = reprocess_until(fstack, [task["id"]], timeout_s=360)
    row = rows[task["id"]]
    assert row["status"] == "done" and row["attempts"] >= 2
    first = api(fstack, "GET", f"/tasks/{task['id']}/workflows").json()[0]
    assert first["status"] == "crashed" and first["corrections"], first
    assert_consistent(fstack, store, tmp_path, bystander)


def test_api_down_during_progress_and_the_final_hook(
    fstack: Stack, store: S3Store, long_source: Path, tmp_path: Path
) -> None:
    task = submit(fstack, store, long_source, ["mp3_64"])
    mid_encode(fstack, task["id"])
    old_api = fstack.process("api")
    old_api.stop()
    # The flow carries on without its API and ends in Prefect while the API is away.
    wait_for(
        "the flow run to end in Prefect",
        lambda: prefect_state(fstack, task["workflowInstanceId"]) == "COMPLETED",
        240,
        poll_s=1,
    )
    port = int(fstack.api_url.rsplit(":", 1)[1])
    fstack.replace(old_api, start_api(fstack.env, port, fstack.log_dir))
    rows = reprocess_until(fstack, [task["id"]])
    assert rows[task["id"]]["status"] == "done", rows
    assert rows[task["id"]]["result"]["outputs"]["mp3_64"]["key"].endswith("mp3_64.mp3")
    assert_consistent(fstack, store, tmp_path)


def test_s3_outage_mid_run_is_carried_by_step_retries(
    fstack: Stack, store: S3Store, s3_proxy: TcpProxy, long_source: Path, tmp_path: Path
) -> None:
    task = submit(fstack, store, long_source, ["mp3_64", "aac_128"])
    mid_encode(fstack, task["id"])
    s3_proxy.cut()
    try:
        # Hold the outage until the upload step has failed at least once and is waiting to retry.
        def upload_retrying() -> bool:
            with prefect_client(fstack.env["PREFECT_API_URL"]) as client:
                from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

                runs = client.read_task_runs(
                    flow_run_filter=FlowRunFilter(
                        id=FlowRunFilterId(any_=[uuid.UUID(task["workflowInstanceId"])])
                    )
                )
            return any(
                r.name.startswith("upload-outputs")
                and r.state is not None
                and r.state.name in ("AwaitingRetry", "Retrying")
                for r in runs
            )

        wait_for("the upload step to hit the outage", upload_retrying, 180, poll_s=0.5)
    finally:
        s3_proxy.restore()
    final = wait_for(
        "the task to end",
        lambda: (row := task_row(fstack, task["id"]))["status"] in ("done", "failed") and row,
        120,
    )
    assert final["status"] == "done", final
    assert final["attempts"] == 1  # the step's own retries carried it, not a new attempt
    assert_consistent(fstack, store, tmp_path)


def test_store_cut_fails_a_second_task_and_the_first_stays_current(
    fstack: Stack,
    store: S3Store,
    s3_proxy: TcpProxy,
    long_source: Path,
    speech_mp3: Path,
    tmp_path: Path,
) -> None:
    """Issue 10: task B of an episode fails (the store is cut while it encodes, so its
    uploads cannot land); task A's files and the manifest naming them stay as they were."""
    episode = f"ep-cut-{uuid.uuid4().hex[:8]}"
    a = submit(fstack, store, speech_mp3, ["mp3_64"], episode)
    wait_for("A done", lambda: task_row(fstack, a["id"])["status"] == "done", 120)
    a_row = task_row(fstack, a["id"])
    manifest_path = tmp_path / "manifest.json"
    b = submit(fstack, store, long_source, ["mp3_64", "aac_128"], episode)
    mid_encode(fstack, b["id"])
    s3_proxy.cut()
    try:
        final = wait_for(
            "B to fail",
            lambda: (row := task_row(fstack, b["id"]))["status"] in TERMINAL and row,
            300,
        )
    finally:
        s3_proxy.restore()
    assert final["status"] == "failed" and final["errorKind"] == "transient", final
    store.get_file(f"episodes/{episode}/manifest.json", manifest_path)
    manifest = json.loads(manifest_path.read_text())
    assert (manifest["taskId"], manifest["workflowId"]) == (a["id"], a["workflowId"])
    assert {o["key"] for o in manifest["outputs"].values()} == {
        o["key"] for o in a_row["result"]["outputs"].values()
    }
    assert task_row(fstack, a["id"]) == a_row
    assert_consistent(fstack, store, tmp_path)  # A's outputs decode


def test_postgres_restart_during_a_run(
    fstack: Stack, store: S3Store, long_source: Path, tmp_path: Path
) -> None:
    task = submit(fstack, store, long_source, ["mp3_64"])
    mid_encode(fstack, task["id"])
    version = sorted(os.listdir("/etc/postgresql"))[-1]
    subprocess.run(
        ["pg_ctlcluster", "--skip-systemctl-redirect", version, "main", "restart"],
        check=True,
        timeout=120,
    )
    final = wait_for(
        "the task to end",
        lambda: (row := task_row(fstack, task["id"]))["status"] in ("done", "failed") and row,
        240,
    )
    if final["status"] != "done":  # a report lost while the database was away: reconcile
        final = reprocess_until(fstack, [task["id"]])[task["id"]]
    assert final["status"] == "done", final
    assert_consistent(fstack, store, tmp_path)


@pytest.mark.parametrize("moment", ["running", "finishing"])
def test_cancel_racing_the_end(
    fstack: Stack, store: S3Store, speech_mp3: Path, tmp_path: Path, moment: str
) -> None:
    task = submit(fstack, store, speech_mp3, ["mp3_64", "opus_64"])
    wait_for(
        f"the task to reach {moment}",
        lambda: (
            (row := task_row(fstack, task["id"]))["status"] in ("done", "failed")
            or (moment == "running" and row["status"] == "processing")
            or (moment == "finishing" and row["currentStep"] in ("upload", "finishing"))
        ),
        120,
        poll_s=0.05,
    )
    response = api(fstack, "POST", f"/tasks/{task['id']}/cancel")
    assert response.status_code in (200, 409), response.text
    wait_for(
        "Prefect to settle",
        lambda: (
            prefect_state(fstack, task["workflowInstanceId"])
            in ("COMPLETED", "CANCELLED", "FAILED", "CRASHED")
        ),
        60,
    )
    final = reprocess_until(fstack, [task["id"]])[task["id"]]
    if final["status"] == "done":
        assert all(store.exists(o["key"]) for o in final["result"]["outputs"].values())
    else:
        assert final["status"] == "cancelled", final
        left = store.list_keys(f"episodes/{final['episodeId']}/tasks/{task['id']}/")
        assert left == [], "a cancelled attempt left outputs behind"
    assert_consistent(fstack, store, tmp_path)


def test_prefect_down_while_tasks_are_created_loses_none(
    fstack: Stack, store: S3Store, speech_mp3: Path, tmp_path: Path
) -> None:
    """The outbox: `POST /tasks` keeps answering while Prefect's server is down; the
    dispatcher retries, and once Prefect is back every task gets its run and finishes."""
    bystander = done_bystander(fstack, store, speech_mp3)
    server = fstack.process("prefect-server")
    port = int(fstack.prefect_url.rsplit(":", 1)[1])
    server.stop()
    try:
        tasks = [
            submit(fstack, store, speech_mp3, ["mp3_64"], f"outage-{n}", dispatch=False)
            for n in range(4)
        ]
        assert all(t["status"] == "pending" and t["workflowInstanceId"] is None for t in tasks)
        waiting = wait_for(
            "the dispatcher to say it waits",
            lambda: (
                (w := api(fstack, "GET", f"/workflows/{tasks[0]['workflowId']}").json())["message"]
                and w
            ),
            30,
        )
        assert waiting["status"] == "queued" and "waiting for Prefect" in waiting["message"]
    finally:
        fstack.replace(server, start_prefect_server(fstack.env, port, fstack.log_dir))

    def ended(task_id: str) -> dict[str, Any] | None:
        row = task_row(fstack, task_id)
        return row if row["status"] in TERMINAL else None

    done = [
        wait_for(f"task {t['id']} to end after the outage", functools.partial(ended, t["id"]), 240)
        for t in tasks
    ]
    assert [d["status"] for d in done] == ["done"] * 4, [(d["status"], d["error"]) for d in done]
    assert all(d["attempts"] == 1 and d["workflowInstanceId"] for d in done)
    assert_consistent(fstack, store, tmp_path, bystander)
