"""`audioflow worker`: this machine's Prefect worker(s), checked before they start.

A worker machine needs a checkout of the release with its venv, ffmpeg, the Whisper model,
and the addresses and secrets of what it shares with the other machines: the Prefect
server, the audioflow API (the flows report progress to it), the object store and, for the
maintenance pool only, the database. `plan_worker` checks what can be checked without the
network and names every problem at once; `check_services` then asks the Prefect server
and the API whether they answer, before any worker starts taking runs.
"""

from __future__ import annotations

import shutil
import socket
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import httpx

from cli.client import CliError
from core.settings import SettingsError, warm_start_enabled

LOOPBACK_HOSTS = {"127.0.0.1", "localhost", "::1", "[::1]"}
#: Concurrent flow runs of one `audioflow worker` unless `--limit` says otherwise.
DEFAULT_LIMIT = 2
WorkPools = tuple[str, ...]


@dataclass(frozen=True)
class WorkerPlan:
    """What `audioflow worker` starts: one Prefect worker per pool, with this environment."""

    env: dict[str, str]
    pools: WorkPools
    limit: int
    name: str
    prefect_api_url: str
    api_url: str


def _url(value: str | None, label: str, missing: str, problems: list[str]) -> str:
    """The URL without a trailing slash; a problem noted when it is missing or not http(s)."""
    url = (value or "").rstrip("/")
    if not url:
        problems.append(missing)
    elif not _is_http_url(url):
        problems.append(f"{label} {url!r} is not an http(s) URL")
    return url


def _is_http_url(url: str) -> bool:
    parts = urlsplit(url)
    return parts.scheme in ("http", "https") and bool(parts.hostname)


def is_loopback(url: str) -> bool:
    """Whether `url` names this machine (so the API shares its disk with this worker)."""
    return (urlsplit(url).hostname or "").lower() in LOOPBACK_HOSTS


def plan_worker(
    environ: Mapping[str, str],
    *,
    prefect_api_url: str | None,
    api_url: str | None,
    limit: int | None,
    name: str | None,
    maintenance: bool,
    which: Callable[..., str | None] = shutil.which,
    model_problem: Callable[[Mapping[str, str]], str | None] | None = None,
) -> WorkerPlan:
    """Check this machine's configuration for a worker; CliError listing every problem.

    `model_problem` says why the configured Whisper model cannot be loaded here (None when
    it can); the default looks for it the way a flow would.
    """
    from cli.stack import MAINTENANCE_POOL, WORK_POOL

    problems: list[str] = []
    prefect = _url(
        prefect_api_url or environ.get("PREFECT_API_URL"),
        "the Prefect API URL",
        "no Prefect server: pass --prefect-api-url or set PREFECT_API_URL "
        "(e.g. http://prefect.internal:4200/api)",
        problems,
    )
    api = _url(
        api_url or environ.get("AUDIOFLOW_API_URL"),
        "the audioflow API URL",
        "no audioflow API for the flows to report progress to: pass --api-url or set "
        "AUDIOFLOW_API_URL (the API's address as this machine reaches it)",
        problems,
    )
    if not environ.get("AUDIOFLOW_INTERNAL_TOKEN"):
        problems.append(
            "AUDIOFLOW_INTERNAL_TOKEN is not set: the flows report progress with it "
            "(the API's value)"
        )
    remote = bool(api) and not is_loopback(api)
    storage = environ.get("AUDIOFLOW_STORAGE") or "local"
    if storage not in ("local", "s3"):
        problems.append(f"AUDIOFLOW_STORAGE must be 'local' or 's3', got {storage!r}")
    elif storage == "local" and remote:
        problems.append(
            f"AUDIOFLOW_STORAGE is 'local' (a folder on this machine) but the API at {api} is "
            "on another machine, which would never see the outputs: set AUDIOFLOW_STORAGE=s3, "
            "AUDIOFLOW_S3_BUCKET and the AWS_* variables to the API's bucket "
            "(the local store is for one machine only)"
        )
    if maintenance:
        database = environ.get("DATABASE_URL") or ""
        if not database:
            problems.append(
                "DATABASE_URL is not set: the reprocessing flow (--maintenance) reads and "
                "repairs the tasks' database (the API's PostgreSQL)"
            )
        elif database.startswith("sqlite") and remote:
            problems.append(
                "DATABASE_URL is SQLite, a file on this machine, but the API is on another: "
                "the reprocessing flow (--maintenance) needs the API's PostgreSQL"
            )
    for tool in ("ffmpeg", "ffprobe"):
        if which(tool, path=environ.get("PATH")) is None:
            problems.append(f"{tool} is not on PATH: install ffmpeg (e.g. apt-get install ffmpeg)")
    try:
        warm_start_enabled(environ)
    except SettingsError as exc:
        problems.append(str(exc))
    if limit is not None and limit < 1:
        problems.append(f"--limit must be at least 1, got {limit}")
    model = (model_problem or whisper_model_problem)(environ)
    if model:
        problems.append(model)
    if problems:
        raise CliError(
            "this machine cannot run an audioflow worker yet:\n  - " + "\n  - ".join(problems)
        )
    env = {**environ, "PREFECT_API_URL": prefect, "AUDIOFLOW_API_URL": api}
    # Heartbeats let the zombie automation and the reconciler tell a dead machine's runs.
    env.setdefault("PREFECT_FLOWS_HEARTBEAT_FREQUENCY", "30")
    pools: WorkPools = (WORK_POOL, MAINTENANCE_POOL) if maintenance else (WORK_POOL,)
    return WorkerPlan(
        env=env,
        pools=pools,
        limit=limit if limit is not None else DEFAULT_LIMIT,
        name=name or socket.gethostname(),
        prefect_api_url=prefect,
        api_url=api,
    )


