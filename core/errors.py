"""Domain errors. Each maps to exactly one HTTP status, in `api/errors.py` and nowhere else."""

from __future__ import annotations

from typing import Any


class AudioflowError(Exception):
    """Base of every error a service raises on purpose; `detail` is safe to show a client."""

    def __init__(self, detail: str, **extra: Any) -> None:
        super().__init__(detail)
        self.detail = detail
        self.extra = extra


class NotFoundError(AudioflowError):
    """The named resource does not exist."""


class ConflictError(AudioflowError):
    """The request is well-formed but contradicts the resource's current state."""


class InvalidInputError(AudioflowError):
    """The request is well-formed JSON but its content is not acceptable."""


class UpstreamUnavailableError(AudioflowError):
    """A service we depend on (Prefect, object storage) did not answer."""


class PayloadTooLargeError(AudioflowError):
    """The request body is over the configured limit."""


class UnsupportedMediaError(AudioflowError):
    """The content is not what the endpoint accepts (e.g. an upload that is not audio)."""


class InsufficientStorageError(AudioflowError):
    """A disk the request needs (the object store, the upload spool) is full; nothing was
    stored. The client may retry once space has been freed."""


class BusyError(AudioflowError):
    """Too much work of this kind is in progress; the client should retry after a while.

    `retry_after_s` becomes the response's `Retry-After` header.
    """

    def __init__(self, detail: str, *, retry_after_s: int, **extra: Any) -> None:
        super().__init__(detail, **extra)
        self.retry_after_s = retry_after_s


class QueueFullError(BusyError):
    """A bounded queue is full (429 rather than the 503 of a busy process); the client may
    try again after `retry_after_s`."""
