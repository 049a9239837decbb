"""`POST /uploads`: audio is stored, anything else is refused by content, size is capped."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import Settings
from core.storage import build_store
from tests.support.audio_files import lavfi


def _tone(path: Path, seconds: float) -> Path:
    return lavfi(path, f"sine=frequency=440:duration={seconds}", "-ac", "2", "-b:a", "128k")


@pytest.fixture
def small_limit_client(
    settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[TestClient]:
    limited = replace(settings, api=replace(settings.api, max_upload_bytes=64 * 1024))
    with TestClient(app=create_app(limited, session_factory=session_factory)) as client:
        yield client


def test_audio_upload_is_stored_under_uploads(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    source = _tone(tmp_path / "tone.mp3", 3)
    response = client.post(
        "/uploads", params={"filename": "My Episode #1.mp3"}, content=source.read_bytes()
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["key"].startswith("uploads/") and body["key"].endswith(".mp3")
    assert body["codec"] == "mp3" and abs(body["durationS"] - 3) < 0.2
    store = build_store(settings.storage)
    assert store.size(body["key"]) == source.stat().st_size == body["size"]


def test_text_named_mp3_is_refused_and_not_stored(client: TestClient, settings: Settings) -> None:
    store = build_store(settings.storage)
    before = store.list_keys("uploads/")
    response = client.post(
        "/uploads", params={"filename": "notes.mp3"}, content=b"these are my show notes\n" * 100
    )
    assert response.status_code == 415, response.text
    assert "not usable audio" in response.json()["detail"]
    assert store.list_keys("uploads/") == before


def test_empty_and_badly_named_uploads(client: TestClient) -> None:
    assert client.post("/uploads", params={"filename": "a.mp3"}, content=b"").status_code == 422
    assert client.post("/uploads", content=b"abc").status_code == 400  # filename is required


def test_hostile_filenames_become_safe_keys(client: TestClient, tmp_path: Path) -> None:
    audio = _tone(tmp_path / "t.mp3", 1).read_bytes()
    for name in ("../../etc/passwd.mp3", "/abs/x.mp3", "a\x00b.mp3", "..", "a\nb.mp3"):
        response = client.post("/uploads", params={"filename": name}, content=audio)
        assert response.status_code == 201, (name, response.text)
        key = response.json()["key"]
        parts = key.split("/")
        assert parts[0] == "uploads" and ".." not in parts and len(parts) == 3, key
        assert all(ch.isprintable() for ch in key)


def test_oversize_upload_is_413_and_not_stored(
    small_limit_client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    store = build_store(settings.storage)
    before = store.list_keys("uploads/")
    big = _tone(tmp_path / "long.mp3", 20).read_bytes()  # ~320 KB > 64 KiB
    response = small_limit_client.post("/uploads", params={"filename": "long.mp3"}, content=big)
    assert response.status_code == 413, response.text

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for start in range(0, len(big), 8192):
            yield big[start : start + 8192]

    response = small_limit_client.post(
        "/uploads", params={"filename": "long.mp3"}, content=chunks()
    )
    assert response.status_code == 413, response.text
    assert store.list_keys("uploads/") == before


def test_presign_needs_an_s3_backend(client: TestClient) -> None:
    response = client.post("/uploads/presign", json={"filename": "a.mp3", "size": 1000})
    assert response.status_code == 422
    assert "S3" in response.json()["detail"]
