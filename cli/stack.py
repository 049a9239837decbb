"""Start and stop the processes of an audioflow stack: Prefect server, API, worker.

Used by `audioflow up`, `make demo` and the end-to-end tests, so there is one way to
start each part. Every process runs in its own process group with its output in a log
file under the stack's home, and `stop()` ends the whole group (SIGTERM, then SIGKILL).
"""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx

from cli.stack_secrets import ensure_secrets
from core.settings import env_int, warm_start_enabled

#: The checkout this module belongs to; the worker runs flows from here.
PROJECT_DIR = Path(__file__).resolve().parent.parent
#: Read by the deployments' pull step on the worker, when a flow run starts: the checkout
#: the run's code comes from. Never set when deploying, so each machine uses its own path.
PROJECT_DIR_VAR = "AUDIOFLOW_PROJECT_DIR"
WORK_POOL = "audioflow"
#: Reprocessing runs here, so repairs never queue behind a backlog of episodes.
MAINTENANCE_POOL = "audioflow-maintenance"
VENV_BIN = Path(sys.executable).parent


class StackError(RuntimeError):
    """A part of the stack did not start; the message says which and where its log is."""


def free_port() -> int:
    """A TCP port on loopback that nothing listens on right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def tool(name: str) -> str:
    """A console script of this venv (prefect, uvicorn, alembic)."""
    path = VENV_BIN / name
    return str(path) if path.exists() else name


@dataclass
class ManagedProcess:
    """A child process in its own group, with its log file."""

    name: str
    popen: subprocess.Popen[bytes]
    log_path: Path

    def alive(self) -> bool:
        return self.popen.poll() is None

    def log_tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def signal_group(self, sig: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, sig)

    def stop(self, timeout_s: float = 15.0) -> None:
        """SIGTERM the group, then SIGKILL whatever is left after the timeout."""
        if self.popen.poll() is None:
            self.signal_group(signal.SIGTERM)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.popen.wait(timeout_s)
        # Children (a flow run's process) may outlive the leader: kill the group regardless.
        self.signal_group(signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.popen.wait(5)


def spawn(name: str, argv: list[str], env: Mapping[str, str], log_dir: Path) -> ManagedProcess:
    """Start a process in a new session, logging to `log_dir/name.log`."""
    log_dir.mkdir(parents=True, exist_ok=True)
    log_path = log_dir / f"{name}.log"
    log = log_path.open("ab")
    popen = subprocess.Popen(
        argv,
        env=dict(env),
        cwd=PROJECT_DIR,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    log.close()
    return ManagedProcess(name, popen, log_path)


def wait_http(process: ManagedProcess, url: str, timeout_s: float) -> None:
    """Wait until `url` answers 2xx, or fail with the process's log tail."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if not process.alive():
            raise StackError(
                f"{process.name} exited with code {process.popen.returncode}; "
                f"log {process.log_path}:\n{process.log_tail()}"
            )
        with contextlib.suppress(httpx.HTTPError):
            if httpx.get(url, timeout=2).is_success:
                return
        time.sleep(0.25)
    raise StackError(
        f"{process.name} did not answer {url} within {timeout_s:.0f} s; "
        f"log {process.log_path}:\n{process.log_tail()}"
    )


def prefect_env(
    home: Path,
    prefect_port: int,
    *,
    auth_string: str,
    ui: bool = False,
    database_url: str | None = None,
) -> dict[str, str]:
    """Environment for every Prefect process of an embedded stack rooted at `home`.

    The Prefect server keeps its own database: SQLite under `home` by default, or
    `database_url` (e.g. `postgresql+asyncpg://...`), which holds up far better when many
    runs start at once on a busy machine (SQLite answers 503 when it stays locked).
    `auth_string` (`user:password`) is what every client sends; `start_prefect_server`
    makes the server require it, so no other local process or web page can start runs.
    """
    prefect_db = home / "prefect" / "prefect.db"
    return {
        "PREFECT_HOME": str(home / "prefect"),
        "PREFECT_API_AUTH_STRING": auth_string,
        "PREFECT_API_URL": f"http://127.0.0.1:{prefect_port}/api",
        "PREFECT_API_DATABASE_CONNECTION_URL": database_url or f"sqlite+aiosqlite:///{prefect_db}",
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(prefect_port),
        "PREFECT_UI_ENABLED": "true" if ui else "false",
        # The machine is offline: no telemetry, no update checks.
        "DO_NOT_TRACK": "1",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # Pick up new runs within a second instead of the default ten.
        "PREFECT_WORKER_QUERY_SECONDS": "1",
        "PREFECT_WORKER_PREFETCH_SECONDS": "5",
        "PREFECT_RUNNER_POLL_FREQUENCY": "1",
        # Heartbeats let the reconciler tell a live run from a dead one.
        "PREFECT_FLOWS_HEARTBEAT_FREQUENCY": "30",
        "PREFECT_LOGGING_LEVEL": "INFO",
    }


