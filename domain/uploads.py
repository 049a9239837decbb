"""Uploads: stream a file into object storage after checking, by its content, that it is audio.

The body is spooled to a temporary file chunk by chunk (memory stays flat whatever the
size) and refused as soon as it passes the size limit; ffprobe then decides whether it is
audio (the name and Content-Type are not trusted); only then does it go to the store.

The check (probe and full decode) costs CPU in a worker thread, so each API process runs
at most `AUDIOFLOW_UPLOAD_CHECKS` uploads at once: a slot is taken before the body is read
(non-blocking: past the limit the upload is a 503 with `Retry-After` and nothing is read)
and held until the upload is stored or refused.

Cover and chapter images (`receive_image`) take the same path with their own limit
(`AUDIOFLOW_COVER_MAX_BYTES`) and check (`media.cover.check_cover`: the JPEG/PNG signature
and header, never the name or Content-Type). That check reads only the headers
(microseconds), so images take no check slot: the slots bound decoding work, not bodies.
"""

from __future__ import annotations

import errno
import functools
import logging
import os
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator
from contextlib import asynccontextmanager, contextmanager
from dataclasses import KW_ONLY, dataclass
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
from core.keys import InvalidKeyError, sanitize_filename, upload_key
from core.storage.base import ObjectStore
from core.storage.errors import NotSupportedError, StorageFullError, StorageUnavailableError
from core.tempdir import UPLOAD_SPOOL_PREFIX, private_temp_root
from domain.views import OutStruct
from media.cover import DEFAULT_MAX_BYTES as DEFAULT_COVER_MAX_BYTES
from media.cover import CoverArtError, check_cover, image_type
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


class UploadedAudio(OutStruct):
    """What was stored and what ffprobe found in it (the API answers it: `UploadOut`)."""

    key: str
    size: int
    duration_s: float
    codec: str
    channels: int
    sample_rate: int


class UploadedImage(OutStruct):
    """A stored cover or chapter image: its key and what its bytes are (the API answers it:
    `ImageUploadOut`)."""

    key: str
    size: int
    #: `image/jpeg` or `image/png`, from the bytes (also the stored object's Content-Type).
    content_type: str
    width: int
    height: int


#: The extension an image is stored with, from its detected type (not the client's name).
_IMAGE_EXTENSIONS = {"image/jpeg": "jpg", "image/png": "png"}


def _declares_an_image_type(declared: str) -> bool:
    """Only an `image/*` Content-Type claims what the bytes are; anything else (none,
    `application/octet-stream`, the form type `curl --data-binary` sends by default) says
    nothing about them, and the bytes decide alone."""
    return declared.startswith("image/")


def image_upload_key(filename: str | None, content_type: str) -> str:
    """`uploads/{uuid4 hex}/{stem}.{jpg|png}`: the client's name (sanitized) for humans, the
    extension from the detected type, so a JPEG named `cover.png` is stored as `cover.jpg`
    and a reader guessing the type from the key (the local store's readers) gets it right."""
    base = sanitize_filename(filename or "cover")
    stem = base.rsplit(".", 1)[0] if "." in base else base
    return upload_key(f"{stem or 'cover'}.{_IMAGE_EXTENSIONS[content_type]}")


class PresignedUpload(OutStruct):
    """A URL a client can PUT the file to directly (S3 backends only), with the headers
    that were signed into it and must be sent as they are (the API answers it:
    `PresignOut`)."""

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


