"""A whole audioflow stack for the benchmarks, and the HTTP calls the scenarios make on it.

The stack is started exactly as the end-to-end tests and `audioflow up` start it
(`cli.stack.running_stack`), on a throwaway PostgreSQL database and the local object store,
so the figures describe what ships. Two deliberate differences, both to cut noise, are
reported in RESULTS.md: the `reprocessing` deployment's 5-minute schedule is paused (a
maintenance run landing inside a timed run would add a process start to it), and the API
key is set (as in production) so that its guard is part of every request's cost.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import time
import uuid
from collections import Counter
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import httpx
from sqlalchemy import create_engine, text
from sqlalchemy.engine import make_url

from cli.stack import Stack, running_stack

TOKEN = "bench-internal-token-0123456789"
API_KEY = "bench-api-key-0123456789"
HEADERS = {"X-API-Key": API_KEY}
TERMINAL = frozenset({"done", "failed", "cancelled"})
REPROCESSING = "reprocessing/reprocessing"
#: The PostgreSQL server the tests use (`tests/support/postgres.py`); one database per run.
ADMIN_URL = os.environ.get(
    "AUDIOFLOW_TEST_PG_ADMIN_URL", "postgresql+psycopg2://postgres@127.0.0.1:5432/test"
)


def _admin(sql: str) -> None:
    engine = create_engine(ADMIN_URL, isolation_level="AUTOCOMMIT")
    try:
        with engine.connect() as conn:
            conn.execute(text(sql))
    finally:
        engine.dispose()


@contextlib.contextmanager
def temporary_database(prefix: str = "audioflow_bench") -> Iterator[str]:
    """Like `tests.support.postgres.temporary_database`, but the drop is retried with a new
    connection: other engineers' fault-injection tests restart the shared server, and a
    benchmark that ran for half an hour must not lose its results to a stale connection."""
    name = f"{prefix}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    _admin(f'CREATE DATABASE "{name}"')
    try:
        yield make_url(ADMIN_URL).set(database=name).render_as_string(hide_password=False)
    finally:
        for attempt in range(5):
            try:
                _admin(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
                break
            except Exception as exc:  # the server may be restarting: wait and retry
                print(f"   could not drop {name} ({type(exc).__name__}); retrying", flush=True)
                time.sleep(2 * (attempt + 1))


def parse_time(value: str | None) -> float | None:
    """An ISO timestamp from the API or Prefect as a Unix time (None stays None)."""
    if value is None:
        return None
    return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()


@dataclass
class Followed:
    """One task followed to its end: client-side times (Unix) and the last task body."""

    task_id: str
    submitted_at: float
    first_running_seen: float | None = None
    done_seen: float | None = None
    task: dict[str, Any] = field(default_factory=dict)
    #: Prefect's final state when the harness stopped following a task stuck in `pending`.
    prefect_state: str | None = None
    #: The attempt followed: a body with fewer `attempts` is the task before it (a task
    #: that is reprocessed is still `done` from its last attempt until the new one starts).
    attempt: int = 0

    @property
    def status(self) -> str:
        return str(self.task.get("status"))

    @property
    def flow_run_id(self) -> str | None:
        value = self.task.get("workflowInstanceId")
        return str(value) if value else None

    @property
    def started_at(self) -> float | None:
        """When the API recorded the `running` report (server clock, same machine)."""
        return parse_time(self.task.get("startedAt"))

    @property
    def completed_at(self) -> float | None:
        return parse_time(self.task.get("completedAt"))


@dataclass
class BenchStack:
    """The running stack plus clients for its API and its Prefect server."""

    stack: Stack
    api: httpx.Client
    prefect: httpx.Client
    #: 503s from Prefect's API seen (and retried) by the harness itself.
    prefect_503s: int = 0
    #: Failed polls of `GET /tasks/{id}` while following tasks, by kind.
    api_errors: Counter[str] = field(default_factory=Counter)

    @property
    def env(self) -> dict[str, str]:
        return self.stack.env

    @property
    def storage_dir(self) -> Path:
        return Path(self.env["AUDIOFLOW_STORAGE_DIR"])

    def worker_pids(self) -> list[int]:
        """Process ids of the running workers (the roots of the flow-run process trees)."""
        return [
            p.popen.pid
            for p in self.stack.processes
            if p.name.startswith("worker") and p.alive()
        ]

    # -- sources and tasks -------------------------------------------------------------------

    def put_source(self, path: Path) -> str:
        """Place a source file in the local store (hard link when possible); its key."""
        key = f"uploads/bench/{path.name}"
        dest = self.storage_dir / key
        dest.parent.mkdir(parents=True, exist_ok=True)
        if not dest.exists():
            try:
                os.link(path, dest)
            except OSError:
                shutil.copyfile(path, dest)
        return key

    def create_task(
        self,
        audio_key: str,
        *,
        formats: tuple[str, ...] = ("mp3_128", "mp3_320"),
        transcribe: bool = True,
        episode_id: str | None = None,
        extra: Mapping[str, Any] | None = None,
    ) -> Followed:
        """`POST /tasks` for one episode; the clock starts just before the request.
        `extra`: more payload fields (`loudness`, `metadata`, `chapters`, `waveform`)."""
        payload = {
            "episodeId": episode_id or f"bench-{uuid.uuid4().hex[:12]}",
            "audioKey": audio_key,
            "encodingFormats": list(formats),
            "transcribe": transcribe,
            "language": "en",
            **(extra or {}),
        }
        submitted = time.time()
        response = self.api.post("/tasks", json={"type": "audio_processing", "payload": payload})
        if response.status_code != 201:
            raise RuntimeError(f"POST /tasks answered {response.status_code}: {response.text}")
        body = response.json()
        return Followed(task_id=body["id"], submitted_at=submitted, task=body)

    def follow(
        self,
        tasks: list[Followed],
        *,
        timeout_s: float,
        poll_s: float = 0.2,
        give_up_on_crashed: bool = False,
    ) -> list[Followed]:
        """Poll every task until all have ended; records when running and done were seen.

        `give_up_on_crashed`: stop following a task whose flow run Prefect already calls
        Crashed/Failed/Cancelled while the API still shows it pending: a run the worker could
        not even start reports nothing, and only the reconciler (paused here) would notice.
        """
        deadline = time.monotonic() + timeout_s
        pending = {t.task_id: t for t in tasks}
        next_check = time.monotonic() + 30
        while pending:
            if give_up_on_crashed and time.monotonic() > next_check:
                next_check = time.monotonic() + 15
                for task_id, followed in list(pending.items()):
                    if followed.status == "pending" and followed.flow_run_id:
                        state = self.flow_run(followed.flow_run_id).get("state_type")
                        if state in ("CRASHED", "FAILED", "CANCELLED"):
                            followed.prefect_state = state
                            del pending[task_id]
            if time.monotonic() > deadline:
                raise TimeoutError(
                    f"{len(pending)} task(s) not finished within {timeout_s:.0f} s: "
                    + ", ".join(f"{t.task_id} {t.status} {t.task.get('progress')}%"
                                for t in pending.values())
                )
            for task_id, followed in list(pending.items()):
                try:
                    response = self.api.get(f"/tasks/{task_id}")
                except httpx.HTTPError as exc:
                    self.api_errors[type(exc).__name__] += 1
                    continue
                if response.status_code != 200:  # e.g. the database restarting: poll again
                    self.api_errors[f"HTTP {response.status_code}"] += 1
                    continue
                body = response.json()
                seen = time.time()
                followed.task = body
                if body.get("attempts", 0) < followed.attempt:
                    continue
                if followed.first_running_seen is None and body["status"] != "pending":
                    followed.first_running_seen = seen
                if body["status"] in TERMINAL:
                    followed.done_seen = seen
                    del pending[task_id]
            time.sleep(poll_s)
        return tasks

    # -- Prefect's view ------------------------------------------------------------------------

    def _prefect(self, method: str, path: str, **kwargs: Any) -> httpx.Response:
        """A call to Prefect's API, retried on 503: the embedded Prefect server keeps its
        state in SQLite and answers 503 ("database is locked") when the machine is busy."""
        for attempt in range(8):
            response = self.prefect.request(method, path, **kwargs)
            if response.status_code != 503:
                break
            self.prefect_503s += 1
            time.sleep(0.5 * (attempt + 1))
        response.raise_for_status()
        return response

    def flow_run(self, flow_run_id: str) -> dict[str, Any]:
        response = self._prefect("GET", f"/flow_runs/{flow_run_id}")
        data: dict[str, Any] = response.json()
        return data

    def task_runs(self, flow_run_id: str) -> list[dict[str, Any]]:
        """The flow run's task runs (download-source, encode-*, transcribe, upload-outputs)."""
        response = self._prefect(
            "POST", "/task_runs/filter", json={"flow_runs": {"id": {"any_": [flow_run_id]}}}
        )
        runs: list[dict[str, Any]] = response.json()
        return sorted(runs, key=lambda r: r.get("start_time") or "")

    def flow_run_states(self, flow_run_id: str) -> list[dict[str, Any]]:
        """Every state the flow run went through, oldest first (Scheduled, Pending, Running...)."""
        response = self._prefect("GET", "/flow_run_states/", params={"flow_run_id": flow_run_id})
        states: list[dict[str, Any]] = response.json()
        return sorted(states, key=lambda s: s["timestamp"])

    def pause_schedule(self, deployment: str) -> None:
        """Pause a deployment's schedule; Prefect also deletes its auto-scheduled runs."""
        response = self._prefect("GET", f"/deployments/name/{deployment}")
        self._prefect("POST", f"/deployments/{response.json()['id']}/pause_deployment")

    def job_variables(self, deployment: str) -> dict[str, Any]:
        """A deployment's job variables as registered."""
        response = self._prefect("GET", f"/deployments/name/{deployment}")
        return dict(response.json().get("job_variables") or {})

    def set_enforce_parameter_schema(self, deployment: str, enforce: bool) -> None:
        """Switch Prefect's parameter-schema check on run creation (for a same-run baseline)."""
        response = self._prefect("GET", f"/deployments/name/{deployment}")
        self._prefect(
            "PATCH",
            f"/deployments/{response.json()['id']}",
            json={"enforce_parameter_schema": enforce},
        )

    def set_job_variables(self, deployment: str, job_variables: dict[str, Any]) -> None:
        """Replace a deployment's job variables (for variants measured on this stack only)."""
        response = self._prefect("GET", f"/deployments/name/{deployment}")
        self._prefect(
            "PATCH", f"/deployments/{response.json()['id']}", json={"job_variables": job_variables}
        )


