"""A small HTTP client for the audioflow API, with errors a person can act on."""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import httpx
from httpx_sse import SSEError, connect_sse

from cli.stack_secrets import SecretsFileError, read_secrets
from core.settings import LOOPBACK_HOSTS, audioflow_home

DEFAULT_API_URL = "http://127.0.0.1:8000"
TERMINAL_STATUSES = frozenset({"done", "failed", "cancelled"})
#: A task's event stream (`GET /tasks/{id}/events`, Server-Sent Events).
EVENTS_PATH = "/tasks/{task_id}/events"
#: Longest silence on the stream before it counts as lost: the API sends a keep-alive
#: every `AUDIOFLOW_SSE_KEEPALIVE_S` (15 s by default), so this is several of them.
STREAM_READ_TIMEOUT_S = 60.0


class CliError(RuntimeError):
    """Shown to the user as is, with exit code `code`."""

    def __init__(self, message: str, code: int = 2) -> None:
        super().__init__(message)
        self.code = code


def stack_file(home: Path | None = None) -> Path:
    """Where `audioflow up` writes the URLs of the stack it runs."""
    return (home or audioflow_home()) / "stack.json"


def resolve_api_url(flag: str | None) -> str:
    """--api-url, else AUDIOFLOW_API_URL, else the running `audioflow up`, else the default."""
    if flag:
        return flag.rstrip("/")
    if os.environ.get("AUDIOFLOW_API_URL"):
        return os.environ["AUDIOFLOW_API_URL"].rstrip("/")
    path = stack_file()
    if path.exists():
        try:
            return str(json.loads(path.read_text())["api_url"]).rstrip("/")
        except (ValueError, KeyError):
            pass
    return DEFAULT_API_URL


def resolve_api_key(flag: str | None, api_url: str) -> str | None:
    """--api-key, else AUDIOFLOW_API_KEY, else the key `audioflow up` generated in
    `$AUDIOFLOW_HOME/secrets.json`.

    The generated key is only ever sent to a loopback URL (where `audioflow up` listens):
    a local secret must not travel to whatever remote API `--api-url` names.
    """
    if flag:
        return flag
    if os.environ.get("AUDIOFLOW_API_KEY"):
        return os.environ["AUDIOFLOW_API_KEY"]
    host = (urlsplit(api_url).hostname or "").lower()
    if host not in LOOPBACK_HOSTS:
        return None
    try:
        stack_secrets = read_secrets(audioflow_home())
    except SecretsFileError as exc:
        raise CliError(str(exc)) from exc
    return stack_secrets.api_key if stack_secrets else None


REFUSED_KEY = (
    "the API refused the API key (set AUDIOFLOW_API_KEY or --api-key; "
    "`audioflow up` keeps its key in $AUDIOFLOW_HOME/secrets.json)"
)


class StreamUnavailable(RuntimeError):
    """The event stream cannot be followed (no such endpoint, not an event stream, the
    connection dropped): the caller polls instead."""


def _warn(message: str) -> None:
    print(f"audioflow: {message}", file=sys.stderr, flush=True)


