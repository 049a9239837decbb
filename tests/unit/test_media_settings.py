"""AUDIOFLOW_MAX_DURATION_S and AUDIOFLOW_UPLOAD_CHECKS: read once, refused when unusable."""

from __future__ import annotations

import pytest

from core.settings import Settings, SettingsError


def test_defaults(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIOFLOW_MAX_DURATION_S", raising=False)
    monkeypatch.delenv("AUDIOFLOW_UPLOAD_CHECKS", raising=False)
    settings = Settings.from_env()
    assert settings.media.max_duration_s == 21600
    assert settings.api.upload_checks == 2


def test_values_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOFLOW_MAX_DURATION_S", "90.5")
    monkeypatch.setenv("AUDIOFLOW_UPLOAD_CHECKS", "5")
    settings = Settings.from_env()
    assert settings.media.max_duration_s == 90.5
    assert settings.api.upload_checks == 5


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("AUDIOFLOW_MAX_DURATION_S", "0", "AUDIOFLOW_MAX_DURATION_S must be positive"),
        ("AUDIOFLOW_MAX_DURATION_S", "six hours", "AUDIOFLOW_MAX_DURATION_S must be a number"),
        # No slot at all would refuse every upload.
        ("AUDIOFLOW_UPLOAD_CHECKS", "0", "AUDIOFLOW_UPLOAD_CHECKS must be at least 1, got 0"),
    ],
)
def test_unusable_values_are_refused(
    monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str
) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=message):
        Settings.from_env()
