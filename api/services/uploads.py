"""Uploads: stream a file into object storage after checking, by its content, that it is audio.

The body is spooled to a temporary file chunk by chunk (memory stays flat whatever the
size) and refused as soon as it passes the size limit; ffprobe then decides whether it is
audio (the name and Content-Type are not trusted); only then does it go to the store.
"""

from __future__ import annotations

import functools
import os
import tempfile
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import anyio

from core.errors import (
    InvalidInputError,
    PayloadTooLargeError,
    UnsupportedMediaError,
    UpstreamUnavailableError,
)
from core.keys import InvalidKeyError, upload_key
from core.storage.base import ObjectStore
from core.storage.errors import NotSupportedError, StorageUnavailableError
from flows.audio.probe import BadAudioError, probe_source


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


class UploadService:
    """Receives uploads for the API."""

    def __init__(
        self,
        store: ObjectStore,
        max_bytes: int,
        spool_dir: Path | None = None,
        *,
        presign_max_expires_s: int = 3600,
    ) -> None:
        self.store = store
        self.max_bytes = max_bytes
        self.spool_dir = spool_dir
        self.presign_max_expires_s = presign_max_expires_s

    async def receive(self, filename: str, chunks: AsyncIterator[bytes]) -> UploadedAudio:
        """Spool, check and store one upload; nothing is stored unless it is audio."""
        try:
            key = upload_key(filename)
        except InvalidKeyError as exc:
            raise InvalidInputError(f"filename: {exc}") from exc
        fd, name = tempfile.mkstemp(prefix="audioflow-upload-", dir=self.spool_dir)
        spool = Path(name)
        try:
            size = 0
            with os.fdopen(fd, "wb") as out:
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
