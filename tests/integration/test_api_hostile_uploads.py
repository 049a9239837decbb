"""`POST /uploads` with hostile files, over-long audio and too many uploads at once.

Through the real app and a real local store. Before the demuxer allow-list the HLS playlist
naming an MP3 on the API's own disk was a 201 "10 s of mp3".
"""

from __future__ import annotations

import threading
from collections.abc import AsyncIterator, Iterator
from dataclasses import replace
from pathlib import Path

import anyio
import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import MediaSettings, Settings
from core.storage import build_store
from domain.uploads import UploadedAudio, UploadService
from tests.support.audio_files import ffmpeg, lavfi
from tests.support.hostile_media import HOSTILE, lying_mp3


@pytest.fixture(scope="module")
def secret_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("api-hostile")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=550:duration=10", str(folder / "secret.mp3"))
    return folder


def _tone(path: Path, seconds: float, *codec: str) -> Path:
    return lavfi(path, f"sine=frequency=440:duration={seconds}", *codec)


@pytest.mark.parametrize("case", sorted(HOSTILE))
def test_hostile_upload_is_415_says_what_it_is_and_stores_nothing(
    case: str, client: TestClient, settings: Settings, secret_dir: Path
) -> None:
    builder, phrase = HOSTILE[case]
    path = builder(secret_dir, secret_dir / "secret.mp3")
    store = build_store(settings.storage)
    before = store.list_keys("uploads/")
    response = client.post(
        "/uploads", params={"filename": f"episode-{case}.mp3"}, content=path.read_bytes()
    )
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert phrase in detail, detail
    assert f"episode-{case}.mp3" in detail and "audioflow-upload-" not in detail, detail
    assert store.list_keys("uploads/") == before


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("tone.m4a", ("-c:a", "aac")),
        ("tone.ogg", ("-c:a", "libopus")),
        ("tone.webm", ("-c:a", "libopus")),
        ("tone.flac", ("-c:a", "flac")),
        ("tone.wav", ("-c:a", "pcm_s16le")),
    ],
)
def test_audio_in_allowed_containers_is_still_stored(
    name: str, codec: tuple[str, ...], client: TestClient, tmp_path: Path
) -> None:
    source = _tone(tmp_path / name, 2, *codec)
    response = client.post("/uploads", params={"filename": name}, content=source.read_bytes())
    assert response.status_code == 201, response.text
    assert abs(response.json()["durationS"] - 2) < 0.2


@pytest.fixture
def five_second_client(
    settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[TestClient]:
    limited = replace(settings, media=MediaSettings(max_duration_s=5))
    with TestClient(app=create_app(limited, session_factory=session_factory)) as client:
        yield client


def test_too_long_audio_is_422_naming_the_limit(
    five_second_client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    store = build_store(settings.storage)
    before = store.list_keys("uploads/")
    honest = _tone(tmp_path / "ten.mp3", 10)
    lying = lying_mp3(tmp_path, seconds=12, claimed_s=2)
    for source in (honest, lying):
        response = five_second_client.post(
            "/uploads", params={"filename": source.name}, content=source.read_bytes()
        )
        assert response.status_code == 422, response.text
        detail = response.json()["detail"]
        assert "limit" in detail and "5 s" in detail and "AUDIOFLOW_MAX_DURATION_S" in detail
    assert store.list_keys("uploads/") == before
    short = _tone(tmp_path / "four.mp3", 4)
    response = five_second_client.post(
        "/uploads", params={"filename": "four.mp3"}, content=short.read_bytes()
    )
    assert response.status_code == 201, response.text


# --- AUDIOFLOW_UPLOAD_CHECKS ----------------------------------------------------------------


class SlowBody:
    """An upload body that sends its first chunk, then waits until the test lets it go on."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.reading = threading.Event()  # set once the service has pulled the first chunk
        self.go_on = threading.Event()

    async def chunks(self) -> AsyncIterator[bytes]:
        yield self.data[:1024]
        self.reading.set()
        await anyio.to_thread.run_sync(self.go_on.wait)
        yield self.data[1024:]


def test_past_the_check_slots_uploads_get_503_with_retry_after(
    settings: Settings, session_factory: sessionmaker[Session], tmp_path: Path
) -> None:
    """Two uploads streaming slowly hold both slots; a third is refused at once, unread."""
    two = replace(settings, api=replace(settings.api, upload_checks=2))
    app = create_app(two, session_factory=session_factory)
    service: UploadService = app.state.services.uploads
    audio = _tone(tmp_path / "tone.mp3", 2).read_bytes()
    bodies = [SlowBody(audio), SlowBody(audio)]
    results: list[UploadedAudio] = []

    async def hold_both_slots() -> None:
        async def one(body: SlowBody) -> None:
            results.append(await service.receive("slow.mp3", body.chunks()))

        async with anyio.create_task_group() as group:
            for body in bodies:
                group.start_soon(one, body)

    holder = threading.Thread(target=anyio.run, args=(hold_both_slots,), daemon=True)
    holder.start()
    try:
        for body in bodies:
            assert body.reading.wait(60), "the slow uploads never started"
        store = build_store(settings.storage)
        before = store.list_keys("uploads/")
        with TestClient(app=app) as client:
            response = client.post("/uploads", params={"filename": "third.mp3"}, content=audio)
            assert response.status_code == 503, response.text
            assert response.headers["retry-after"].isdigit()
            assert "AUDIOFLOW_UPLOAD_CHECKS" in response.json()["detail"]
            assert store.list_keys("uploads/") == before
            for body in bodies:
                body.go_on.set()
            holder.join(120)
            assert not holder.is_alive()
            assert len(results) == 2  # the slow uploads themselves went through
            # Slots are given back after success and after refusal alike.
            for _ in range(3):
                refused = client.post("/uploads", params={"filename": "n.mp3"}, content=b"x" * 99)
                assert refused.status_code == 415, refused.text
            response = client.post("/uploads", params={"filename": "third.mp3"}, content=audio)
            assert response.status_code == 201, response.text
    finally:
        for body in bodies:
            body.go_on.set()
        holder.join(120)
