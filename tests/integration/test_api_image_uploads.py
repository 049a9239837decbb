"""`POST /uploads/images`: covers and chapter images go into the store through the API.

Before it, `POST /uploads` took only audio, so a client on the local-folder store had no
way to put the object `metadata.coverKey` names into the store. Images are made with
ffmpeg and what was stored is checked with ffprobe and the bytes on disk (or boto3's view
of the S3 object), not with the code under test.
"""

from __future__ import annotations

import json
import mimetypes
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import Settings
from core.storage import build_store
from core.storage.s3 import S3Store
from tests.integration.conftest import create_task
from tests.support.audio_files import ffmpeg, lavfi


def _image(path: Path, source: str = "testsrc2=size=1400x1400") -> Path:
    ffmpeg("-f", "lavfi", "-i", source, "-frames:v", "1", str(path))
    return path


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("images")
    return {
        "jpeg": _image(folder / "cover.jpg"),
        "png": _image(folder / "cover.png"),
        "gif": _image(folder / "cover.gif", "testsrc2=size=64x64"),
        "huge": _image(folder / "huge.png", "color=c=black:size=4000x4000"),  # ~50 KB
    }


def _probe(path: Path) -> dict[str, Any]:
    """ffprobe's view of an image: codec and size (independent of `media.cover`)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    ).stdout
    stream: dict[str, Any] = json.loads(out)["streams"][0]
    return stream


def _stored_path(settings: Settings, key: str) -> Path:
    return settings.storage.local_dir / key


@pytest.mark.parametrize(
    ("kind", "name", "codec", "mime", "ext"),
    [
        ("jpeg", "My Cover #1.png", "mjpeg", "image/jpeg", ".jpg"),  # the name lies: ignored
        ("png", "art.jpeg", "png", "image/png", ".png"),
    ],
)
def test_jpeg_and_png_are_stored_byte_identical_with_the_detected_type(
    kind: str,
    name: str,
    codec: str,
    mime: str,
    ext: str,
    client: TestClient,
    settings: Settings,
    images: dict[str, Path],
) -> None:
    source = images[kind]
    response = client.post(
        "/uploads/images", params={"filename": name}, content=source.read_bytes()
    )
    assert response.status_code == 201, response.text
    body = response.json()
    key = body["key"]
    parts = key.split("/")
    assert parts[0] == "uploads" and len(parts) == 3 and parts[2].endswith(ext), key
    assert body == {
        "key": key,
        "size": source.stat().st_size,
        "contentType": mime,
        "width": 1400,
        "height": 1400,
    }
    stored = _stored_path(settings, key)
    assert stored.read_bytes() == source.read_bytes()
    probed = _probe(stored)
    assert (probed["codec_name"], probed["width"], probed["height"]) == (codec, 1400, 1400)
    # The local store has no metadata: its readers take the type from the key's extension.
    assert mimetypes.guess_type(key)[0] == mime


def test_without_a_filename_and_with_a_matching_or_non_image_content_type(
    client: TestClient, settings: Settings, images: dict[str, Path]
) -> None:
    data = images["png"].read_bytes()
    # Only an image/* type claims anything; the others (curl --data-binary's form type by
    # default) leave the bytes to decide.
    for declared in (
        "image/png",
        "IMAGE/PNG; charset=binary",
        "application/octet-stream",
        "application/x-www-form-urlencoded",
        "text/plain",
    ):
        response = client.post("/uploads/images", content=data, headers={"Content-Type": declared})
        assert response.status_code == 201, (declared, response.text)
        assert response.json()["key"].endswith("/cover.png")
        assert _stored_path(settings, response.json()["key"]).read_bytes() == data
    jpeg = images["jpeg"].read_bytes()
    response = client.post("/uploads/images", content=jpeg, headers={"Content-Type": "image/jpg"})
    assert response.status_code == 201, response.text
    assert response.json()["contentType"] == "image/jpeg"


@pytest.fixture
def s3_client(
    settings: Settings,
    session_factory: sessionmaker[Session],
    s3_store: S3Store,
    moto_endpoint: str,
) -> Iterator[TestClient]:
    on_s3 = replace(
        settings,
        storage=replace(
            settings.storage,
            backend="s3",
            bucket=s3_store.bucket,
            endpoint_url=moto_endpoint,
            region="us-east-1",
        ),
    )
    with TestClient(app=create_app(on_s3, session_factory=session_factory)) as client:
        yield client


def test_on_s3_the_object_carries_the_detected_content_type(
    s3_client: TestClient, s3_store: S3Store, images: dict[str, Path]
) -> None:
    for kind, mime in (("jpeg", "image/jpeg"), ("png", "image/png")):
        data = images[kind].read_bytes()
        # A misleading name; no Content-Type.
        response = s3_client.post("/uploads/images", params={"filename": "x.gif"}, content=data)
        assert response.status_code == 201, response.text
        key = response.json()["key"]
        obj = s3_store.client.get_object(Bucket=s3_store.bucket, Key=key)
        assert obj["ContentType"] == mime
        assert obj["Body"].read() == data


def _refusal_cases(images: dict[str, Path], tmp: Path) -> dict[str, tuple[str, bytes, int, str]]:
    """name -> (filename, body, status, phrase the message must contain)."""
    playlist = f"#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n{tmp}/secret.mp3\n#EXT-X-ENDLIST\n"
    jpeg = images["jpeg"].read_bytes()
    return {
        "text named .jpg": ("cover.jpg", b"my show notes\n" * 50, 415, "text, not an image"),
        "gif": ("cover.gif", images["gif"].read_bytes(), 415, "a GIF image"),
        "hls playlist named .png": ("cover.png", playlist.encode(), 415, "text, not an image"),
        "truncated jpeg": ("cover.jpg", jpeg[:200], 422, "truncated JPEG"),
        "4000x4000 png": ("huge.png", images["huge"].read_bytes(), 422, "4000x4000 px"),
        "empty": ("cover.jpg", b"", 422, "empty"),
    }


@pytest.mark.parametrize(
    "case",
    [
        "text named .jpg",
        "gif",
        "hls playlist named .png",
        "truncated jpeg",
        "4000x4000 png",
        "empty",
    ],
)
def test_what_is_not_a_usable_jpeg_or_png_is_refused_and_not_stored(
    case: str, client: TestClient, settings: Settings, images: dict[str, Path], tmp_path: Path
) -> None:
    filename, body, status, phrase = _refusal_cases(images, tmp_path)[case]
    store = build_store(settings.storage)
    before = store.list_keys("uploads/")
    response = client.post("/uploads/images", params={"filename": filename}, content=body)
    assert response.status_code == status, response.text
    detail = response.json()["detail"]
    assert phrase in detail, detail
    assert store.list_keys("uploads/") == before


@pytest.mark.parametrize(
    ("kind", "declared", "found"),
    [
        ("png", "image/jpeg", "PNG"),
        ("jpeg", "image/png", "JPEG"),
        ("jpeg", "image/gif", "JPEG"),
    ],
)
def test_a_content_type_that_disagrees_with_the_bytes_is_415_and_not_stored(
    kind: str,
    declared: str,
    found: str,
    client: TestClient,
    settings: Settings,
    images: dict[str, Path],
) -> None:
    store = build_store(settings.storage)
    before = store.list_keys("uploads/")
    response = client.post(
        "/uploads/images",
        params={"filename": f"cover.{kind}"},
        content=images[kind].read_bytes(),
        headers={"Content-Type": declared},
    )
    assert response.status_code == 415, response.text
    detail = response.json()["detail"]
    assert declared in detail and f"a {found} image" in detail, detail
    assert store.list_keys("uploads/") == before


@pytest.fixture
def small_cover_client(
    settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[TestClient]:
    limited = replace(settings, media=replace(settings.media, cover_max_bytes=16 * 1024))
    with TestClient(app=create_app(limited, session_factory=session_factory)) as client:
        yield client


def test_an_image_over_the_cover_limit_is_413_declared_or_streamed_and_not_stored(
    small_cover_client: TestClient, settings: Settings, images: dict[str, Path]
) -> None:
    store = build_store(settings.storage)
    before = store.list_keys("uploads/")
    big = images["jpeg"].read_bytes()  # ~75 KB > 16 KiB
    assert len(big) > 16 * 1024
    response = small_cover_client.post("/uploads/images", content=big)
    assert response.status_code == 413, response.text
    assert "16384 bytes" in response.json()["detail"]

    def chunks() -> Iterator[bytes]:  # no Content-Length: the limit applies while streaming
        for start in range(0, len(big), 4096):
            yield big[start : start + 4096]

    response = small_cover_client.post("/uploads/images", content=chunks())
    assert response.status_code == 413, response.text
    assert store.list_keys("uploads/") == before
    # The audio limit is not the image limit: the same body is fine for POST /uploads' size.
    assert settings.api.max_upload_bytes > len(big)


def test_an_uploaded_cover_is_accepted_as_metadata_cover_key(
    client: TestClient, images: dict[str, Path], tmp_path: Path
) -> None:
    audio = lavfi(tmp_path / "tone.mp3", "sine=frequency=440:duration=2", "-b:a", "64k")
    uploaded = client.post("/uploads", params={"filename": "tone.mp3"}, content=audio.read_bytes())
    assert uploaded.status_code == 201, uploaded.text
    cover = client.post(
        "/uploads/images", params={"filename": "cover.jpg"}, content=images["jpeg"].read_bytes()
    )
    assert cover.status_code == 201, cover.text
    cover_key = cover.json()["key"]
    task = create_task(
        client,
        {
            "episodeId": "ep-cover",
            "audioKey": uploaded.json()["key"],
            "encodingFormats": ["mp3_64"],
            "metadata": {"title": "With a cover", "coverKey": cover_key},
        },
    )
    assert task["payload"]["metadata"]["coverKey"] == cover_key


def test_the_image_endpoint_needs_the_api_key_and_is_documented(
    settings: Settings, session_factory: sessionmaker[Session], images: dict[str, Path]
) -> None:
    keyed = replace(settings, api=replace(settings.api, api_key="k-123"))
    store = build_store(settings.storage)
    before = store.list_keys("uploads/")
    with TestClient(app=create_app(keyed, session_factory=session_factory)) as client:
        data = images["png"].read_bytes()
        assert client.post("/uploads/images", content=data).status_code == 401
        assert store.list_keys("uploads/") == before
        response = client.post("/uploads/images", content=data, headers={"X-API-Key": "k-123"})
        assert response.status_code == 201, response.text
        document = client.get("/schema/openapi.json").json()
    operation = document["paths"]["/uploads/images"]["post"]
    assert operation["security"] == document["paths"]["/uploads"]["post"]["security"]
    assert {"201", "413", "415", "422"} <= set(operation["responses"])
    response_schema = operation["responses"]["201"]["content"]["application/json"]["schema"]
    assert response_schema["$ref"].endswith("/ImageUploadOut")
    out = document["components"]["schemas"]["ImageUploadOut"]
    assert set(out["properties"]) == {"key", "size", "contentType", "width", "height"}
    assert "coverKey" in operation["description"]
    body = operation["requestBody"]
    assert body["required"] is True
    assert set(body["content"]) == {"image/jpeg", "image/png", "application/octet-stream"}
