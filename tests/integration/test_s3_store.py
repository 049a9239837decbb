"""S3Store against a real moto server over HTTP: multipart, streams, presigned URLs, errors."""

from __future__ import annotations

import io
import os
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any, BinaryIO, cast

import httpx
import pytest

from core.storage.errors import (
    InvalidKeyError,
    ObjectNotFoundError,
    ObjectTooLargeError,
    StorageError,
    StorageUnavailableError,
)
from core.storage.s3 import S3Store
from tests.support.moto_server import moto_server

MiB = 1024 * 1024


class TrickleStream(io.RawIOBase):
    """A body that hands out at most 64 KiB per read, like a socket, and counts reads."""

    def __init__(self, data: bytes) -> None:
        self.data = memoryview(data)
        self.pos = 0
        self.max_read = 0

    def readable(self) -> bool:
        return True

    def readinto(self, buffer: Any) -> int:
        n = min(len(buffer), 64 * 1024, len(self.data) - self.pos)
        buffer[:n] = self.data[self.pos : self.pos + n]
        self.pos += n
        self.max_read = max(self.max_read, n)
        return n


def etag(store: S3Store, key: str) -> str:
    return store.client.head_object(Bucket=store.bucket, Key=key)["ETag"].strip('"')


def pending_uploads(store: S3Store) -> list[object]:
    return list(store.client.list_multipart_uploads(Bucket=store.bucket).get("Uploads", []))


def test_file_round_trip_uses_multipart(s3_store: S3Store, tmp_path: Path) -> None:
    data = os.urandom(12 * MiB)
    src = tmp_path / "big.mp3"
    src.write_bytes(data)
    key = "episodes/e1/audio/mp3_128.mp3"

    assert s3_store.put_file(key, src, "audio/mpeg") == len(data)
    assert etag(s3_store, key).endswith("-3"), "12 MiB in 5 MiB parts: 3 parts"
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=key)
    assert head["ContentType"] == "audio/mpeg"
    assert s3_store.exists(key)
    assert s3_store.size(key) == len(data)

    dest = tmp_path / "down" / "copy.mp3"
    assert s3_store.get_file(key, dest) == len(data)
    assert dest.read_bytes() == data
    assert sorted(p.name for p in dest.parent.iterdir()) == ["copy.mp3"], "no temp files"


def test_small_file_is_a_single_put_with_a_guessed_type(s3_store: S3Store, tmp_path: Path) -> None:
    src = tmp_path / "t.json"
    src.write_text('{"text": "hi"}')
    key = "episodes/e1/transcript/transcript.json"
    s3_store.put_file(key, src)
    assert "-" not in etag(s3_store, key)
    head = s3_store.client.head_object(Bucket=s3_store.bucket, Key=key)
    assert head["ContentType"] == "application/json"


def test_put_stream_multipart_from_short_reads(s3_store: S3Store, tmp_path: Path) -> None:
    data = os.urandom(11 * MiB + 123)
    stream = TrickleStream(data)
    key = "uploads/abc/episode.wav"
    assert s3_store.put_stream(key, io.BufferedReader(stream, 64 * 1024), "audio/wav") == len(data)
    assert etag(s3_store, key).endswith("-3")
    s3_store.get_file(key, tmp_path / "x")
    assert (tmp_path / "x").read_bytes() == data
    assert pending_uploads(s3_store) == []


def test_small_put_stream(s3_store: S3Store) -> None:
    assert s3_store.put_stream("a/small.txt", io.BytesIO(b"hello")) == 5
    assert s3_store.size("a/small.txt") == 5
    assert s3_store.put_stream("a/empty.txt", io.BytesIO(b"")) == 0
    assert s3_store.size("a/empty.txt") == 0


def test_put_stream_max_bytes_aborts_and_leaves_nothing(s3_store: S3Store) -> None:
    key = "uploads/big/episode.mp3"
    with pytest.raises(ObjectTooLargeError) as caught:
        s3_store.put_stream(key, io.BytesIO(os.urandom(12 * MiB)), max_bytes=7 * MiB)
    assert caught.value.max_bytes == 7 * MiB
    assert not s3_store.exists(key)
    assert pending_uploads(s3_store) == [], "the multipart upload was aborted"

    # Over the limit within the first part: refused before anything is sent.
    with pytest.raises(ObjectTooLargeError):
        s3_store.put_stream(key, io.BytesIO(b"x" * 1000), max_bytes=999)
    assert not s3_store.exists(key)
    # Exactly at the limit is accepted.
    assert s3_store.put_stream(key, io.BytesIO(b"x" * 999), max_bytes=999) == 999


def test_oversized_stream_keeps_the_previous_object(s3_store: S3Store) -> None:
    s3_store.put_stream("k/v", io.BytesIO(b"old"))
    with pytest.raises(ObjectTooLargeError):
        s3_store.put_stream("k/v", io.BytesIO(os.urandom(6 * MiB)), max_bytes=5 * MiB + 1)
    assert s3_store.size("k/v") == 3


