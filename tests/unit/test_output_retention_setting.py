"""`AUDIOFLOW_OUTPUT_RETENTION_DAYS`: unset keeps everything; anything but a positive number
is refused with the variable's name."""

from __future__ import annotations

from pathlib import Path

import pytest

from core.settings import SettingsError, StorageSettings


def test_unset_keeps_everything(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.delenv("AUDIOFLOW_OUTPUT_RETENTION_DAYS", raising=False)
    assert StorageSettings.from_env(tmp_path).output_retention_days is None
    monkeypatch.setenv("AUDIOFLOW_OUTPUT_RETENTION_DAYS", "")
    assert StorageSettings.from_env(tmp_path).output_retention_days is None


@pytest.mark.parametrize(("raw", "days"), [("30", 30.0), ("0.5", 0.5)])
def test_a_positive_number(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raw: str, days: float
) -> None:
    monkeypatch.setenv("AUDIOFLOW_OUTPUT_RETENTION_DAYS", raw)
    assert StorageSettings.from_env(tmp_path).output_retention_days == days


@pytest.mark.parametrize("raw", ["0", "-1", "nan", "inf", "seven"])
def test_anything_else_is_refused(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path, raw: str
) -> None:
    monkeypatch.setenv("AUDIOFLOW_OUTPUT_RETENTION_DAYS", raw)
    with pytest.raises(SettingsError, match="AUDIOFLOW_OUTPUT_RETENTION_DAYS"):
        StorageSettings.from_env(tmp_path)
