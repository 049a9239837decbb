"""Errors raised by object stores, shared by every backend so callers never see boto3 types.

The flows retry on `StorageUnavailableError` ("the store did not answer or answered 5xx")
and `StorageFullError` (a disk ran out of room), which a later attempt can fix. Every other
`StorageError` is permanent for the request at hand (a missing object, a bad key, an
oversized upload, a misconfiguration).
"""

from __future__ import annotations

from core.keys import InvalidKeyError

__all__ = [
    "InvalidKeyError",
    "NotSupportedError",
    "ObjectNotFoundError",
    "ObjectTooLargeError",
    "StorageError",
    "StorageFullError",
    "StorageUnavailableError",
]


class StorageError(Exception):
    """Base of every storage failure; the message names the store and the key."""


class ObjectNotFoundError(StorageError):
    """The key does not exist in the store."""

    def __init__(self, key: str, where: str = "") -> None:
        self.key = key
        super().__init__(f"object {key!r} not found" + (f" in {where}" if where else ""))


class StorageUnavailableError(StorageError):
    """Transient: connection refused, timeout, or a 5xx/throttling answer. Safe to retry."""


class StorageFullError(StorageError):
    """Transient: a disk (the store's, or the local file being written) has no room left
    (ENOSPC, or EDQUOT for a quota). Nothing partial was left behind; it may fit later."""


class ObjectTooLargeError(StorageError):
    """A streamed upload went past its `max_bytes` limit; nothing was stored."""

    def __init__(self, key: str, max_bytes: int) -> None:
        self.key = key
        self.max_bytes = max_bytes
        super().__init__(f"object {key!r} is larger than the limit of {max_bytes} bytes")


class NotSupportedError(StorageError):
    """The backend cannot do this (e.g. presigned URLs on the local-folder store)."""
