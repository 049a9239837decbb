"""Two worker "machines" against one Prefect server (on PostgreSQL), one database, one bucket.

Each machine is an `audioflow worker` with its own checkout path, HOME, TMPDIR,
AUDIOFLOW_HOME and PREFECT_HOME: nothing on disk is shared but the code (and the second
machine's code is a copy at another path). The deployments are registered from a third
checkout that is deleted before any run starts, so a run can only work if the pull step
is resolved on the worker. 20 episodes: each is done exactly once, both machines take a
share, and killing one machine's whole process tree midway leaves nothing stuck: the
reconcile (the reprocessing run, on the surviving machine's maintenance worker) fails its
silent runs as transient and their retries run on the machine that is left.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest

from cli.stack import (
    PROJECT_DIR,
    ManagedProcess,
    Stack,
    embedded_env,
    free_port,
    migrate,
    start_api,
    start_prefect_server,
)
from core.storage.s3 import S3Store
from tests.e2e.conftest import TOKEN, dispatched, stack_databases, stack_env
from tests.e2e.test_faults import api, assert_consistent, reprocess_until, task_row
from tests.prefect_fixtures import prefect_client
from tests.support.processes import kill_tree
from tests.support.waiting import wait_for

pytestmark = pytest.mark.slow
BUCKET = "audioflow-machines"
EPISODES = 20
#: What a machine's checkout holds (a release's source tree; the venv is installed apart).
CODE_DIRS = ("api", "cli", "core", "db", "domain", "flows", "media", "transcription", "migrations")
CODE_FILES = ("prefect.yaml", "alembic.ini", "pyproject.toml")
#: The label a Prefect worker puts on each flow run it has claimed (after the server
#: accepted its Pending: a run another worker claimed first is refused, never run twice).
WORKER_LABEL = "prefect.worker.name"
PULL_STEP = "{{ $AUDIOFLOW_PROJECT_DIR }}"


def copy_checkout(dest: Path) -> Path:
    """The source tree at another path, as a `git clone` on another machine would have it."""
    for name in CODE_DIRS:
        shutil.copytree(
            PROJECT_DIR / name, dest / name, ignore=shutil.ignore_patterns("__pycache__")
        )
    for name in CODE_FILES:
        shutil.copy2(PROJECT_DIR / name, dest / name)
    return dest


@dataclass
class Machine:
    """One worker machine: its `audioflow worker` process and its own folders."""

    name: str
    code: Path
    root: Path
    process: ManagedProcess


def machine_env(root: Path, s3_endpoint: str, *, database_url: str | None) -> dict[str, str]:
    """Only what README's "Many machines" lists, plus this machine's own folders."""
    folders = {
        "HOME": root / "home",
        "TMPDIR": root / "tmp",
        "AUDIOFLOW_HOME": root / "audioflow-home",
        "PREFECT_HOME": root / "prefect-home",
    }
    for folder in folders.values():
        folder.mkdir(parents=True, exist_ok=True)
    inherited = {
        name: value
        for name, value in os.environ.items()
        if not name.startswith(("AUDIOFLOW_", "PREFECT_", "DATABASE_URL", "HOME", "TMP"))
    }
    env = {
        **inherited,
        **{name: str(path) for name, path in folders.items()},
        "AUDIOFLOW_ENV": "test",
        "AUDIOFLOW_INTERNAL_TOKEN": TOKEN,
        "PREFECT_API_AUTH_STRING": os.environ["PREFECT_API_AUTH_STRING"],
        "AUDIOFLOW_STORAGE": "s3",
        "AUDIOFLOW_S3_BUCKET": BUCKET,
        "AWS_ENDPOINT_URL_S3": s3_endpoint,
        # Test pace: poll Prefect every second (production keeps Prefect's defaults).
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        "DO_NOT_TRACK": "1",
        "PYTHONUNBUFFERED": "1",
    }
    if database_url:
        env.update(
            DATABASE_URL=database_url, AUDIOFLOW_RETRY_BACKOFF_S="0", AUDIOFLOW_MAX_ATTEMPTS="4"
        )
    return env


def start_machine(
    name: str, code: Path, root: Path, env: dict[str, str], stack: Stack, *, maintenance: bool
) -> Machine:
    argv = [
        sys.executable,
        "-m",
        "cli.main",
        "worker",
        "--prefect-api-url",
        f"{stack.prefect_url}/api",
        "--api-url",
        stack.api_url,
        "--limit",
        "2",
        "--name",
        name,
        *(["--maintenance"] if maintenance else []),
    ]
    log_path = root / "audioflow-worker.log"
    with log_path.open("ab") as log:
        popen = subprocess.Popen(
            argv,
            cwd=code,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=log,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    return Machine(name, code, root, ManagedProcess(name, popen, log_path))


def worker_names(stack: Stack) -> set[str]:
    with prefect_client(f"{stack.prefect_url}/api") as client:
        return {w.name for w in client.read_workers_for_work_pool("audioflow")}


@dataclass
class Cluster:
    stack: Stack
    machines: list[Machine]


@pytest.fixture(scope="module")
def store(s3_endpoint: str) -> S3Store:
    direct = S3Store(BUCKET, endpoint_url=s3_endpoint, region="us-east-1")
    direct.ensure_bucket()
    return direct


@pytest.fixture(scope="module")
def cluster(
    s3_endpoint: str, store: S3Store, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Cluster]:
    root = tmp_path_factory.mktemp("machines")
    central = root / "central"
    api_port, prefect_port = free_port(), free_port()
    machines: list[Machine] = []
    with stack_databases("audioflow_machines") as dbs:
        env = embedded_env(
            central,
            api_port=api_port,
            prefect_port=prefect_port,
            base=stack_env(dbs, s3_endpoint, BUCKET),
        )
        stack = Stack(
            home=central,
            env=env,
            api_url=f"http://127.0.0.1:{api_port}",
            prefect_url=f"http://127.0.0.1:{prefect_port}",
        )
        try:
            stack.processes.append(start_prefect_server(env, prefect_port, central / "logs"))
            migrate(env)
            # Deployed from a checkout no worker has: it is gone before the first run.
            deployer = copy_checkout(root / "deployer-checkout")
            subprocess.run(
                [sys.executable, "-m", "cli.main", "deploy"],
                cwd=deployer,
                env={**env, "AUDIOFLOW_PROJECT_DIR": str(deployer)},  # set, and ignored
                check=True,
                capture_output=True,
                timeout=300,
            )
            shutil.rmtree(deployer)
            stack.processes.append(start_api(env, api_port, central / "logs"))
            app_db = dbs[0]
            machines.append(
                start_machine(
                    "machine-1",
                    PROJECT_DIR,
                    root / "machine-1",
                    machine_env(root / "machine-1", s3_endpoint, database_url=app_db),
                    stack,
                    maintenance=True,
                )
            )
            code_2 = copy_checkout(root / "machine-2-checkout")
            machines.append(
                start_machine(
                    "machine-2",
                    code_2,
                    root / "machine-2",
                    machine_env(root / "machine-2", s3_endpoint, database_url=None),
                    stack,
                    maintenance=False,
                )
            )

            def both_polling() -> bool:
                for machine in machines:
                    assert machine.process.alive(), (
                        f"{machine.name} exited:\n{machine.process.log_tail()}"
                    )
                return {"machine-1", "machine-2"} <= worker_names(stack)

            wait_for("both machines' workers to poll Prefect", both_polling, 120, poll_s=0.5)
            yield Cluster(stack, machines)
        finally:
            for machine in machines:
                kill_tree(machine.process.popen.pid)
                machine.process.stop(timeout_s=5)
            stack.stop()


@pytest.fixture(scope="module")
def short_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("short") / "short.mp3"
    subprocess.run(
        [
            "ffmpeg", "-nostdin", "-v", "error", "-y",
            "-f", "lavfi", "-i", "sine=frequency=440:duration=4",
            "-ac", "2", "-ar", "44100", "-b:a", "128k", str(path),
        ],
        check=True,
    )  # fmt: skip
    return path


def submit_short(stack: Stack, store: S3Store, source: Path, episode: str) -> dict[str, Any]:
    """One cheap task: mp3_64 only, no transcript, loudness or waveform (the flow-run
    process is what this test exercises, not the encoders)."""
    key = f"uploads/{episode}/{source.name}"
    store.put_file(key, source)
    payload = {
        "episodeId": episode,
        "audioKey": key,
        "encodingFormats": ["mp3_64"],
        "transcribe": False,
        "loudness": None,
        "waveform": False,
    }
    response = api(stack, "POST", "/tasks", json={"type": "audio_processing", "payload": payload})
    assert response.status_code == 201, response.text
    return dispatched(stack, response.json()["id"])


def audio_runs(stack: Stack) -> list[Any]:
    """Every audio-processing flow run on the server, with its state and labels."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with prefect_client(f"{stack.prefect_url}/api") as client:
        return list(
            client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    tags=FlowRunFilterTags(all_=["type:audio_processing"])
                ),
                limit=200,
            )
        )