def test_failing_stream_aborts_the_multipart_upload(s3_store: S3Store) -> None:
    class Broken(io.RawIOBase):
        sent = 0

        def readable(self) -> bool:
            return True

        def readinto(self, buffer: Any) -> int:
            if self.sent >= 6 * MiB:
                raise ConnectionResetError("client went away")
            n = min(len(buffer), MiB)
            buffer[:n] = b"z" * n
            self.sent += n
            return n

    with pytest.raises(ConnectionResetError):
        s3_store.put_stream("up/broken.bin", cast(BinaryIO, Broken()))
    assert not s3_store.exists("up/broken.bin")
    assert pending_uploads(s3_store) == []


def test_presigned_put_url_accepts_a_plain_http_put(s3_store: S3Store) -> None:
    key = "uploads/presigned/episode.mp3"
    url = s3_store.presigned_put_url(key, expires_s=600)
    assert url.startswith(f"{s3_store.endpoint_url}/{s3_store.bucket}/uploads/presigned/")
    answer = httpx.put(url, content=b"ID3 bytes from a browser", timeout=10)
    assert answer.status_code == 200, answer.text
    assert s3_store.size(key) == len(b"ID3 bytes from a browser")

    typed = s3_store.presigned_put_url("uploads/p/x.mp3", content_type="audio/mpeg")
    answer = httpx.put(typed, content=b"abc", headers={"Content-Type": "audio/mpeg"}, timeout=10)
    assert answer.status_code == 200, answer.text


def test_list_objects_gives_sizes_and_modification_times(s3_store: S3Store) -> None:
    from datetime import UTC, datetime

    s3_store.put_stream("episodes/e1/a.mp3", io.BytesIO(b"abc"))
    s3_store.put_stream("episodes/e1/b/c.txt", io.BytesIO(b"hello"))
    s3_store.put_stream("episodes/e10/x.mp3", io.BytesIO(b"x"))
    infos = s3_store.list_objects("episodes/e1/")
    assert [(i.key, i.size) for i in infos] == [
        ("episodes/e1/a.mp3", 3),
        ("episodes/e1/b/c.txt", 5),
    ]
    for info in infos:
        assert info.modified.tzinfo is not None
        assert abs((datetime.now(UTC) - info.modified).total_seconds()) < 600
    assert s3_store.list_objects("nothing/") == []


def test_list_and_delete_prefix(s3_store: S3Store) -> None:
    keys = [
        "episodes/e1/audio/mp3_128.mp3",
        "episodes/e1/audio/wav.wav",
        "episodes/e1/transcript/transcript.json",
        "episodes/e10/audio/mp3_128.mp3",
        "uploads/u1/e1.mp3",
    ]
    for key in keys:
        s3_store.put_stream(key, io.BytesIO(key.encode()))
    assert s3_store.list_keys("episodes/e1/") == keys[:3]
    assert s3_store.delete_prefix("episodes/e1/") == 3
    assert s3_store.list_keys("episodes/") == ["episodes/e10/audio/mp3_128.mp3"]
    assert s3_store.list_keys("uploads/") == ["uploads/u1/e1.mp3"]
    assert s3_store.delete_prefix("episodes/e1/") == 0
    s3_store.delete("uploads/u1/e1.mp3")
    s3_store.delete("uploads/u1/e1.mp3")  # idempotent
    assert s3_store.list_keys("uploads/") == []


def test_listing_and_deleting_span_several_pages(s3_store: S3Store) -> None:
    """Pages of 1000 in production; 3 here, so that 10 keys take 4 pages and 4 deletes."""
    s3_store.list_page_size = 3
    for i in range(10):
        s3_store.put_stream(f"bulk/{i:02d}", io.BytesIO(b""))
    s3_store.put_stream("bulky/x", io.BytesIO(b""))
    assert s3_store.list_keys("bulk/") == [f"bulk/{i:02d}" for i in range(10)]
    assert s3_store.delete_prefix("bulk/") == 10
    assert s3_store.list_keys("bulk") == ["bulky/x"]


def test_missing_key(s3_store: S3Store, tmp_path: Path) -> None:
    dest = tmp_path / "never.mp3"
    with pytest.raises(ObjectNotFoundError, match=r"nope\.mp3"):
        s3_store.get_file("episodes/x/nope.mp3", dest)
    assert not dest.exists()
    with pytest.raises(ObjectNotFoundError):
        s3_store.size("episodes/x/nope.mp3")
    assert not s3_store.exists("episodes/x/nope.mp3")


def test_missing_bucket_is_a_permanent_error(
    moto_endpoint: str, aws_credentials: None, tmp_path: Path
) -> None:
    store = S3Store("no-such-bucket-here", endpoint_url=moto_endpoint, region="us-east-1")
    src = tmp_path / "f"
    src.write_bytes(b"x")
    with pytest.raises(StorageError, match="no-such-bucket-here") as caught:
        store.put_file("a/b", src)
    assert not isinstance(caught.value, StorageUnavailableError)
    with pytest.raises(StorageError, match="does not exist"):
        store.put_stream("a/b", io.BytesIO(b"x"))


