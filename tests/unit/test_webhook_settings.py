"""Webhook settings and URL rules: what is refused, and why, before anything is sent."""

from __future__ import annotations

import base64

import pytest

from core.settings import DEFAULT_WEBHOOK_RETRY_S, SettingsError, WebhookSettings
from domain.webhook_urls import UnsafeUrlError, resolve_allowed

SECRET = "whsec_" + base64.b64encode(bytes(range(32))).decode()


def test_no_secret_means_webhooks_off(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIOFLOW_WEBHOOK_SECRET", raising=False)
    monkeypatch.delenv("AUDIOFLOW_WEBHOOK_URLS", raising=False)
    assert not WebhookSettings.from_env().enabled


def test_urls_without_a_secret_are_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIOFLOW_WEBHOOK_SECRET", raising=False)
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_URLS", "https://hooks.example.com/a")
    with pytest.raises(SettingsError, match="AUDIOFLOW_WEBHOOK_SECRET"):
        WebhookSettings.from_env()


@pytest.mark.parametrize(
    "secret", ["abc", "whsec_not*base64", "whsec_" + base64.b64encode(b"short").decode()]
)
def test_malformed_secrets_are_refused(monkeypatch: pytest.MonkeyPatch, secret: str) -> None:
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_SECRET", secret)
    with pytest.raises(SettingsError, match="AUDIOFLOW_WEBHOOK_SECRET"):
        WebhookSettings.from_env()


def test_a_full_configuration(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_SECRET", SECRET)
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_URLS", "https://a.example.com/x, http://b.example.com")
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_RETRY_SCHEDULE_S", "1,2.5")
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_ALLOW_PRIVATE", "true")
    settings = WebhookSettings.from_env()
    assert settings.enabled and settings.allow_private
    assert settings.urls == ("https://a.example.com/x", "http://b.example.com")
    assert settings.retry_schedule_s == (1.0, 2.5)
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_RETRY_SCHEDULE_S", "1,soon")
    with pytest.raises(SettingsError, match="RETRY_SCHEDULE"):
        WebhookSettings.from_env()
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_URLS", "ftp://a.example.com/x")
    monkeypatch.delenv("AUDIOFLOW_WEBHOOK_RETRY_SCHEDULE_S")
    with pytest.raises(SettingsError, match="http"):
        WebhookSettings.from_env()


def test_the_lease_is_set_from_the_environment_and_must_outlast_an_attempt(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_SECRET", SECRET)
    monkeypatch.delenv("AUDIOFLOW_WEBHOOK_URLS", raising=False)
    monkeypatch.delenv("AUDIOFLOW_WEBHOOK_TIMEOUT_S", raising=False)
    monkeypatch.delenv("AUDIOFLOW_WEBHOOK_LEASE_S", raising=False)
    assert WebhookSettings.from_env().lease_s == 60.0
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_TIMEOUT_S", "2")
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_LEASE_S", "11")
    settings = WebhookSettings.from_env()
    assert (settings.timeout_s, settings.lease_s) == (2.0, 11.0)
    # An attempt may take 5 x timeout: a lease of that or less lets a second thread send the
    # delivery again while the first still waits for its answer.
    for lease in ("10", "4", "1", "0", "-1", "nan", "inf"):
        monkeypatch.setenv("AUDIOFLOW_WEBHOOK_LEASE_S", lease)
        with pytest.raises(SettingsError, match="AUDIOFLOW_WEBHOOK_LEASE_S"):
            WebhookSettings.from_env()
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_LEASE_S", "11")
    for timeout in ("0", "-1", "nan"):
        monkeypatch.setenv("AUDIOFLOW_WEBHOOK_TIMEOUT_S", timeout)
        with pytest.raises(SettingsError, match="AUDIOFLOW_WEBHOOK_TIMEOUT_S"):
            WebhookSettings.from_env()


def test_the_default_schedule_spans_a_day_with_three_attempts_in_a_minute() -> None:
    assert sum(DEFAULT_WEBHOOK_RETRY_S[:2]) < 60  # attempts at 0, 5 and 15 s
    assert sum(DEFAULT_WEBHOOK_RETRY_S) > 24 * 3600


@pytest.mark.parametrize(
    "url",
    [
        "http://127.0.0.1/x",
        "http://[::1]/x",
        "http://10.0.0.8/x",
        "http://192.168.1.1/x",
        "http://172.16.0.1/x",
        "http://169.254.169.254/latest",
        "http://100.64.0.1/x",
        "http://0.0.0.0/x",
        "http://[::ffff:127.0.0.1]/x",
        "http://[fe80::1]/x",
        "http://224.0.0.1/x",
    ],
)
def test_non_public_addresses_are_refused_unless_allowed(url: str) -> None:
    with pytest.raises(UnsafeUrlError, match="non-public"):
        resolve_allowed(url, allow_private=False)
    assert resolve_allowed(url, allow_private=True)


@pytest.mark.parametrize(
    "url",
    [
        "ftp://93.184.215.14/x",
        "http:///x",
        "http://user:pw@93.184.215.14/x",
        "http://93.184.215.14/a b",
        "http://93.184.215.14:99999/x",
        "http://93.184.215.14/" + "x" * 2100,
    ],
)
def test_malformed_urls_are_refused(url: str) -> None:
    with pytest.raises(UnsafeUrlError):
        resolve_allowed(url, allow_private=True)


def test_a_public_address_is_allowed() -> None:
    assert [str(a) for a in resolve_allowed("https://93.184.215.14/hook", allow_private=False)] == [
        "93.184.215.14"
    ]


@pytest.mark.parametrize("timeout", ["0", "-1", "nan", "inf", "121"])
def test_an_attempt_timeout_outside_its_range_is_refused(
    monkeypatch: pytest.MonkeyPatch, timeout: str
) -> None:
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_TIMEOUT_S", timeout)
    with pytest.raises(SettingsError, match="AUDIOFLOW_WEBHOOK_TIMEOUT_S"):
        WebhookSettings.from_env()


def test_the_claim_lease_outlasts_the_longest_attempt() -> None:
    """An attempt may take a timeout for each of connect, send and the answer's start,
    and reads until twice the timeout: a lease shorter than that would let a second
    thread send a delivery that is still in flight."""
    assert WebhookSettings().claim_lease_s == WebhookSettings().lease_s
    slow = WebhookSettings(timeout_s=60.0, lease_s=60.0)
    assert slow.claim_lease_s > slow.attempt_limit_s >= 5 * slow.timeout_s


@pytest.mark.parametrize(("raw", "expected"), [("", 86400.0), ("3600", 3600.0), ("60", 60.0)])
def test_the_event_age_limit(monkeypatch: pytest.MonkeyPatch, raw: str, expected: float) -> None:
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_MAX_EVENT_AGE_S", raw)
    assert WebhookSettings.from_env().max_event_age_s == expected


@pytest.mark.parametrize("raw", ["59", "0", "-1", "inf", "nan", "a day"])
def test_a_bad_event_age_limit_is_refused(monkeypatch: pytest.MonkeyPatch, raw: str) -> None:
    monkeypatch.setenv("AUDIOFLOW_WEBHOOK_MAX_EVENT_AGE_S", raw)
    with pytest.raises(SettingsError, match="AUDIOFLOW_WEBHOOK_MAX_EVENT_AGE_S"):
        WebhookSettings.from_env()