def whisper_model_problem(environ: Mapping[str, str]) -> str | None:
    """Why the configured Whisper model is not on this machine, or None if it is."""
    from transcription.errors import ModelNotAvailableError
    from transcription.models import locate_model

    spec = environ.get("AUDIOFLOW_WHISPER_MODEL") or "tiny.en"
    try:
        locate_model(spec)
    except ModelNotAvailableError as exc:
        return f"AUDIOFLOW_WHISPER_MODEL: {exc}"
    return None


def _prefect_auth(env: Mapping[str, str]) -> tuple[str, str] | None:
    user, sep, password = (env.get("PREFECT_API_AUTH_STRING") or "").partition(":")
    return (user, password) if sep else None


def check_services(plan: WorkerPlan, timeout_s: float = 10.0) -> None:
    """Ask the Prefect server (health, then each work pool with the auth string) and the
    API whether they answer from this machine; CliError naming what does not."""
    problems: list[str] = []
    auth = _prefect_auth(plan.env)
    try:
        httpx.get(f"{plan.prefect_api_url}/health", timeout=timeout_s).raise_for_status()
    except httpx.HTTPError as exc:
        problems.append(f"the Prefect server at {plan.prefect_api_url} does not answer: {exc}")
    else:
        for pool in plan.pools:
            try:
                answer = httpx.get(
                    f"{plan.prefect_api_url}/work_pools/{pool}", auth=auth, timeout=timeout_s
                )
            except httpx.HTTPError as exc:
                problems.append(f"Prefect at {plan.prefect_api_url}: {exc}")
                break
            if answer.status_code == 401:
                problems.append(
                    f"the Prefect server at {plan.prefect_api_url} refuses this machine (401): "
                    "set PREFECT_API_AUTH_STRING to the server's user:password"
                )
                break
            if answer.status_code == 404:
                problems.append(
                    f"work pool {pool!r} does not exist on {plan.prefect_api_url}: "
                    "run `audioflow deploy` against that server first"
                )
            elif not answer.is_success:
                problems.append(f"Prefect answered {answer.status_code} for work pool {pool!r}")
    try:
        health = httpx.get(f"{plan.api_url}/health", timeout=timeout_s)
    except httpx.HTTPError as exc:
        problems.append(f"the audioflow API at {plan.api_url} does not answer: {exc}")
    else:
        if health.status_code == 400:
            problems.append(
                f"the audioflow API refuses the host name of {plan.api_url} (400): add it to "
                "the API's AUDIOFLOW_ALLOWED_HOSTS"
            )
    if problems:
        raise CliError("cannot start the worker:\n  - " + "\n  - ".join(problems), code=1)


def log_dir(environ: Mapping[str, str]) -> Path:
    """Where the workers' logs go: `$AUDIOFLOW_HOME/logs` (default `./.audioflow/logs`)."""
    home = environ.get("AUDIOFLOW_HOME") or str(Path.cwd() / ".audioflow")
    return Path(home).resolve() / "logs"


def maintenance_name(name: str) -> str:
    return f"{name}-maintenance"


__all__ = [
    "DEFAULT_LIMIT",
    "WorkerPlan",
    "check_services",
    "is_loopback",
    "log_dir",
    "maintenance_name",
    "plan_worker",
    "whisper_model_problem",
]
