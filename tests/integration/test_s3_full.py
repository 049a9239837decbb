"""An S3-compatible store that answers "storage full" (MinIO's 507 XMinioStorageFull) is a
full disk too: 507 from `POST /uploads`, transient in a flow.

The server is a real HTTP server on loopback that answers every request the way MinIO
does when its drives pass their free-space threshold; botocore parses its real answer.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import Settings
from core.storage.errors import StorageFullError
from core.storage.s3 import S3Store
from flows.errors import classify
from tests.support.audio_files import lavfi_mp3
from tests.support.moto_server import fake_aws_env
from tests.support.small_disk import small_disk

_FULL = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>XMinioStorageFull</Code>'
    b"<Message>Storage backend has reached its minimum free drive threshold. Please delete "
    b"a few objects to proceed.</Message><Resource>/b/k</Resource><RequestId>1</RequestId>"
    b"</Error>"
)


class _FullMinio(BaseHTTPRequestHandler):
    def _full(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length:
            self.rfile.read(length)
        self.send_response(507)
        self.send_header("Content-Type", "application/xml")
        self.send_header("Content-Length", str(len(_FULL)))
        self.end_headers()
        self.wfile.write(_FULL)

    do_PUT = do_POST = do_GET = _full

    def do_HEAD(self) -> None:
        self.send_response(507)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, *_args: object) -> None:
        pass


@pytest.fixture
def full_minio() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _FullMinio)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    with fake_aws_env():
        yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()


@pytest.fixture
def mp3(tmp_path: Path) -> Path:
    path = tmp_path / "a.mp3"
    return lavfi_mp3(path, "sine=duration=3", bitrate="64k")


def test_full_s3_store_is_storage_full_and_transient(full_minio: str, mp3: Path) -> None:
    store = S3Store("b", endpoint_url=full_minio, region="us-east-1")
    with pytest.raises(StorageFullError, match="XMinioStorageFull") as raised:
        store.put_file("episodes/e/audio/mp3_64.mp3", mp3)
    assert classify(raised.value) == "transient"


def test_upload_to_a_full_s3_store_is_507(
    full_minio: str,
    mp3: Path,
    base_settings: Settings,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    on_s3 = replace(
        base_settings,
        storage=replace(
            base_settings.storage,
            backend="s3",
            bucket="b",
            endpoint_url=full_minio,
            region="us-east-1",
        ),
        temp_dir=tmp_path / "spool",
    )
    with TestClient(app=create_app(on_s3, session_factory=session_factory)) as client:
        response = client.post("/uploads", params={"filename": "a.mp3"}, content=mp3.read_bytes())
    assert response.status_code == 507, response.text
    assert "full" in response.json()["detail"]
    assert list((tmp_path / "spool").iterdir()) == []


def test_download_from_s3_into_a_full_temp_disk_is_storage_full(
    s3_store: S3Store, tmp_path: Path
) -> None:
    """A flow's source download (moto's real S3 server) into a 1 MiB tmpfs: transient, and
    no partial file is left on the disk."""
    big = tmp_path / "big.bin"
    big.write_bytes(b"\x55" * (3 * 1024 * 1024))
    s3_store.put_file("uploads/big.bin", big)
    with small_disk(tmp_path / "temp", 1024 * 1024) as temp:
        with pytest.raises(StorageFullError) as raised:
            s3_store.get_file("uploads/big.bin", temp / "source.bin")
        assert classify(raised.value) == "transient"
        assert [p for p in temp.rglob("*") if p.is_file()] == []