@dataclass(eq=False)
class UploadService:
    """Receives uploads for the API."""

    store: ObjectStore
    max_bytes: int
    spool_dir: Path | None = None
    _: KW_ONLY
    #: Longest audio accepted (None: `AUDIOFLOW_MAX_DURATION_S` from the environment).
    max_duration_s: float | None = None
    checks: int = 2
    presign_max_expires_s: int = 3600
    #: Largest cover or chapter image accepted (AUDIOFLOW_COVER_MAX_BYTES).
    cover_max_bytes: int = DEFAULT_COVER_MAX_BYTES

    def __post_init__(self) -> None:
        #: Upload check slots of this process; a threading semaphore, so it does not matter
        #: which event loop or thread asks.
        self.check_slots = threading.BoundedSemaphore(self.checks)

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

    @asynccontextmanager
    async def _spooled(self, chunks: AsyncIterator[bytes], max_bytes: int) -> AsyncIterator[Path]:
        """The body in a private temporary file, removed on the way out.

        PayloadTooLargeError (413) as soon as more than `max_bytes` arrive (nothing more is
        read), InvalidInputError (422) for an empty body, 507 for a full spool disk.
        """
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
                    if size > max_bytes:
                        raise PayloadTooLargeError(f"upload exceeds the limit of {max_bytes} bytes")
                    await anyio.to_thread.run_sync(out.write, chunk)
            if size == 0:
                raise InvalidInputError("the upload is empty (0 bytes)")
            yield spool
        finally:
            await anyio.to_thread.run_sync(functools.partial(spool.unlink, missing_ok=True))

    async def _store(self, key: str, spool: Path, content_type: str | None = None) -> int:
        """Put the checked spool file under `key`; the store's failures as 503 / 507."""
        put = functools.partial(self.store.put_file, key, spool, content_type)
        try:
            return await anyio.to_thread.run_sync(put)
        except StorageUnavailableError as exc:
            raise UpstreamUnavailableError(f"object storage unavailable: {exc}") from exc
        except StorageFullError as exc:
            log.warning("object store full: %s", exc)
            raise InsufficientStorageError(
                "object storage is full; nothing was stored, try again later"
            ) from exc

    async def _receive(self, key: str, chunks: AsyncIterator[bytes]) -> UploadedAudio:
        async with self._spooled(chunks, self.max_bytes) as spool:
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
            stored = await self._store(key, spool)
            return UploadedAudio(
                key=key,
                size=stored,
                duration_s=info.duration_s,
                codec=info.codec,
                channels=info.channels,
                sample_rate=info.sample_rate,
            )

    async def receive_image(
        self,
        filename: str | None,
        chunks: AsyncIterator[bytes],
        declared_type: str | None = None,
    ) -> UploadedImage:
        """Spool, check and store one cover or chapter image; nothing is stored unless it is
        a JPEG or PNG within AUDIOFLOW_COVER_MAX_BYTES and 3000x3000 px.

        The type comes from the bytes. Refused: over the size limit 413 (unread past it);
        not a JPEG or PNG, or `declared_type` (the request's Content-Type) naming another
        type, 415; empty, truncated, damaged or too many pixels 422. No Content-Type or
        `application/octet-stream` declares nothing. The object is stored with the
        detected type as its Content-Type and extension.
        """
        declared = (declared_type or "").split(";", 1)[0].strip().lower()
        async with self._spooled(chunks, self.cover_max_bytes) as spool:
            # At most cover_max_bytes: the spool refused anything larger.
            data = await anyio.to_thread.run_sync(spool.read_bytes)
            mime = image_type(data)
            try:
                art = check_cover(data, max_bytes=self.cover_max_bytes)
            except CoverArtError as exc:
                if mime is None:
                    raise UnsupportedMediaError(f"not an accepted image: {exc}") from exc
                raise InvalidInputError(f"not a usable image: {exc}") from exc
            if _declares_an_image_type(declared):
                try:
                    check_cover(data, declared_type=declared, max_bytes=self.cover_max_bytes)
                except CoverArtError as exc:
                    raise UnsupportedMediaError(
                        f"Content-Type does not match the body: {exc}; send the image's own "
                        "type or application/octet-stream"
                    ) from exc
            key = image_upload_key(filename, art.mime)
            stored = await self._store(key, spool, art.mime)
            return UploadedImage(
                key=key, size=stored, content_type=art.mime, width=art.width, height=art.height
            )

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