class ApiClient:
    """Calls the REST API; every failure becomes a CliError with what to do about it."""

    def __init__(self, api_url: str, api_key: str | None = None, timeout_s: float = 60.0) -> None:
        self.api_url = api_url.rstrip("/")
        headers = {"X-API-Key": api_key} if api_key else {}
        self.http = httpx.Client(base_url=self.api_url, headers=headers, timeout=timeout_s)

    def _call(self, method: str, path: str, **kwargs: Any) -> Any:
        try:
            response = self.http.request(method, path, **kwargs)
        except httpx.ConnectError as exc:
            raise CliError(
                f"cannot reach the audioflow API at {self.api_url} ({exc}); "
                "start it with `audioflow up` or pass --api-url"
            ) from exc
        except httpx.HTTPError as exc:
            raise CliError(f"request to {self.api_url}{path} failed: {exc}") from exc
        if response.status_code == 401:
            raise CliError(REFUSED_KEY)
        if response.status_code >= 400:
            try:
                detail = response.json().get("detail", response.text)
            except ValueError:
                detail = response.text
            raise CliError(f"{method} {path} failed ({response.status_code}): {detail}")
        return response.json()

    def upload(self, path: Path) -> dict[str, Any]:
        if not path.is_file():
            raise CliError(f"no such file: {path}")

        def chunks() -> Iterator[bytes]:
            with path.open("rb") as fh:
                while chunk := fh.read(1024 * 1024):
                    yield chunk

        result: dict[str, Any] = self._call(
            "POST",
            "/uploads",
            params={"filename": path.name},
            content=chunks(),
            headers={"Content-Length": str(path.stat().st_size)},
        )
        return result

    def create_task(
        self, payload: dict[str, Any], idempotency_key: str | None = None
    ) -> dict[str, Any]:
        headers = {"Idempotency-Key": idempotency_key} if idempotency_key else {}
        result: dict[str, Any] = self._call(
            "POST", "/tasks", json={"type": "audio_processing", "payload": payload}, headers=headers
        )
        return result

    def task(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("GET", f"/tasks/{task_id}")
        return result

    def tasks(self, status: str | None = None, limit: int = 50) -> dict[str, Any]:
        params: dict[str, Any] = {"limit": limit}
        if status:
            params["status"] = status
        result: dict[str, Any] = self._call("GET", "/tasks", params=params)
        return result

    def cancel(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/tasks/{task_id}/cancel")
        return result

    def retry(self, task_id: str) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", f"/tasks/{task_id}/retry")
        return result

    def reprocess(self, body: dict[str, Any]) -> dict[str, Any]:
        result: dict[str, Any] = self._call("POST", "/reprocess", json=body)
        return result

    def follow(
        self,
        task_id: str,
        on_change: Callable[[dict[str, Any]], None],
        *,
        timeout_s: float = 3600,
        warn: Callable[[str], None] = _warn,
    ) -> dict[str, Any]:
        """Follow the task's event stream until it ends and return the task as it ended.

        `on_change` gets each event as a task-like dict (`status`, `progress`,
        `currentStep`). When the stream cannot be had (an API without it, a proxy that
        does not pass it through, a dropped connection), `warn` says so and the rest is
        polled from `GET /tasks/{id}`: following never fails where polling would not.
        """
        try:
            return self._follow_stream(task_id, on_change)
        except StreamUnavailable as exc:
            warn(f"event stream unavailable ({exc}); polling GET /tasks/{task_id} instead")
        return self.wait(task_id, on_change, timeout_s=timeout_s)

    def _follow_stream(
        self, task_id: str, on_change: Callable[[dict[str, Any]], None]
    ) -> dict[str, Any]:
        path = EVENTS_PATH.format(task_id=task_id)
        timeout = httpx.Timeout(10.0, read=STREAM_READ_TIMEOUT_S)
        try:
            with connect_sse(self.http, "GET", path, timeout=timeout) as source:
                response = source.response
                if response.status_code == 401:
                    raise CliError(REFUSED_KEY)
                if response.status_code >= 400:
                    raise StreamUnavailable(f"GET {path} answered {response.status_code}")
                for event in source.iter_sse():
                    try:
                        data = event.json()
                        state = {
                            "status": data["status"],
                            "progress": data["progress"],
                            "currentStep": data.get("currentStep"),
                        }
                    except (ValueError, KeyError, TypeError) as exc:
                        raise StreamUnavailable(f"unreadable event {event.id!r}: {exc}") from exc
                    if state["status"] in TERMINAL_STATUSES:
                        task = self.task(task_id)
                        if task["status"] not in TERMINAL_STATUSES:
                            # An earlier attempt's end, replayed: the task went on since
                            # (a retry or reprocess); its next events follow.
                            continue
                        on_change(state)
                        return task
                    on_change(state)
        except SSEError as exc:
            raise StreamUnavailable(f"not an event stream: {exc}") from exc
        except httpx.HTTPError as exc:
            raise StreamUnavailable(f"connection lost: {exc!r}") from exc
        raise StreamUnavailable("the stream ended before the task did")

    def wait(
        self,
        task_id: str,
        on_change: Callable[[dict[str, Any]], None],
        *,
        timeout_s: float = 3600,
        poll_s: float = 0.5,
    ) -> dict[str, Any]:
        """Poll until the task ends, calling `on_change` whenever progress or step moves."""
        deadline = time.monotonic() + timeout_s
        last: tuple[Any, ...] | None = None
        while True:
            task = self.task(task_id)
            key = (task["status"], task["progress"], task["currentStep"])
            if key != last:
                on_change(task)
                last = key
            if task["status"] in TERMINAL_STATUSES:
                return task
            if time.monotonic() > deadline:
                raise CliError(f"task {task_id} still {task['status']} after {timeout_s:.0f} s")
            time.sleep(poll_s)
