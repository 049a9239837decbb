"""Uploads: stream a file into object storage after checking, by its content, that it is audio.

The body is spooled to a temporary file chunk by chunk (memory stays flat whatever the
size) and refused as soon as it passes the size limit; ffprobe then decides whether it is
audio (the name and Content-Type are not trusted); only then does it go to the store.

The check (probe and full decode) costs CPU in a worker thread, so each API process runs
at most `AUDIOFLOW_UPLOAD_CHECKS` uploads at once: a slot is taken before the body is read
(non-blocking: past the limit the upload is a 503 with `Retry-After` and nothing is read)
and held until the upload is stored or refused.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import anyio

from core.errors import (
    BusyError,
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
from media.probe import (
    BadAudioError,
    SourceTooLongError,
    UnsupportedContainerError,
    probe_source,
)

#: Seconds a client refused for lack of a check slot is told to wait (a check of a typical
#: episode takes a few seconds).
RETRY_AFTER_S = 5

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
    """A URL a client can PUT the file to directly (S3 backends only), with the headers
    that were signed into it and must be sent as they are."""

    key: str
    url: str
    method: str
    expires_in: int
    headers: dict[str, str]


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


def _named(exc: BaseException, spool: Path, key: str) -> str:
    """The check's message with the spool file's random name replaced by the upload's."""
    return str(exc).replace(spool.name, key.rsplit("/", 1)[-1])


class UploadService:
    """Receives uploads for the API."""

    def __init__(
        self,
        store: ObjectStore,
        max_bytes: int,
        spool_dir: Path | None = None,
        *,
        max_duration_s: float | None = None,
        checks: int = 2,
        presign_max_expires_s: int = 3600,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.spool_dir = spool_dir
        #: Longest audio accepted (None: `AUDIOFLOW_MAX_DURATION_S` from the environment).
        self.max_duration_s = max_duration_s
        #: Upload check slots of this process; a threading semaphore, so it does not matter
        #: which event loop or thread asks.
        self.check_slots = threading.BoundedSemaphore(checks)
        self.checks = checks
        self.presign_max_expires_s = presign_max_expires_s

    async def receive(self, filename: str, chunks: AsyncIterator[bytes]) -> UploadedAudio:
        """Spool, check and store one upload; nothing is stored unless it is audio.

        BusyError (503) without reading the body when every check slot is taken.
        """
        try:
            key = upload_key(filename)
        except InvalidKeyError as exc:
            raise InvalidInputError(f"filename: {exc}") from exc
        if not self.check_slots.acquire(blocking=False):
            raise BusyError(
                f"this API process is already checking {self.checks} uploads "
                f"(AUDIOFLOW_UPLOAD_CHECKS); nothing was read or stored, retry in "
                f"{RETRY_AFTER_S} s",
                retry_after_s=RETRY_AFTER_S,
            )
        try:
            return await self._receive(key, chunks)
        finally:
            self.check_slots.release()

    async def _receive(self, key: str, chunks: AsyncIterator[bytes]) -> UploadedAudio:
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
            check = functools.partial(probe_source, spool, max_duration_s=self.max_duration_s)
            try:
                info = await anyio.to_thread.run_sync(check)
            except SourceTooLongError as exc:
                raise InvalidInputError(f"too long: {_named(exc, spool, key)}") from exc
            except UnsupportedContainerError as exc:
                raise UnsupportedMediaError(
                    f"not an accepted audio file: {_named(exc, spool, key)}"
                ) from exc
            except BadAudioError as exc:
                raise UnsupportedMediaError(f"not usable audio: {_named(exc, spool, key)}") from exc
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

    def presign(self, filename: str, size: int, expires_s: int | None = None) -> PresignedUpload:
        """A presigned PUT for a direct upload of exactly `size` bytes to the bucket.

        A URL is a bearer credential for its lifetime, so that is bounded
        (AUDIOFLOW_PRESIGN_MAX_EXPIRES_S); the size is signed into it, so a direct upload
        is held to AUDIOFLOW_MAX_UPLOAD_BYTES like one through the API.
        """
        if expires_s is None:
            expires_s = self.presign_max_expires_s
        if expires_s > self.presign_max_expires_s:
            raise InvalidInputError(
                f"expiresIn: at most {self.presign_max_expires_s} s "
                "(AUDIOFLOW_PRESIGN_MAX_EXPIRES_S)"
            )
        if size > self.max_bytes:
            raise PayloadTooLargeError(
                f"size: {size} bytes exceeds the limit of {self.max_bytes} bytes"
            )
        try:
            key = upload_key(filename)
        except InvalidKeyError as exc:
            raise InvalidInputError(f"filename: {exc}") from exc
        try:
            url = self.store.presigned_put_url(key, expires_s, content_length=size)
        except NotSupportedError as exc:
            raise InvalidInputError(
                f"presigned uploads need an S3 backend; this API stores to {self.store.describe()}"
            ) from exc
        return PresignedUpload(
            key=key,
            url=url,
            method="PUT",
            expires_in=expires_s,
            headers={"Content-Length": str(size)},
        )
