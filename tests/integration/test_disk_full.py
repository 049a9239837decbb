"""A full disk under `POST /uploads` (upload spool, local object store) is a 507 with a
message, never a 500, and leaves nothing behind: the next upload that fits works.

The disks are real tmpfs mounts of a few MiB (tests/support/small_disk.py); the kernel
refuses the writes with ENOSPC, nothing is mocked.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import Settings
from tests.support.audio_files import lavfi_mp3
from tests.support.small_disk import free_bytes, small_disk

MiB = 1024 * 1024


def _mp3(path: Path, seconds: float) -> Path:
    """A 128 kbit/s CBR mp3: 16 000 bytes per second."""
    return lavfi_mp3(path, f"sine=frequency=330:duration={seconds}")


def _all_files(root: Path) -> list[Path]:
    return sorted(p for p in root.rglob("*") if p.is_file())


@pytest.fixture
def disk(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB filesystem, unmounted after the test."""
    with small_disk(tmp_path / "disk", 2 * MiB) as mounted:
        yield mounted


@pytest.fixture
def big_mp3(tmp_path: Path) -> Path:
    """About 3.2 MB: more than the whole small disk."""
    return _mp3(tmp_path / "big.mp3", 200)


@pytest.fixture
def mid_mp3(tmp_path: Path) -> Path:
    """About 640 kB: its spool copy and its stored copy fit on the 2 MiB disk together."""
    return _mp3(tmp_path / "mid.mp3", 40)


@pytest.fixture
def small_mp3(tmp_path: Path) -> Path:
    return _mp3(tmp_path / "small.mp3", 5)


def _client(
    settings: Settings, session_factory: sessionmaker[Session], *, store: Path, spool: Path
) -> TestClient:
    on_disk = replace(
        settings,
        storage=replace(settings.storage, backend="local", local_dir=store),
        temp_dir=spool,
    )
    return TestClient(app=create_app(on_disk, session_factory=session_factory))


@pytest.mark.parametrize(
    "full",
    ["spool", "store", "both"],
    ids=["spool-disk-full", "store-disk-full", "spool-and-store-on-one-full-disk"],
)
def test_full_disk_is_507_leaves_nothing_and_recovers(
    full: str,
    disk: Path,
    tmp_path: Path,
    base_settings: Settings,
    session_factory: sessionmaker[Session],
    big_mp3: Path,
    small_mp3: Path,
) -> None:
    roomy = tmp_path / "roomy"
    store = disk / "storage" if full in ("store", "both") else roomy / "storage"
    spool = disk / "spool" if full in ("spool", "both") else roomy / "spool"
    body = big_mp3.read_bytes()
    free_before = free_bytes(disk)
    with _client(base_settings, session_factory, store=store, spool=spool) as client:
        response = client.post("/uploads", params={"filename": "episode.mp3"}, content=body)
        assert response.status_code == 507, response.text
        detail = response.json()["detail"]
        assert "full" in detail and "nothing was stored" in detail
        assert str(disk) not in detail  # no server paths in the message
        schema = client.get("/schema/openapi.json").json()
        assert "507" in schema["paths"]["/uploads"]["post"]["responses"]

        # Nothing half-written is left: no stored object, no spool file, no temp file,
        # and every byte of the small disk is free again.
        assert _all_files(disk) == []
        assert not store.exists() or _all_files(store) == []
        assert not spool.exists() or _all_files(spool) == []
        assert free_bytes(disk) == free_before

        # The next upload that fits goes through.
        ok = client.post(
            "/uploads", params={"filename": "small.mp3"}, content=small_mp3.read_bytes()
        )
        assert ok.status_code == 201, ok.text
        stored = _all_files(store)
        assert [p.stat().st_size for p in stored] == [small_mp3.stat().st_size]
        assert stored[0].read_bytes() == small_mp3.read_bytes()
        assert not spool.exists() or _all_files(spool) == []


def test_upload_that_fits_after_space_is_freed(
    disk: Path,
    base_settings: Settings,
    session_factory: sessionmaker[Session],
    mid_mp3: Path,
) -> None:
    """A disk filled by someone else: 507; once they free it, the same upload is stored."""
    filler = disk / "filler.bin"
    with filler.open("wb") as out:
        try:
            while True:
                out.write(b"\0" * 65536)
                out.flush()
        except OSError:
            pass
    with _client(
        base_settings, session_factory, store=disk / "storage", spool=disk / "spool"
    ) as client:
        body = mid_mp3.read_bytes()
        refused = client.post("/uploads", params={"filename": "e.mp3"}, content=body)
        assert refused.status_code == 507, refused.text
        assert _all_files(disk) == [filler]
        os.unlink(filler)
        accepted = client.post("/uploads", params={"filename": "e.mp3"}, content=body)
        assert accepted.status_code == 201, accepted.text