def test_keys_are_validated_before_any_request(s3_store: S3Store, tmp_path: Path) -> None:
    for key in ("../x", "/abs", "a\x00b", "a\nb", "a\\b", ""):
        with pytest.raises(InvalidKeyError):
            s3_store.put_stream(key, io.BytesIO(b"x"))
        with pytest.raises(InvalidKeyError):
            s3_store.get_file(key, tmp_path / "x")
        with pytest.raises(InvalidKeyError):
            s3_store.presigned_put_url(key)
    with pytest.raises(InvalidKeyError):
        s3_store.delete_prefix("")


def test_ensure_bucket_is_idempotent(s3_store: S3Store) -> None:
    s3_store.ensure_bucket()
    s3_store.ensure_bucket()


def test_client_is_created_once_across_threads(moto_endpoint: str, aws_credentials: None) -> None:
    store = S3Store("b-threads", endpoint_url=moto_endpoint, region="us-east-1")
    clients: list[object] = []
    barrier = threading.Barrier(8)

    def grab() -> None:
        barrier.wait()
        clients.append(store.client)

    threads = [threading.Thread(target=grab) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len({id(c) for c in clients}) == 1


def test_chunk_below_the_s3_minimum_is_refused() -> None:
    with pytest.raises(ValueError, match="5 MiB"):
        S3Store("b", multipart_chunk_bytes=1024)


def test_stopped_server_is_unavailable_quickly(aws_credentials: None, tmp_path: Path) -> None:
    """Connection refused -> StorageUnavailableError (the retryable kind), in seconds."""
    with moto_server() as url:
        store = S3Store(f"gone-{uuid.uuid4().hex[:8]}", endpoint_url=url, region="us-east-1")
        store.ensure_bucket()
        store.put_stream("a/b", io.BytesIO(b"x"))
    # The server is stopped now; the store and its client are the same.
    src = tmp_path / "f"
    src.write_bytes(b"x")
    for call in (
        lambda: store.exists("a/b"),
        lambda: store.get_file("a/b", tmp_path / "out"),
        lambda: store.put_file("a/c", src),
        lambda: store.put_stream("a/d", io.BytesIO(b"y")),
        lambda: store.list_keys("a/"),
    ):
        started = time.monotonic()
        with pytest.raises(StorageUnavailableError, match=r"did not answer|kept failing"):
            call()
        assert time.monotonic() - started < 10, "bounded retries, not a hang"
    assert not (tmp_path / "out").exists()


@pytest.fixture
def silent_server() -> Iterator[str]:
    """A TCP port that accepts connections (via the backlog) but never answers."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        sock.listen(64)
        yield f"http://127.0.0.1:{sock.getsockname()[1]}"


def test_hung_server_times_out(silent_server: str, aws_credentials: None) -> None:
    store = S3Store(
        "hung",
        endpoint_url=silent_server,
        region="us-east-1",
        connect_timeout_s=0.5,
        read_timeout_s=0.5,
        max_attempts=2,
    )
    started = time.monotonic()
    with pytest.raises(StorageUnavailableError, match="did not answer"):
        store.exists("a/b")
    assert time.monotonic() - started < 5


@pytest.mark.parametrize(
    ("code", "status", "expected"),
    [
        ("InternalError", 500, StorageUnavailableError),
        ("ServiceUnavailable", 503, StorageUnavailableError),
        ("SlowDown", 503, StorageUnavailableError),
        ("Whatever", 502, StorageUnavailableError),
        ("NoSuchKey", 404, ObjectNotFoundError),
        ("404", 404, ObjectNotFoundError),
        ("AccessDenied", 403, StorageError),
        ("NoSuchBucket", 404, StorageError),
        ("InvalidArgument", 400, StorageError),
    ],
)
def test_client_error_mapping(code: str, status: int, expected: type[StorageError]) -> None:
    """5xx and throttling are retryable; 404 is not-found; the rest are permanent. (moto
    cannot be made to answer 5xx, so the mapping is checked on a constructed error.)"""
    from boto3.exceptions import S3UploadFailedError
    from botocore.exceptions import ClientError

    store = S3Store("b", endpoint_url="http://127.0.0.1:9")
    response: Any = {
        "Error": {"Code": code, "Message": "m"},
        "ResponseMetadata": {"HTTPStatusCode": status},
    }
    error = ClientError(response, "PutObject")
    with pytest.raises(StorageError) as caught, store._errors("k"):
        raise error
    assert type(caught.value) is expected
    # s3transfer hides the ClientError inside S3UploadFailedError; it is still mapped.
    with pytest.raises(StorageError) as caught, store._errors("k"):
        try:
            raise error
        except ClientError:
            raise S3UploadFailedError("Failed to upload") from None
    assert type(caught.value) is expected


def test_moto_server_start_is_bounded() -> None:
    """The fixture's wait is bounded and says why it gave up (here: far too short)."""
    from tests.support.moto_server import MotoServerError

    started = time.monotonic()
    with (
        pytest.raises(MotoServerError, match="did not answer within"),
        moto_server(startup_timeout_s=0.01),
    ):
        pass  # pragma: no cover
    assert time.monotonic() - started < 10