def start_prefect_server(
    env: Mapping[str, str], port: int, log_dir: Path, *, timeout_s: float = 120
) -> ManagedProcess:
    """`prefect server start` on loopback, requiring the clients' auth string; returns once
    `/api/health` (which Prefect leaves open for probes) answers."""
    Path(env["PREFECT_HOME"]).mkdir(parents=True, exist_ok=True)
    if not env.get("PREFECT_API_AUTH_STRING"):
        raise StackError("PREFECT_API_AUTH_STRING is not set: the Prefect server needs one")
    process = spawn(
        "prefect-server",
        [tool("prefect"), "server", "start", "--host", "127.0.0.1", "--port", str(port)],
        {**env, "PREFECT_SERVER_API_AUTH_STRING": env["PREFECT_API_AUTH_STRING"]},
        log_dir,
    )
    wait_http(process, f"http://127.0.0.1:{port}/api/health", timeout_s)
    return process


def run_checked(argv: list[str], env: Mapping[str, str], what: str, timeout_s: float = 300) -> str:
    """Run a command to completion; StackError with its output if it fails."""
    done = subprocess.run(
        argv,
        env=dict(env),
        cwd=PROJECT_DIR,
        capture_output=True,
        text=True,
        timeout=timeout_s,
        stdin=subprocess.DEVNULL,
    )
    if done.returncode != 0:
        raise StackError(
            f"{what} failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}"
        )
    return done.stdout


def migrate(env: Mapping[str, str]) -> None:
    """`alembic upgrade head` on the database in `env['DATABASE_URL']`."""
    run_checked([tool("alembic"), "upgrade", "head"], env, "alembic upgrade head")


def deploy(env: Mapping[str, str]) -> None:
    """Create the work pool (if missing), register every deployment of prefect.yaml, and
    create the automations (idempotent: safe to run on every release).

    The pull step's `{{ $AUDIOFLOW_PROJECT_DIR }}` must reach the server unresolved: Prefect
    3.9 fills an environment placeholder of a pull step at deploy time when the deploying
    process has the variable, and otherwise keeps it, to be filled in on the worker when a
    run starts (`prefect.deployments.steps.run_step`). So the variable is removed here, and
    every worker sets it to its own checkout (`start_worker`), wherever that is.
    """
    env = {name: value for name, value in env.items() if name != PROJECT_DIR_VAR}
    for pool in (WORK_POOL, MAINTENANCE_POOL):
        exists = subprocess.run(
            [tool("prefect"), "work-pool", "inspect", pool],
            env=dict(env),
            capture_output=True,
            stdin=subprocess.DEVNULL,
            timeout=120,
        )
        if exists.returncode != 0:
            run_checked(
                [tool("prefect"), "work-pool", "create", pool, "--type", "process"],
                env,
                f"prefect work-pool create {pool}",
            )
    run_checked([tool("prefect"), "--no-prompt", "deploy", "--all"], env, "prefect deploy --all")
    run_checked([sys.executable, "-m", "cli.automations"], env, "creating Prefect automations")


def worker_argv(
    env: Mapping[str, str],
    *,
    limit: int | None = None,
    pool: str = WORK_POOL,
    worker_name: str | None = None,
) -> list[str]:
    """The command of a process worker on `pool`: under the fork server for the episodes'
    pool (unless `AUDIOFLOW_WARM_START=false`), a plain Prefect worker otherwise."""
    argv = [tool("prefect"), "worker", "start", "--pool", pool, "--type", "process"]
    if limit is not None:
        argv += ["--limit", str(limit)]
    if worker_name:
        argv += ["--name", worker_name]
    if pool == WORK_POOL and warm_start_enabled(env):
        # The worker runs under a fork server that has imported Prefect and the flow:
        # each run is forked from it (`python -m flows.launch`, prefect.yaml's command)
        # instead of starting a cold interpreter. Stopping this process group stops both.
        argv = [str(VENV_BIN / "python"), "-m", "flows.forkserver", "--", *argv]
    return argv


def start_worker(
    env: Mapping[str, str],
    log_dir: Path,
    *,
    name: str = "worker",
    limit: int | None = None,
    pool: str = WORK_POOL,
    worker_name: str | None = None,
) -> ManagedProcess:
    """A process worker on a pool; each flow run gets its own subprocess.

    `limit` caps the runs this worker executes at once (one machine's share of the pool);
    `worker_name` is the name Prefect shows for it (and logs on each run it submits);
    `name` names its log file. Its runs take their code from this checkout, or from
    `AUDIOFLOW_PROJECT_DIR` when `env` sets it (the deployments' pull step reads it).
    """
    argv = worker_argv(env, limit=limit, pool=pool, worker_name=worker_name)
    # prefect.yaml starts each flow run as `python -m flows.launch`: this interpreter.
    path = f"{VENV_BIN}{os.pathsep}{env.get('PATH', os.defpath)}"
    project = env.get(PROJECT_DIR_VAR) or str(PROJECT_DIR)
    return spawn(name, argv, {**env, "PATH": path, PROJECT_DIR_VAR: project}, log_dir)


