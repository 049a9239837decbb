"""The local-folder store: round trips, atomic writes, the path guard, prefixes, limits."""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any

import pytest

from core.settings import StorageSettings
from core.storage import BACKENDS, build_store
from core.storage.errors import (
    InvalidKeyError,
    NotSupportedError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageError,
)
from core.storage.local import LocalStore


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def files_under(root: Path) -> list[str]:
    """Every file (temporary ones included) below root, relative."""
    return sorted(p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file())


def test_round_trip(store: LocalStore, tmp_path: Path) -> None:
    src = tmp_path / "in.bin"
    data = os.urandom(3 * 1024 * 1024 + 17)
    src.write_bytes(data)
    key = "episodes/e1/audio/mp3_128.mp3"

    assert not store.exists(key)
    assert store.put_file(key, src, "audio/mpeg") == len(data)
    assert store.exists(key)
    assert store.size(key) == len(data)
    assert store.list_keys("episodes/") == [key]

    dest = tmp_path / "out" / "deep" / "copy.bin"
    assert store.get_file(key, dest) == len(data)
    assert dest.read_bytes() == data
    assert (store.root / key).stat().st_mode & 0o777 == 0o644

    store.delete(key)
    assert not store.exists(key)
    assert files_under(store.root) == []
    assert not (store.root / "episodes").exists(), "empty folders are pruned"
    store.delete(key)  # idempotent


def test_overwrite_is_atomic_and_leaves_no_temp_files(store: LocalStore) -> None:
    key = "a/b.txt"
    store.put_stream(key, io.BytesIO(b"version 1"))
    store.put_stream(key, io.BytesIO(b"version 2, longer"))
    assert (store.root / key).read_bytes() == b"version 2, longer"
    assert files_under(store.root) == [key]


class FailingStream(io.RawIOBase):
    """Yields some bytes, then fails like a dropped client connection."""

    def __init__(self, good: int) -> None:
        self.left = good

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        if self.left <= 0:
            raise ConnectionResetError("client went away")
        n = min(len(buffer), self.left)
        buffer[:n] = b"x" * n
        self.left -= n
        return n


def test_failed_write_keeps_the_old_object(store: LocalStore) -> None:
    key = "a/b.bin"
    store.put_stream(key, io.BytesIO(b"old"))
    with pytest.raises(ConnectionResetError):
        store.put_stream(key, io.BufferedReader(FailingStream(3 * 1024 * 1024)))
    assert (store.root / key).read_bytes() == b"old"
    assert files_under(store.root) == [key]


def test_put_stream_max_bytes(store: LocalStore) -> None:
    data = os.urandom(2 * 1024 * 1024 + 1)
    with pytest.raises(ObjectTooLargeError) as caught:
        store.put_stream("up/big.bin", io.BytesIO(data), max_bytes=2 * 1024 * 1024)
    assert caught.value.max_bytes == 2 * 1024 * 1024
    assert not store.exists("up/big.bin")
    assert files_under(store.root) == []
    # Exactly at the limit is fine.
    assert store.put_stream("up/ok.bin", io.BytesIO(data[:-1]), max_bytes=len(data) - 1) == (
        len(data) - 1
    )


def test_oversized_stream_keeps_the_old_object(store: LocalStore) -> None:
    store.put_stream("k", io.BytesIO(b"small"))
    with pytest.raises(ObjectTooLargeError):
        store.put_stream("k", io.BytesIO(b"y" * 100), max_bytes=10)
    assert (store.root / "k").read_bytes() == b"small"


@pytest.mark.parametrize("key", ["../escape", "/etc/passwd", "a/../../b", "a\x00b", "a\\b", ""])
def test_bad_keys_are_refused_everywhere(store: LocalStore, tmp_path: Path, key: str) -> None:
    src = tmp_path / "f"
    src.write_bytes(b"x")
    calls = [
        lambda: store.put_file(key, src),
        lambda: store.put_stream(key, io.BytesIO(b"x")),
        lambda: store.get_file(key, tmp_path / "out"),
        lambda: store.exists(key),
        lambda: store.size(key),
        lambda: store.delete(key),
    ]
    for call in calls:
        with pytest.raises(InvalidKeyError):
            call()
    assert not (tmp_path / "escape").exists()


def test_symlinked_folder_pointing_outside_is_refused(store: LocalStore, tmp_path: Path) -> None:
    outside = tmp_path / "outside"
    outside.mkdir()
    (outside / "secret.txt").write_text("secret")
    (store.root / "evil").symlink_to(outside, target_is_directory=True)

    with pytest.raises(InvalidKeyError, match="outside"):
        store.put_stream("evil/new.txt", io.BytesIO(b"x"))
    with pytest.raises(InvalidKeyError, match="outside"):
        store.get_file("evil/secret.txt", tmp_path / "stolen.txt")
    with pytest.raises(InvalidKeyError, match="outside"):
        store.delete("evil/secret.txt")
    assert sorted(p.name for p in outside.iterdir()) == ["secret.txt"]
    assert not (tmp_path / "stolen.txt").exists()
    assert store.list_keys("evil/") == []


