"""Object storage for audioflow: pick a backend from settings, get one store per process.

`get_store()` is what the flows and the API call; `build_store(settings)` is for tests and
tools that bring their own settings. Backends are registered by name in `BACKENDS`; each
factory imports its module lazily, so the local backend never pays for importing boto3.
"""

from __future__ import annotations

import threading
from collections.abc import Callable

from core.settings import StorageSettings, get_settings
from core.storage.base import ObjectStore
from core.storage.errors import (
    InvalidKeyError,
    NotSupportedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
)

__all__ = [
    "BACKENDS",
    "InvalidKeyError",
    "NotSupportedError",
    "ObjectNotFoundError",
    "ObjectStore",
    "ObjectTooLargeError",
    "StorageError",
    "StorageFullError",
    "StorageUnavailableError",
    "build_store",
    "get_store",
    "reset_store",
]


def _local(settings: StorageSettings) -> ObjectStore:
    from core.storage.local import LocalStore

    return LocalStore(settings.local_dir)


def _s3(settings: StorageSettings) -> ObjectStore:
    from core.storage.s3 import S3Store

    return S3Store(
        settings.bucket,
        endpoint_url=settings.endpoint_url,
        region=settings.region,
        multipart_chunk_bytes=settings.multipart_chunk_bytes,
    )


#: Store factories by `StorageSettings.backend` (`AUDIOFLOW_STORAGE`).
BACKENDS: dict[str, Callable[[StorageSettings], ObjectStore]] = {
    "local": _local,
    "s3": _s3,
}


def build_store(settings: StorageSettings) -> ObjectStore:
    """A new store for `settings`; raises ValueError naming the known backends if unknown."""
    try:
        factory = BACKENDS[settings.backend]
    except KeyError:
        raise ValueError(
            f"unknown storage backend {settings.backend!r}; known: {', '.join(BACKENDS)}"
        ) from None
    return factory(settings)


_store_lock = threading.Lock()
_store: ObjectStore | None = None


def get_store() -> ObjectStore:
    """The process's store, built once (under a lock) from `get_settings().storage`.

    Shared so that every caller, in every thread, uses one boto3 client and its connection
    pool. Tests that change the settings call `reset_store()` afterwards.
    """
    global _store
    store = _store
    if store is None:
        with _store_lock:
            if _store is None:
                _store = build_store(get_settings().storage)
            store = _store
    return store


def reset_store() -> None:
    """Forget the process's store; the next `get_store()` builds a new one."""
    global _store
    with _store_lock:
        _store = None
