"""A bad variable in the environment is one clear line and exit 2, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main


def test_a_non_integer_worker_limit_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.setenv("AUDIOFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUDIOFLOW_WORKER_LIMIT", "two")
    assert main(["up"]) == 2
    err = capsys.readouterr().err
    assert "AUDIOFLOW_WORKER_LIMIT must be an integer, got 'two'" in err
    assert "Traceback" not in err
    assert not (tmp_path / "home" / "logs").exists()  # nothing was started


def test_zero_dispatch_threads_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """No dispatcher thread would leave every new task pending forever: refused up front."""
    monkeypatch.setenv("AUDIOFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("AUDIOFLOW_DISPATCH_THREADS", "0")
    assert main(["up"]) == 2
    err = capsys.readouterr().err
    assert "AUDIOFLOW_DISPATCH_THREADS must be at least 1, got 0" in err
    assert "Traceback" not in err