@contextlib.contextmanager
def bench_stack(home: Path) -> Iterator[BenchStack]:
    """A stack on a throwaway PostgreSQL database and a local store under `home`."""
    if home.exists():
        shutil.rmtree(home)
    home.mkdir(parents=True)
    with (
        temporary_database("audioflow_bench") as db_url,
        temporary_database("audioflow_bench_prefect") as prefect_db_url,
    ):
        env = {
            **os.environ,
            "DATABASE_URL": db_url,
            # Prefect's server on PostgreSQL, as the README advises for production.
            "AUDIOFLOW_PREFECT_DATABASE_URL": prefect_db_url.replace("+psycopg2", "+asyncpg"),
            "AUDIOFLOW_STORAGE": "local",
            "AUDIOFLOW_STORAGE_DIR": str(home / "storage"),
            "AUDIOFLOW_INTERNAL_TOKEN": TOKEN,
            "AUDIOFLOW_API_KEY": API_KEY,
            "AUDIOFLOW_ENV": "test",
        }
        with running_stack(home, env=env) as stack:
            api = httpx.Client(base_url=stack.api_url, headers=HEADERS, timeout=60)
            user, _, password = stack.env["PREFECT_API_AUTH_STRING"].partition(":")
            prefect = httpx.Client(
                base_url=f"{stack.prefect_url}/api", auth=(user, password), timeout=60
            )
            bench = BenchStack(stack=stack, api=api, prefect=prefect)
            try:
                bench.pause_schedule(REPROCESSING)
                yield bench
            finally:
                api.close()
                prefect.close()
                # Outputs of long episodes are hundreds of MB; logs stay for inspection.
                shutil.rmtree(home / "storage", ignore_errors=True)