def start_api(
    env: Mapping[str, str],
    port: int,
    log_dir: Path,
    *,
    workers: int = 1,
    timeout_s: float = 60,
    uvicorn_args: Sequence[str] = (),
) -> ManagedProcess:
    """The Litestar app under uvicorn; returns once it answers.

    `uvicorn_args` are extra options (bench/ measures `--loop asyncio --http h11` with them).
    """
    process = spawn(
        "api",
        [
            tool("uvicorn"),
            "--factory",
            "api.app:create_app",
            "--host",
            "127.0.0.1",
            "--port",
            str(port),
            "--workers",
            str(workers),
            "--log-level",
            "warning",
            *uvicorn_args,
        ],
        env,
        log_dir,
    )
    wait_http(process, f"http://127.0.0.1:{port}/schema/openapi.json", timeout_s)
    return process


@dataclass
class Stack:
    """A running embedded stack; stop() ends every process it started, newest first."""

    home: Path
    env: dict[str, str]
    api_url: str
    prefect_url: str
    processes: list[ManagedProcess] = field(default_factory=list)

    def stop(self) -> None:
        for process in reversed(self.processes):
            process.stop()
        self.processes.clear()

    def process(self, name: str) -> ManagedProcess:
        return next(p for p in self.processes if p.name == name)

    @property
    def log_dir(self) -> Path:
        return self.home / "logs"

    def replace(self, old: ManagedProcess | None, new: ManagedProcess) -> ManagedProcess:
        """Swap a stopped process for its restarted self, so stop() ends the new one."""
        if old is not None and old in self.processes:
            self.processes.remove(old)
        self.processes.append(new)
        return new


def embedded_env(
    home: Path,
    *,
    api_port: int,
    prefect_port: int,
    ui: bool = False,
    base: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The whole environment of an embedded stack: SQLite, a local store, local Prefect.

    Secrets come from `$AUDIOFLOW_HOME/secrets.json` (generated on the first start); a
    non-empty AUDIOFLOW_API_KEY, AUDIOFLOW_INTERNAL_TOKEN or PREFECT_API_AUTH_STRING in
    `base` wins. AUDIOFLOW_ENV defaults to development (only the API key rule differs).
    """
    env = dict(base if base is not None else os.environ)
    for name, value in ensure_secrets(home).env().items():
        if not env.get(name):
            env[name] = value
    env.update(
        prefect_env(
            home,
            prefect_port,
            auth_string=env["PREFECT_API_AUTH_STRING"],
            ui=ui,
            database_url=env.get("AUDIOFLOW_PREFECT_DATABASE_URL"),
        )
    )
    env.setdefault("AUDIOFLOW_ENV", "development")
    env.setdefault("AUDIOFLOW_HOME", str(home))
    env.setdefault("DATABASE_URL", f"sqlite:///{home / 'audioflow.db'}")
    env.setdefault("AUDIOFLOW_STORAGE", "local")
    env.setdefault("AUDIOFLOW_STORAGE_DIR", str(home / "storage"))
    # Webhook receivers of a stack on one machine are local (loopback is refused otherwise).
    env.setdefault("AUDIOFLOW_WEBHOOK_ALLOW_PRIVATE", "true")
    env["AUDIOFLOW_API_URL"] = f"http://127.0.0.1:{api_port}"
    env["PYTHONUNBUFFERED"] = "1"
    return env


#: Concurrent flow runs per worker of the embedded stack (`AUDIOFLOW_WORKER_LIMIT`).
DEFAULT_WORKER_LIMIT = 2


@contextlib.contextmanager
def running_stack(
    home: Path,
    *,
    env: Mapping[str, str] | None = None,
    api_port: int | None = None,
    prefect_port: int | None = None,
    ui: bool = False,
    workers: int = 1,
    worker_limit: int | None = None,
) -> Iterator[Stack]:
    """Start Prefect, migrate, deploy, start the worker(s) and the API; stop all on exit.

    `worker_limit` (default `AUDIOFLOW_WORKER_LIMIT`, 2) caps each worker's concurrent runs:
    unlimited, 20 submissions became 15 flow-run processes fighting for two cores (6 GB
    of RSS, 0.15x the serial rate, in bench/); two lets one run encode while another
    transcribes.
    """
    if worker_limit is None:
        worker_limit = max(1, env_int("AUDIOFLOW_WORKER_LIMIT", DEFAULT_WORKER_LIMIT))
    api_port = api_port or free_port()
    prefect_port = prefect_port or free_port()
    full_env = embedded_env(home, api_port=api_port, prefect_port=prefect_port, ui=ui, base=env)
    log_dir = home / "logs"
    stack = Stack(
        home=home,
        env=full_env,
        api_url=f"http://127.0.0.1:{api_port}",
        prefect_url=f"http://127.0.0.1:{prefect_port}",
    )
    try:
        stack.processes.append(start_prefect_server(full_env, prefect_port, log_dir))
        migrate(full_env)
        deploy(full_env)
        for n in range(workers):
            stack.processes.append(
                start_worker(full_env, log_dir, name=f"worker-{n + 1}", limit=worker_limit)
            )
        stack.processes.append(
            start_worker(full_env, log_dir, name="maintenance-worker", pool=MAINTENANCE_POOL)
        )
        stack.processes.append(start_api(full_env, api_port, log_dir))
        yield stack
    finally:
        stack.stop()