def test_symlinked_file_pointing_outside_is_refused(store: LocalStore, tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("secret")
    (store.root / "link.txt").symlink_to(secret)
    with pytest.raises(InvalidKeyError, match="outside"):
        store.get_file("link.txt", tmp_path / "stolen.txt")
    with pytest.raises(InvalidKeyError, match="outside"):
        store.put_stream("link.txt", io.BytesIO(b"overwritten"))
    assert secret.read_text() == "secret"
    assert "link.txt" not in store.list_keys("l")


def test_symlink_inside_the_root_is_allowed(store: LocalStore) -> None:
    store.put_stream("real/a.txt", io.BytesIO(b"a"))
    (store.root / "alias").symlink_to(store.root / "real", target_is_directory=True)
    assert store.exists("alias/a.txt")


def test_delete_prefix_only_touches_the_prefix(store: LocalStore) -> None:
    keys = [
        "episodes/e1/audio/mp3_128.mp3",
        "episodes/e1/transcript/transcript.json",
        "episodes/e10/audio/wav.wav",
        "episodes/e1.txt",
        "uploads/u/e1.mp3",
    ]
    for key in keys:
        store.put_stream(key, io.BytesIO(key.encode()))
    assert store.list_keys("episodes/e1/") == keys[:2]
    # String-prefix semantics as on S3: "episodes/e1" also matches e10 and e1.txt.
    assert store.list_keys("episodes/e1") == sorted(keys[:4])

    assert store.delete_prefix("episodes/e1/") == 2
    assert store.list_keys("episodes/") == ["episodes/e1.txt", "episodes/e10/audio/wav.wav"]
    assert store.list_keys("uploads/") == ["uploads/u/e1.mp3"]
    assert not (store.root / "episodes" / "e1").exists()
    assert store.delete_prefix("episodes/e1/") == 0
    assert store.delete_prefix("nothing/here/") == 0


def test_prefix_rules(store: LocalStore) -> None:
    for bad in ("", "../", "/"):
        with pytest.raises(InvalidKeyError):
            store.delete_prefix(bad)
        with pytest.raises(InvalidKeyError):
            store.list_keys(bad)


def test_missing_objects(store: LocalStore, tmp_path: Path) -> None:
    dest = tmp_path / "dest.bin"
    with pytest.raises(ObjectNotFoundError, match="nope"):
        store.get_file("nope", dest)
    with pytest.raises(ObjectNotFoundError):
        store.size("a/nope")
    assert not dest.exists()
    assert not store.exists("nope")


def test_key_clashing_with_a_folder(store: LocalStore) -> None:
    store.put_stream("a/b", io.BytesIO(b"x"))
    with pytest.raises(StorageError, match="clashes"):
        store.put_stream("a", io.BytesIO(b"y"))
    with pytest.raises(StorageError, match="clashes"):
        store.put_stream("a/b/c", io.BytesIO(b"y"))


def test_no_presigned_urls(store: LocalStore) -> None:
    with pytest.raises(NotSupportedError):
        store.presigned_put_url("a/b")


def test_describe(store: LocalStore) -> None:
    assert store.describe() == str(store.root)
    assert "LocalStore" in repr(store)


def test_build_store_registry(tmp_path: Path) -> None:
    local = build_store(
        StorageSettings(
            backend="local", local_dir=tmp_path / "s", bucket="b", endpoint_url=None, region=None
        )
    )
    assert isinstance(local, LocalStore)
    assert local.root == (tmp_path / "s").resolve()

    from core.storage.s3 import S3Store

    s3 = build_store(
        StorageSettings(
            backend="s3",
            local_dir=tmp_path,
            bucket="media",
            endpoint_url="http://127.0.0.1:9",
            region="auto",
            multipart_chunk_bytes=8 * 1024 * 1024,
        )
    )
    assert isinstance(s3, S3Store)
    assert s3.describe() == "s3://media at http://127.0.0.1:9"
    assert s3.multipart_chunk_bytes == 8 * 1024 * 1024
    assert set(BACKENDS) == {"local", "s3"}

    bogus = StorageSettings(
        backend="ftp",  # type: ignore[arg-type]
        local_dir=tmp_path,
        bucket="b",
        endpoint_url=None,
        region=None,
    )
    with pytest.raises(ValueError, match="local, s3"):
        build_store(bogus)


def test_get_store_is_cached_and_follows_settings(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from core.settings import get_settings
    from core.storage import get_store, reset_store

    monkeypatch.setenv("AUDIOFLOW_STORAGE", "local")
    monkeypatch.setenv("AUDIOFLOW_STORAGE_DIR", str(tmp_path / "from-env"))
    get_settings.cache_clear()
    reset_store()
    try:
        store = get_store()
        assert isinstance(store, LocalStore)
        assert store.root == (tmp_path / "from-env").resolve()
        assert get_store() is store
    finally:
        get_settings.cache_clear()
        reset_store()


def test_list_objects_gives_sizes_and_modification_times(store: LocalStore) -> None:
    """What the retention pass judges age by: the file's mtime, as an aware UTC time."""
    from datetime import UTC, datetime

    store.put_stream("episodes/e1/a.mp3", io.BytesIO(b"abc"))
    store.put_stream("episodes/e1/b/c.txt", io.BytesIO(b"hello"))
    store.put_stream("episodes/e10/x.mp3", io.BytesIO(b"x"))
    old = datetime(2020, 1, 2, 3, 4, 5, tzinfo=UTC)
    os.utime(store.root / "episodes/e1/a.mp3", (old.timestamp(), old.timestamp()))
    infos = store.list_objects("episodes/e1/")
    assert [(i.key, i.size) for i in infos] == [
        ("episodes/e1/a.mp3", 3),
        ("episodes/e1/b/c.txt", 5),
    ]
    assert infos[0].modified == old
    assert infos[1].modified.tzinfo is not None
    assert abs((datetime.now(UTC) - infos[1].modified).total_seconds()) < 600
    assert store.list_objects("nothing/") == []
    with pytest.raises(InvalidKeyError):
        store.list_objects("../")
