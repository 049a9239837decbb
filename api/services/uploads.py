"""Uploads: stream a file into object storage after checking, by its content, that it is audio.

The body is spooled to a temporary file chunk by chunk (memory stays flat whatever the
size) and refused as soon as it passes the size limit; ffprobe then decides whether it is
audio (the name and Content-Type are not trusted); only then does it go to the store.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import tempfile
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from core.errors import (
    InsufficientStorageError,
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedMediaError,
    UpstreamUnavailableError,
)
from core.keys import InvalidKeyError, upload_key
from core.storage.base import ObjectStore
from core.storage.errors import NotSupportedError, StorageFullError, StorageUnavailableError
from core.tempdir import UPLOAD_SPOOL_PREFIX, private_temp_root
from flows.audio.probe import BadAudioError, probe_source

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class UploadedAudio:
    """What was stored and what ffprobe found in it."""

    key: str
    size: int
    duration_s: float
    codec: str
    channels: int
    sample_rate: int


@dataclass(frozen=True)
class PresignedUpload:
    """A URL a client can PUT the file to directly (S3 backends only)."""

    key: str
    url: str
    method: str
    expires_in: int


@contextmanager
def _spool_full_is_507(spool_dir: Path | None) -> Iterator[None]:
    """A full spool disk (ENOSPC, EDQUOT) is the server's problem, told as a 507, not a 500."""
    try:
        yield
    except OSError as exc:
        if exc.errno not in (errno.ENOSPC, errno.EDQUOT):
            raise
        log.warning("upload spool %s is full: %s", spool_dir or tempfile.gettempdir(), exc)
        raise InsufficientStorageError(
            "the server's disk for incoming uploads is full; nothing was stored, try again later"
        ) from exc


class UploadService:
    """Receives uploads for the API."""

    def __init__(self, store: ObjectStore, max_bytes: int, spool_dir: Path | None = None) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.spool_dir = spool_dir

    async def receive(self, filename: str, chunks: AsyncIterator[bytes]) -> UploadedAudio:
        """Spool, check and store one upload; nothing is stored unless it is audio."""
        try:
            key = upload_key(filename)
        except InvalidKeyError as exc:
            raise InvalidInputError(f"filename: {exc}") from exc
        with _spool_full_is_507(self.spool_dir):
            if self.spool_dir is not None:
                private_temp_root(self.spool_dir)
            fd, name = tempfile.mkstemp(prefix=UPLOAD_SPOOL_PREFIX, dir=self.spool_dir)
        spool = Path(name)
        try:
            size = 0
            # The close at the end of the `with` flushes the last buffered bytes: inside.
            with _spool_full_is_507(self.spool_dir), os.fdopen(fd, "wb") as out:
                async for chunk in chunks:
                    size += len(chunk)
                    if size > self.max_bytes:
                        raise PayloadTooLargeError(
                            f"upload exceeds the limit of {self.max_bytes} bytes"
                        )
                    await anyio.to_thread.run_sync(out.write, chunk)
            if size == 0:
                raise InvalidInputError("the upload is empty (0 bytes)")
            try:
                info = await anyio.to_thread.run_sync(probe_source, spool)
            except BadAudioError as exc:
                raise UnsupportedMediaError(f"not usable audio: {exc}") from exc
            try:
                stored = await anyio.to_thread.run_sync(self.store.put_file, key, spool)
            except StorageUnavailableError as exc:
                raise UpstreamUnavailableError(f"object storage unavailable: {exc}") from exc
            except StorageFullError as exc:
                log.warning("object store full: %s", exc)
                raise InsufficientStorageError(
                    "object storage is full; nothing was stored, try again later"
                ) from exc
            return UploadedAudio(
                key=key,
                size=stored,
                duration_s=info.duration_s,
                codec=info.codec,
                channels=info.channels,
                sample_rate=info.sample_rate,
            )
        finally:
            await anyio.to_thread.run_sync(functools.partial(spool.unlink, missing_ok=True))

    def presign(self, filename: str, expires_s: int = 3600) -> PresignedUpload:
        """A presigned PUT for a direct upload to the bucket."""
        try:
            key = upload_key(filename)
        except InvalidKeyError as exc:
            raise InvalidInputError(f"filename: {exc}") from exc
        try:
            url = self.store.presigned_put_url(key, expires_s)
        except NotSupportedError as exc:
            raise InvalidInputError(
                f"presigned uploads need an S3 backend; this API stores to {self.store.describe()}"
            ) from exc
        return PresignedUpload(key=key, url=url, method="PUT", expires_in=expires_s)
