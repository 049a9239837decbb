"""The object-store interface that the flows and the API program against.

Two backends implement it: a local folder (the embedded default, tests) and any
S3-compatible service (AWS, R2, MinIO, moto). Callers only ever see this interface and the
errors in `core.storage.errors`, so switching backend is a setting, not a code change.

Contract shared by every backend:

* keys follow `core.keys` and are validated on every call (`InvalidKeyError`);
* writes are all-or-nothing: a reader sees the old object or the new one, never a partial
  one, and a failed or oversized write leaves nothing behind;
* `put_stream` never holds more than one part of the body in memory;
* `delete` of a missing key is not an error (deletes are idempotent, as on S3);
* prefixes are plain string prefixes, as on S3: `episodes/ab` also matches `episodes/abc/x`
  (use `core.keys.output_prefix`, which ends with `/`, to mean one folder).
"""

from __future__ import annotations

import mimetypes
from abc import ABC, abstractmethod
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import BinaryIO, cast

from core.storage.errors import ObjectTooLargeError

__all__ = [
    "DEFAULT_CONTENT_TYPE",
    "ObjectInfo",
    "ObjectStore",
    "guess_content_type",
    "read_up_to",
]

DEFAULT_CONTENT_TYPE = "application/octet-stream"

#: Types `mimetypes` gets wrong or lacks on minimal systems (no /etc/mime.types).
_EXTRA_TYPES = {
    ".mp3": "audio/mpeg",
    ".m4a": "audio/mp4",
    ".opus": "audio/ogg",
    ".ogg": "audio/ogg",
    ".flac": "audio/flac",
    ".wav": "audio/wav",
    ".json": "application/json",
    ".vtt": "text/vtt",
    ".srt": "application/x-subrip",
    ".txt": "text/plain",
}


def guess_content_type(key: str) -> str:
    """A MIME type from the key's extension, for callers that do not pass one."""
    suffix = Path(key).suffix.lower()
    if suffix in _EXTRA_TYPES:
        return _EXTRA_TYPES[suffix]
    guessed, _ = mimetypes.guess_type(key, strict=False)
    return guessed or DEFAULT_CONTENT_TYPE


def read_up_to(stream: BinaryIO, size: int) -> bytes:
    """Read exactly `size` bytes unless the stream ends first.

    A single `read(n)` on a socket or a request body may return fewer bytes than asked;
    S3 parts other than the last must be at least 5 MiB, so short reads must be topped up.
    """
    buf = bytearray()
    while len(buf) < size:
        chunk = stream.read(size - len(buf))
        if not chunk:
            break
        buf += chunk
    return bytes(buf)


class _LimitedReader:
    """`stream`, read through: `ObjectTooLargeError` once more than `max_bytes` came from it.

    Raised from the read that goes past the limit, before its bytes are stored, so every
    backend stops the write at the same point.
    """

    def __init__(self, stream: BinaryIO, key: str, max_bytes: int) -> None:
        self._stream = stream
        self._key = key
        self._max_bytes = max_bytes
        self._total = 0

    def read(self, size: int = -1) -> bytes:
        chunk = self._stream.read(size)
        self._total += len(chunk)
        if self._total > self._max_bytes:
            raise ObjectTooLargeError(self._key, self._max_bytes)
        return chunk


@dataclass(frozen=True)
class ObjectInfo:
    """One listed object: what the retention pass needs to judge its age."""

    key: str
    size: int
    #: When the object was last written (timezone-aware, UTC).
    modified: datetime


class ObjectStore(ABC):
    """A flat namespace of objects addressed by `/`-separated keys."""

    @abstractmethod
    def put_file(self, key: str, path: Path, content_type: str | None = None) -> int:
        """Store the file at `path` under `key` (replacing any object); return its size."""

    def put_stream(
        self,
        key: str,
        stream: BinaryIO,
        content_type: str | None = None,
        max_bytes: int | None = None,
    ) -> int:
        """Store everything read from `stream` under `key`; return the number of bytes.

        The body is copied part by part, never buffered whole, so a multi-gigabyte upload
        costs one part of memory. If more than `max_bytes` arrive, the write is abandoned,
        no object is left at `key` (an older object there is kept) and
        `ObjectTooLargeError` is raised.
        """
        if max_bytes is not None:
            stream = cast(BinaryIO, _LimitedReader(stream, key, max_bytes))
        return self._write_stream(key, stream, content_type)

    @abstractmethod
    def _write_stream(self, key: str, stream: BinaryIO, content_type: str | None) -> int:
        """The backend's part of `put_stream`: copy `stream` to `key`, part by part.

        An exception from `stream.read` (a client that hung up, `ObjectTooLargeError` from
        the `max_bytes` limit) abandons the write and leaves nothing at `key`.
        """

    @abstractmethod
    def get_file(self, key: str, dest: Path) -> int:
        """Download `key` to `dest` (atomically replacing it); return its size."""

    @abstractmethod
    def exists(self, key: str) -> bool:
        """Whether an object is stored under `key`."""

    @abstractmethod
    def size(self, key: str) -> int:
        """The object's size in bytes; `ObjectNotFoundError` if it does not exist."""

    @abstractmethod
    def delete(self, key: str) -> None:
        """Remove the object; a missing key is not an error."""

    @abstractmethod
    def delete_prefix(self, prefix: str) -> int:
        """Remove every object whose key starts with `prefix`; return how many."""

    @abstractmethod
    def list_keys(self, prefix: str) -> list[str]:
        """Every key starting with `prefix`, sorted."""

    @abstractmethod
    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        """Every object whose key starts with `prefix`, sorted by key, with size and mtime."""

    @abstractmethod
    def presigned_put_url(
        self, key: str, expires_s: int = 3600, content_length: int | None = None
    ) -> str:
        """A URL a client can PUT the object's bytes to directly, valid `expires_s` seconds.

        With `content_length`, the length is signed into the URL: the store refuses a PUT
        whose `Content-Length` differs (the upload size limit holds for direct uploads).

        Raises `NotSupportedError` on backends without one (the local folder).
        """

    @abstractmethod
    def describe(self) -> str:
        """Where the objects live, for humans and logs (`s3://bucket`, a folder path)."""

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.describe()}>"
