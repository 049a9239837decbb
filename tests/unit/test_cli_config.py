"""A bad variable in the environment is one clear line and exit 2, before anything starts."""

from __future__ import annotations

from pathlib import Path

import pytest

from cli.main import main


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AUDIOFLOW_WORKER_LIMIT", "two", "AUDIOFLOW_WORKER_LIMIT must be an integer, got 'two'"),
        # 0 is allowed (another API process dispatches); a negative count is a typo.
        ("AUDIOFLOW_DISPATCH_THREADS", "-1", "AUDIOFLOW_DISPATCH_THREADS must be at least 0"),
    ],
)
def test_a_bad_variable_is_a_configuration_error(
    monkeypatch: pytest.MonkeyPatch,
    tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
    name: str,
    value: str,
    message: str,
) -> None:
    monkeypatch.setenv("AUDIOFLOW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv(name, value)
    assert main(["up"]) == 2
    err = capsys.readouterr().err
    assert message in err
    assert "Traceback" not in err
    assert not (tmp_path / "home" / "logs").exists()  # nothing was started
