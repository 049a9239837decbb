"""The local-folder object store: the embedded default and the test double for S3.

Keys map to files under one root folder (`episodes/e1/audio/mp3_128.mp3` ->
`{root}/episodes/e1/audio/mp3_128.mp3`). It keeps the same contract as the S3 store so the
flows cannot tell them apart:

* a path guard resolves every final path (symlinks included) and refuses any key that would
  land outside the root, on top of the key rules of `core.keys`;
* every write goes to a temporary file in the destination folder and is then renamed over
  the target with `os.replace`, which is atomic on POSIX: readers see the old file or the
  new one, and a crash or an oversized stream leaves no partial object;
* folders are created on write and removed again when the last object in them is deleted,
  so an empty "prefix" disappears as it does on S3.
"""

from __future__ import annotations

import errno
import os
import tempfile
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from pathlib import Path
from typing import BinaryIO

from core.keys import InvalidKeyError, validate_key, validate_prefix
from core.storage.base import ObjectInfo, ObjectStore
from core.storage.errors import (
    NotSupportedError,
    ObjectNotFoundError,
    StorageError,
    StorageFullError,
)

__all__ = ["LocalStore"]

#: Temporary files start with this; listings skip them and keys may not end in one.
_TMP_PREFIX = ".audioflow-tmp-"
_COPY_CHUNK = 1024 * 1024
#: Objects are world-readable like any file a process creates (mkstemp would give 0600).
_FILE_MODE = 0o644


def _atomic_write(dest: Path, write: Callable[[BinaryIO], int]) -> int:
    """Run `write` against a temporary file beside `dest`, then rename it over `dest`.

    The temporary file is removed on any failure, including KeyboardInterrupt, so nothing
    partial is ever visible at `dest`. Returns what `write` returned (the byte count).
    """
    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=_TMP_PREFIX)
    tmp = Path(tmp_name)
    try:
        with os.fdopen(fd, "wb") as out:
            written = write(out)
            out.flush()
            os.fsync(out.fileno())
            os.fchmod(out.fileno(), _FILE_MODE)
        os.replace(tmp, dest)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return written


class _SourceReadError(Exception):
    """Carries an exception raised by the caller's stream past the OS-error mapping."""


