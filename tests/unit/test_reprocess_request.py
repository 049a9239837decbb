"""`ReprocessService.request_run`: the request's own rules, before Prefect is asked."""

from __future__ import annotations

from dataclasses import replace

import pytest

from core.errors import InvalidInputError, UpstreamUnavailableError
from core.settings import Settings
from domain.reprocessing import ReprocessService


def _offline() -> ReprocessService:
    """No Prefect at all: a call that reached it would be UpstreamUnavailableError."""
    settings = Settings.from_env()
    return ReprocessService(replace(settings, prefect=replace(settings.prefect, api_url="")))


def test_unknown_formats_are_refused_naming_them_and_the_known_ones() -> None:
    with pytest.raises(InvalidInputError) as refused:
        _offline().request_run({"add_formats": ["mp3_128", "mp3_999", "ogg"]})
    assert "addFormats" in refused.value.detail
    assert "mp3_999, ogg" in refused.value.detail
    assert "known: " in refused.value.detail and "mp3_128" in refused.value.detail


def test_known_formats_go_on_to_prefect() -> None:
    with pytest.raises(UpstreamUnavailableError):
        _offline().request_run({"add_formats": ["mp3_128"], "dry_run": True})
