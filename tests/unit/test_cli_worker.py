"""`audioflow worker`: what a machine needs is checked up front, every problem named at once."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import pytest

from cli.client import CliError
from cli.main import build_parser
from cli.stack import MAINTENANCE_POOL, WORK_POOL
from cli.worker import WorkerPlan, is_loopback, plan_worker

GOOD: dict[str, str] = {
    "PATH": "/usr/bin",
    "PREFECT_API_URL": "http://prefect.internal:4200/api/",
    "AUDIOFLOW_API_URL": "http://api.internal:8000",
    "AUDIOFLOW_INTERNAL_TOKEN": "t" * 32,
    "AUDIOFLOW_STORAGE": "s3",
    "AUDIOFLOW_S3_BUCKET": "episodes",
    "DATABASE_URL": "postgresql+psycopg2://u:p@db.internal/audioflow",
}


def has_tools(name: str, path: str | None = None) -> str:
    return f"/usr/bin/{name}"


def no_ffmpeg(name: str, path: str | None = None) -> str | None:
    return None if name == "ffmpeg" else f"/usr/bin/{name}"


def model_ok(environ: Mapping[str, str]) -> None:
    return None


def plan(environ: Mapping[str, str], **kwargs: Any) -> WorkerPlan:
    options: dict[str, Any] = {
        "prefect_api_url": None,
        "api_url": None,
        "limit": None,
        "name": None,
        "maintenance": False,
        "which": has_tools,
        "model_problem": model_ok,
        **kwargs,
    }
    return plan_worker(environ, **options)


def problems(environ: Mapping[str, str], **kwargs: Any) -> str:
    with pytest.raises(CliError) as caught:
        plan(environ, **kwargs)
    return str(caught.value)


def test_a_complete_remote_machine_gets_its_plan() -> None:
    result = plan(GOOD, limit=3, name="encoder-2")
    assert result.pools == (WORK_POOL,)
    assert (result.limit, result.name) == (3, "encoder-2")
    assert result.prefect_api_url == "http://prefect.internal:4200/api"
    assert result.env["PREFECT_API_URL"] == "http://prefect.internal:4200/api"
    assert result.env["AUDIOFLOW_API_URL"] == "http://api.internal:8000"
    assert result.env["PREFECT_FLOWS_HEARTBEAT_FREQUENCY"] == "30"


def test_flags_win_over_the_environment() -> None:
    result = plan(
        GOOD, prefect_api_url="http://10.0.0.5:4200/api", api_url="https://api.example.com/"
    )
    assert result.env["PREFECT_API_URL"] == "http://10.0.0.5:4200/api"
    assert result.env["AUDIOFLOW_API_URL"] == "https://api.example.com"


def test_defaults_limit_two_and_the_host_name() -> None:
    result = plan(GOOD)
    assert result.limit == 2 and result.name


def test_maintenance_adds_the_maintenance_pool() -> None:
    assert plan(GOOD, maintenance=True).pools == (WORK_POOL, MAINTENANCE_POOL)


def test_every_missing_setting_is_named_at_once() -> None:
    message = problems({"PATH": "/usr/bin"}, which=no_ffmpeg)
    assert "PREFECT_API_URL" in message
    assert "AUDIOFLOW_API_URL" in message
    assert "AUDIOFLOW_INTERNAL_TOKEN" in message
    assert "ffmpeg is not on PATH" in message
    assert "ffprobe" not in message


def test_local_storage_is_refused_when_the_api_is_on_another_machine() -> None:
    message = problems({**GOOD, "AUDIOFLOW_STORAGE": "local"})
    assert "AUDIOFLOW_STORAGE" in message and "s3" in message
    # Unset means local too.
    without = {k: v for k, v in GOOD.items() if k != "AUDIOFLOW_STORAGE"}
    assert "AUDIOFLOW_STORAGE" in problems(without)


def test_local_storage_is_fine_beside_the_api() -> None:
    same_machine = {
        **GOOD,
        "AUDIOFLOW_STORAGE": "local",
        "AUDIOFLOW_API_URL": "http://127.0.0.1:8000",
    }
    assert plan(same_machine).api_url == "http://127.0.0.1:8000"


def test_maintenance_needs_the_shared_database() -> None:
    without = {k: v for k, v in GOOD.items() if k != "DATABASE_URL"}
    assert plan(without).pools == (WORK_POOL,)  # the episodes' flow needs no database
    assert "DATABASE_URL is not set" in problems(without, maintenance=True)
    sqlite = {**GOOD, "DATABASE_URL": "sqlite:////var/audioflow/audioflow.db"}
    assert "SQLite" in problems(sqlite, maintenance=True)


def test_bad_urls_limit_storage_and_model_are_refused() -> None:
    assert "not an http(s) URL" in problems(GOOD, prefect_api_url="prefect:4200")
    assert "not an http(s) URL" in problems(GOOD, api_url="api.internal")
    assert "--limit must be at least 1" in problems(GOOD, limit=0)
    assert "'local' or 's3'" in problems({**GOOD, "AUDIOFLOW_STORAGE": "gcs"})
    missing_model = problems(GOOD, model_problem=lambda env: "AUDIOFLOW_WHISPER_MODEL: no base.en")
    assert "AUDIOFLOW_WHISPER_MODEL" in missing_model


def test_the_real_model_check_names_a_missing_model(tmp_path: Any, monkeypatch: Any) -> None:
    from cli.worker import whisper_model_problem

    monkeypatch.setenv("AUDIOFLOW_HOME", str(tmp_path))
    message = whisper_model_problem({"AUDIOFLOW_WHISPER_MODEL": "large-v3"})
    assert message is not None and "large-v3" in message
    assert whisper_model_problem({"AUDIOFLOW_WHISPER_MODEL": str(tmp_path / "nope.pt")})


def test_loopback_names() -> None:
    assert is_loopback("http://127.0.0.1:8000") and is_loopback("http://localhost")
    assert is_loopback("http://[::1]:8000")
    assert not is_loopback("http://10.1.2.3:8000") and not is_loopback("https://api.example.com")


def test_the_subcommand_parses_its_options() -> None:
    args = build_parser().parse_args(
        [
            "worker",
            "--prefect-api-url",
            "http://p:4200/api",
            "--api-url",
            "http://a:8000",
            "--limit",
            "4",
            "--name",
            "w1",
            "--maintenance",
        ]
    )
    assert (args.prefect_api_url, args.worker_api_url, args.limit, args.name) == (
        "http://p:4200/api",
        "http://a:8000",
        4,
        "w1",
    )
    assert args.maintenance
    # The global --api-url (before the subcommand) is used when the worker's own is absent.
    args = build_parser().parse_args(["--api-url", "http://a:8000", "worker"])
    assert (args.api_url, args.worker_api_url) == ("http://a:8000", None)


def test_the_episodes_worker_runs_under_the_fork_server_unless_turned_off() -> None:
    from cli.stack import worker_argv

    warm = worker_argv(GOOD, limit=3, worker_name="encoder-1")
    assert warm[1:4] == ["-m", "flows.forkserver", "--"]
    assert warm[4:][1:] == [
        "worker",
        "start",
        "--pool",
        WORK_POOL,
        "--type",
        "process",
        "--limit",
        "3",
        "--name",
        "encoder-1",
    ]
    cold = worker_argv({**GOOD, "AUDIOFLOW_WARM_START": "false"}, limit=3)
    assert cold[1:] == ["worker", "start", "--pool", WORK_POOL, "--type", "process", "--limit", "3"]
    # The maintenance pool's few runs an hour start cold: no second warm process.
    assert "flows.forkserver" not in worker_argv(GOOD, pool=MAINTENANCE_POOL)


def test_a_bad_warm_start_switch_is_named() -> None:
    assert "AUDIOFLOW_WARM_START" in problems({**GOOD, "AUDIOFLOW_WARM_START": "maybe"})