class LocalStore(ObjectStore):
    """Objects as files under `root` (created if missing)."""

    def __init__(self, root: Path) -> None:
        self.root = Path(root).expanduser().resolve()
        self.root.mkdir(parents=True, exist_ok=True)

    # -- paths -------------------------------------------------------------------------

    def _path(self, key: str) -> Path:
        """The file for `key`, after the key rules and the escape-the-root guard."""
        validate_key(key)
        if key.rsplit("/", 1)[-1].startswith(_TMP_PREFIX):
            raise InvalidKeyError(f"object key {key!r} uses the store's temporary-file prefix")
        resolved = self.root.joinpath(*key.split("/")).resolve()
        if resolved == self.root or not resolved.is_relative_to(self.root):
            raise InvalidKeyError(f"object key {key!r} resolves outside the store root")
        return resolved

    def _key_of(self, path: Path) -> str:
        return path.relative_to(self.root).as_posix()

    @contextmanager
    def _errors(self, key: str, writing_to: Path | None = None) -> Iterator[None]:
        """Turn OS errors into storage errors that name the key.

        `writing_to` names the file being written when it is not in the store (a download),
        so that a full disk is reported where it is full.
        """
        try:
            yield
        except _SourceReadError:
            raise
        except FileNotFoundError as exc:
            raise ObjectNotFoundError(key, self.describe()) from exc
        except (NotADirectoryError, IsADirectoryError, FileExistsError) as exc:
            raise StorageError(
                f"object key {key!r} clashes with an existing object or folder in "
                f"{self.describe()}: {exc.strerror}"
            ) from exc
        except OSError as exc:
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                where = f"for {writing_to}" if writing_to else f"in {self.describe()}"
                raise StorageFullError(
                    f"no space left on the disk {where} while writing {key!r}; "
                    f"nothing was stored ({exc.strerror})"
                ) from exc
            raise StorageError(f"storage error on {key!r} in {self.describe()}: {exc}") from exc

    def _prune_empty_dirs(self, start: Path) -> None:
        """Remove now-empty folders from `start` up to (not including) the root."""
        current = start
        while current != self.root and current.is_relative_to(self.root):
            try:
                current.rmdir()
            except OSError:
                return
            current = current.parent

    # -- writes ------------------------------------------------------------------------

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> int:
        dest = self._path(key)
        with Path(path).open("rb") as src, self._errors(key):
            return _atomic_write(dest, lambda out: _copy(src, out))

    def _write_stream(self, key: str, stream: BinaryIO, content_type: str | None) -> int:
        dest = self._path(key)

        def write(out: BinaryIO) -> int:
            total = 0
            while True:
                try:
                    chunk = stream.read(_COPY_CHUNK)
                except Exception as exc:
                    raise _SourceReadError() from exc
                if not chunk:
                    return total
                total += len(chunk)
                out.write(chunk)

        try:
            with self._errors(key):
                return _atomic_write(dest, write)
        except _SourceReadError as exc:
            # The caller's stream failed (a client hung up): its error, not the store's.
            assert exc.__cause__ is not None
            raise exc.__cause__ from None

    # -- reads -------------------------------------------------------------------------

    def get_file(self, key: str, dest: Path) -> int:
        src_path = self._path(key)
        if not src_path.is_file():
            raise ObjectNotFoundError(key, self.describe())
        with self._errors(key, writing_to=Path(dest)), src_path.open("rb") as src:
            return _atomic_write(Path(dest), lambda out: _copy(src, out))

    def exists(self, key: str) -> bool:
        return self._path(key).is_file()

    def size(self, key: str) -> int:
        path = self._path(key)
        if not path.is_file():
            raise ObjectNotFoundError(key, self.describe())
        with self._errors(key):
            return path.stat().st_size

    def list_keys(self, prefix: str) -> list[str]:
        validate_prefix(prefix)
        # Walk only the deepest folder the prefix names; filter the rest as a string prefix.
        folder = prefix if prefix.endswith("/") else prefix.rpartition("/")[0]
        base = self.root.joinpath(*folder.split("/")) if folder else self.root
        try:
            base = base.resolve()
        except OSError:
            return []
        if not base.is_relative_to(self.root) or not base.is_dir():
            return []
        keys: list[str] = []
        for dirpath, _dirnames, filenames in os.walk(base):
            for name in filenames:
                if name.startswith(_TMP_PREFIX):
                    continue
                path = Path(dirpath, name)
                # A symlinked file whose target is outside the root is not an object here.
                if not path.resolve().is_relative_to(self.root):
                    continue
                key = self._key_of(path)
                if key.startswith(prefix):
                    keys.append(key)
        return sorted(keys)

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        infos = []
        for key in self.list_keys(prefix):
            try:
                stat = self._path(key).stat()
            except FileNotFoundError:
                continue  # deleted since it was listed
            modified = datetime.fromtimestamp(stat.st_mtime, tz=UTC)
            infos.append(ObjectInfo(key, stat.st_size, modified))
        return infos

    # -- deletes -----------------------------------------------------------------------

    def delete(self, key: str) -> None:
        path = self._path(key)
        with self._errors(key):
            try:
                path.unlink()
            except FileNotFoundError:
                return
        self._prune_empty_dirs(path.parent)

    def delete_prefix(self, prefix: str) -> int:
        keys = self.list_keys(prefix)
        for key in keys:
            self.delete(key)
        return len(keys)

    # -- misc --------------------------------------------------------------------------

    def presigned_put_url(
        self, key: str, expires_s: int = 3600, content_length: int | None = None
    ) -> str:
        validate_key(key)
        raise NotSupportedError(
            "the local-folder store has no presigned URLs; upload through the API instead"
        )

    def describe(self) -> str:
        return str(self.root)


def _copy(src: BinaryIO, out: BinaryIO) -> int:
    """Copy a file object in chunks and count the bytes."""
    total = 0
    while chunk := src.read(_COPY_CHUNK):
        out.write(chunk)
        total += len(chunk)
    return total