def state_of(run: Any) -> str:
    return str(run.state.type.value) if run.state else "NONE"


def runs_on(stack: Stack, machine: str) -> list[Any]:
    return [r for r in audio_runs(stack) if (r.labels or {}).get(WORKER_LABEL) == machine]


def test_the_deployment_names_no_path_of_the_deploying_machine(cluster: Cluster) -> None:
    with prefect_client(f"{cluster.stack.prefect_url}/api") as client:
        for name in ("audio-processing/audio-processing", "reprocessing/reprocessing"):
            deployment = client.read_deployment_by_name(name)
            assert deployment.pull_steps == [
                {"prefect.deployments.steps.set_working_directory": {"directory": PULL_STEP}}
            ], deployment.pull_steps


def test_twenty_episodes_on_two_machines_one_killed_midway(
    cluster: Cluster, store: S3Store, short_mp3: Path, tmp_path: Path
) -> None:
    stack = cluster.stack
    first, second = cluster.machines
    with ThreadPoolExecutor(max_workers=2) as pool:
        tasks = list(
            pool.map(
                lambda n: submit_short(stack, store, short_mp3, f"machines-{n:02d}"),
                range(EPISODES),
            )
        )
    ids = [t["id"] for t in tasks]

    def second_just_started_another() -> bool:
        # One cheap query a poll: a run that entered Running a moment ago has seconds of
        # work left (process, download, encode, upload), so the kill lands midway.
        runs = runs_on(stack, second.name)
        now = datetime.now(UTC)
        return any(state_of(r) == "COMPLETED" for r in runs) and any(
            state_of(r) == "RUNNING" and (now - r.state.timestamp).total_seconds() < 3 for r in runs
        )

    wait_for(
        "machine-2 to finish a run and start another",
        second_just_started_another,
        240,
        poll_s=0.2,
    )
    kill_tree(second.process.popen.pid)  # the machine dies: worker, flow runs, ffmpegs
    second.process.popen.wait(10)
    killed_at = datetime.now(UTC)
    orphaned = {
        str(r.id) for r in runs_on(stack, second.name) if state_of(r) in ("RUNNING", "PENDING")
    }
    assert orphaned, "machine-2's runs in progress"

    # machine-1 works through the rest on its own; only the dead machine's runs wait for a
    # repair (no reprocessing run in between: each costs a flow-run process of its own).
    def only_orphans_left() -> bool:
        rows = [task_row(stack, t) for t in ids]
        return all(r["status"] == "done" or r["workflowInstanceId"] in orphaned for r in rows)

    wait_for("machine-1 to finish every task not stuck on machine-2", only_orphans_left, 300, 1)
    # The reconcile (as the 5-minute schedule would run it) fails the dead machine's silent
    # runs as transient, crashes them in Prefect, and retries them: on machine-1.
    rows = reprocess_until(stack, ids, timeout_s=300)
    assert [r["status"] for r in rows.values()] == ["done"] * EPISODES, [
        (r["status"], r["error"]) for r in rows.values()
    ]
    runs = {str(r.id): r for r in audio_runs(stack)}
    # Every run machine-2 left running was ended by the reconcile (Crashed in Prefect).
    assert {state_of(runs[r]) for r in orphaned} <= {"CRASHED", "FAILED"}, [
        state_of(runs[r]) for r in orphaned
    ]
    completed_on = {first.name: 0, second.name: 0}
    for task_id, row in rows.items():
        task_runs = [r for r in runs.values() if f"task:{task_id}" in (r.tags or [])]
        completed = [r for r in task_runs if state_of(r) == "COMPLETED"]
        # Exactly once: one completed run per task, the one the task reports, run by one of
        # the two machines (the worker's label on the run says which).
        assert len(completed) == 1, (task_id, [(str(r.id), state_of(r)) for r in task_runs])
        assert str(completed[0].id) == row["workflowInstanceId"]
        machine = (completed[0].labels or {}).get(WORKER_LABEL)
        assert machine in completed_on, (task_id, completed[0].labels)
        completed_on[machine] += 1
        if machine == second.name:  # nothing machine-2 ran completed after its death
            assert completed[0].state.timestamp < killed_at
        workflows = [w["status"] for w in _workflows(stack, task_id)]
        assert workflows.count("completed") == 1, (task_id, workflows)
    # Both machines took a share; the retries of the dead machine's runs ran on machine-1.
    assert completed_on[first.name] > 0 and completed_on[second.name] > 0, completed_on
    for run_id in orphaned:
        retried = rows[_task_of(runs[run_id])]
        assert retried["attempts"] >= 2, retried
        assert runs[retried["workflowInstanceId"]].labels[WORKER_LABEL] == first.name
    assert_consistent(stack, store, tmp_path)


def _task_of(run: Any) -> str:
    return next(t.removeprefix("task:") for t in run.tags if t.startswith("task:"))


def _workflows(stack: Stack, task_id: str) -> list[dict[str, Any]]:
    response = api(stack, "GET", f"/tasks/{task_id}/workflows")
    assert response.status_code == 200, response.text
    body: list[dict[str, Any]] = response.json()
    return body
