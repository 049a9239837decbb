"""The embedded stack's generated secrets, the settings' refusal of missing ones, and the
CLI picking the API key up by itself.

On the old code there was no secrets file at all: the stack ran with the public
`dev-internal-token` and no API key, and `AUDIOFLOW_ENV` defaulted to development.
"""

from __future__ import annotations

import json
import os
import stat
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from cli.client import resolve_api_key
from cli.stack import embedded_env
from cli.stack_secrets import SecretsFileError, ensure_secrets, read_secrets, secrets_path
from core.settings import Settings, SettingsError


def _mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_secrets_are_created_private_and_reused(tmp_path: Path) -> None:
    home = tmp_path / "home"
    old_umask = os.umask(0)  # even a careless umask must not widen the file
    try:
        first = ensure_secrets(home)
    finally:
        os.umask(old_umask)
    path = secrets_path(home)
    assert _mode(path) == 0o600
    on_disk = json.loads(path.read_text())
    assert on_disk == {
        "api_key": first.api_key,
        "internal_token": first.internal_token,
        "prefect_auth_string": first.prefect_auth_string,
    }
    assert len({first.api_key, first.internal_token, first.prefect_auth_string}) == 3
    assert all(len(v) >= 32 for v in on_disk.values())
    assert first.prefect_auth_string.count(":") == 1  # user:password for basic auth
    assert ensure_secrets(home) == first  # the next start reuses them
    assert [p.name for p in home.iterdir()] == ["secrets.json"]  # no staging file left
    assert ensure_secrets(tmp_path / "other") != first  # another home: other secrets


def test_concurrent_first_starts_agree(tmp_path: Path) -> None:
    """Processes starting at once end with one set of secrets, never a half-written file."""
    home = tmp_path / "home"
    code = (
        "import sys, json; from pathlib import Path; from cli.stack_secrets import ensure_secrets;"
        "print(ensure_secrets(Path(sys.argv[1])).api_key)"
    )
    procs = [
        subprocess.Popen(
            [sys.executable, "-c", code, str(home)],
            stdout=subprocess.PIPE,
            text=True,
            env={**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2])},
        )
        for _ in range(6)
    ]
    keys = {p.communicate(timeout=60)[0].strip() for p in procs}
    with ThreadPoolExecutor(4) as pool:
        keys |= {s.api_key for s in pool.map(lambda _: ensure_secrets(home), range(8))}
    assert keys == {read_secrets(home).api_key}  # type: ignore[union-attr]


def test_a_damaged_secrets_file_is_refused_with_a_way_out(tmp_path: Path) -> None:
    secrets_path(tmp_path).write_text('{"api_key": "x"}')
    with pytest.raises(SecretsFileError, match="delete it"):
        ensure_secrets(tmp_path)


def test_the_stack_environment_carries_the_generated_secrets(tmp_path: Path) -> None:
    generated = ensure_secrets(tmp_path)
    env = embedded_env(tmp_path, api_port=1, prefect_port=2, base={"PATH": "/bin"})
    assert env["AUDIOFLOW_API_KEY"] == generated.api_key
    assert env["AUDIOFLOW_INTERNAL_TOKEN"] == generated.internal_token
    assert env["PREFECT_API_AUTH_STRING"] == generated.prefect_auth_string
    assert env["AUDIOFLOW_ENV"] == "development"
    # An explicit secret wins; an empty one does not count as set.
    explicit = embedded_env(
        tmp_path,
        api_port=1,
        prefect_port=2,
        base={"AUDIOFLOW_API_KEY": "mine-mine-mine", "AUDIOFLOW_INTERNAL_TOKEN": ""},
    )
    assert explicit["AUDIOFLOW_API_KEY"] == "mine-mine-mine"
    assert explicit["AUDIOFLOW_INTERNAL_TOKEN"] == generated.internal_token


def test_the_cli_finds_the_key_of_the_local_stack(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIOFLOW_HOME", str(tmp_path))
    monkeypatch.delenv("AUDIOFLOW_API_KEY", raising=False)
    assert resolve_api_key(None, "http://127.0.0.1:8000") is None  # no stack yet
    generated = ensure_secrets(tmp_path)
    for url in ("http://127.0.0.1:8000", "http://localhost:9", "http://[::1]:8000"):
        assert resolve_api_key(None, url) == generated.api_key
    # The local key never travels to a remote API.
    assert resolve_api_key(None, "https://api.example.com") is None
    # An explicit key wins: the flag, then the variable.
    monkeypatch.setenv("AUDIOFLOW_API_KEY", "from-env")
    assert resolve_api_key(None, "http://127.0.0.1:8000") == "from-env"
    assert resolve_api_key("from-flag", "http://127.0.0.1:8000") == "from-flag"


# --- settings: no default secret -------------------------------------------------------


def _clear(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("AUDIOFLOW_ENV", "AUDIOFLOW_INTERNAL_TOKEN", "AUDIOFLOW_API_KEY"):
        monkeypatch.delenv(name, raising=False)


def test_without_audioflow_env_the_production_rules_apply(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _clear(monkeypatch)
    settings = Settings.from_env()
    assert settings.env == "production"
    with pytest.raises(SettingsError, match="AUDIOFLOW_INTERNAL_TOKEN"):
        settings.validate()
    monkeypatch.setenv("AUDIOFLOW_INTERNAL_TOKEN", "t" * 32)
    with pytest.raises(SettingsError, match="AUDIOFLOW_API_KEY"):
        Settings.from_env().validate()
    monkeypatch.setenv("AUDIOFLOW_API_KEY", "k" * 32)
    Settings.from_env().validate()


@pytest.mark.parametrize("env", ["development", "test", "production"])
def test_no_environment_has_a_default_internal_token(
    monkeypatch: pytest.MonkeyPatch, env: str
) -> None:
    _clear(monkeypatch)
    monkeypatch.setenv("AUDIOFLOW_ENV", env)
    monkeypatch.setenv("AUDIOFLOW_API_KEY", "k" * 32)
    settings = Settings.from_env()
    with pytest.raises(SettingsError, match="AUDIOFLOW_INTERNAL_TOKEN"):
        _ = settings.internal_token  # the old code answered "dev-internal-token" here
    with pytest.raises(SettingsError, match="AUDIOFLOW_INTERNAL_TOKEN"):
        settings.validate()
