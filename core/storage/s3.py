"""The S3-compatible object store (AWS S3, Cloudflare R2, MinIO, moto) on boto3.

Design points, each for a reason:

* One boto3 client per store, created on first use under a lock. Creating a client costs
  tens of milliseconds and reads the environment; boto3 clients are thread-safe once made,
  and s3transfer's worker threads share it.
* Bounded network waits: short connect timeout, finite read timeout and botocore's
  `standard` retry mode (3 attempts with jittered backoff, retries 5xx, throttling and
  connection errors). A dead endpoint therefore fails in seconds, not minutes, and the
  caller sees `StorageUnavailableError`, the only error the flows retry on.
* Path-style addressing whenever an endpoint URL is set: MinIO, moto and most
  self-hosted services do not resolve `bucket.host` virtual-host names. For those endpoints
  boto3's default CRC checksums (added in 1.36, not understood by every S3 clone) are only
  sent when an operation requires them.
* Files go through s3transfer (`upload_file`/`download_file`), which switches to parallel
  multipart transfers above `multipart_chunk_bytes` and downloads to a temporary name that
  is renamed into place. Streams (an HTTP upload body) go through a hand-driven multipart
  upload that holds one part in memory at a time and is aborted on any failure, so neither
  an oversized nor an interrupted upload leaves an object or billable orphan parts behind.
* boto3's exceptions never leave this module; they are mapped onto `core.storage.errors`.
"""

from __future__ import annotations

import errno
import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any, BinaryIO, NoReturn

import boto3
from boto3.exceptions import RetriesExceededError, S3UploadFailedError
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    HTTPClientError,
    NoCredentialsError,
)
from botocore.exceptions import (
    ConnectionError as BotoConnectionError,
)

from core.keys import validate_key, validate_prefix
from core.storage.base import ObjectInfo, ObjectStore, guess_content_type, read_up_to
from core.storage.errors import (
    ObjectNotFoundError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
)

if TYPE_CHECKING:
    from mypy_boto3_s3 import S3Client
    from mypy_boto3_s3.type_defs import CompletedPartTypeDef

__all__ = ["MIN_PART_BYTES", "S3Store"]

log = logging.getLogger(__name__)

#: S3's smallest allowed part (every part but the last must be at least this big).
MIN_PART_BYTES = 5 * 1024 * 1024
#: S3's largest part number.
MAX_PARTS = 10_000

_NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
_TRANSIENT_CODES = frozenset(
    {
        "InternalError",
        "RequestTimeout",
        "RequestTimeTooSkewed",
        "ServiceUnavailable",
        "SlowDown",
        "Throttling",
        "ThrottlingException",
    }
)
#: A store out of room (MinIO: 507 XMinioStorageFull): nothing stored, may pass later.
_FULL_CODES = frozenset({"XMinioStorageFull", "InsufficientStorage"})
_ACCESS_CODES = frozenset(
    {"403", "AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "ExpiredToken"}
)


class S3Store(ObjectStore):
    """Objects in one bucket of an S3-compatible service."""

    #: Keys per listing page; 1000 is both the S3 maximum and the DeleteObjects batch limit.
    list_page_size = 1000

    def __init__(
        self,
        bucket: str,
        *,
        endpoint_url: str | None = None,
        region: str | None = None,
        multipart_chunk_bytes: int = 16 * 1024 * 1024,
        client: S3Client | None = None,
        connect_timeout_s: float = 5.0,
        read_timeout_s: float = 60.0,
        max_attempts: int = 3,
        max_concurrency: int = 4,
    ) -> None:
        if not bucket:
            raise ValueError("an S3 bucket name is required")
        if multipart_chunk_bytes < MIN_PART_BYTES:
            raise ValueError(
                f"multipart_chunk_bytes must be at least {MIN_PART_BYTES} (5 MiB, the S3 "
                f"minimum part size), got {multipart_chunk_bytes}"
            )
        self.bucket = bucket
        self.endpoint_url = endpoint_url
        self.region = region
        self.multipart_chunk_bytes = multipart_chunk_bytes
        self.connect_timeout_s = connect_timeout_s
        self.read_timeout_s = read_timeout_s
        self.max_attempts = max_attempts
        self._client = client
        self._client_lock = threading.Lock()
        self._transfer_config = TransferConfig(
            multipart_threshold=multipart_chunk_bytes,
            multipart_chunksize=multipart_chunk_bytes,
            max_concurrency=max_concurrency,
        )

    # -- client ------------------------------------------------------------------------

    @property
    def client(self) -> S3Client:
        """The store's boto3 client, created once on first use (thread-safe)."""
        client = self._client
        if client is None:
            with self._client_lock:
                if self._client is None:
                    self._client = self._make_client()
                client = self._client
        return client

    def _make_client(self) -> S3Client:
        options: dict[str, Any] = {
            "connect_timeout": self.connect_timeout_s,
            "read_timeout": self.read_timeout_s,
            "retries": {"mode": "standard", "total_max_attempts": self.max_attempts},
            "signature_version": "s3v4",
        }
        if self.endpoint_url:
            options["s3"] = {"addressing_style": "path"}
            options["request_checksum_calculation"] = "when_required"
            options["response_checksum_validation"] = "when_required"
        # A private session: boto3's default session is not safe to create clients from
        # concurrently, and this keeps the store independent of global boto3 state.
        session = boto3.session.Session()
        return session.client(
            "s3",
            endpoint_url=self.endpoint_url,
            region_name=self.region,
            config=Config(**options),
        )

    # -- error mapping -----------------------------------------------------------------

    @contextmanager
    def _errors(self, key: str) -> Iterator[None]:
        """Map boto3/botocore/s3transfer exceptions onto `core.storage.errors`."""
        try:
            yield
        except StorageError:
            raise
        except ClientError as exc:
            self._raise_client_error(exc, key)
        except S3UploadFailedError as exc:
            # s3transfer wraps the ClientError and keeps it only as the implicit context.
            cause = exc.__context__
            if isinstance(cause, ClientError):
                self._raise_client_error(cause, key, exc)
            raise StorageError(f"upload of {key!r} to {self.describe()} failed: {exc}") from exc
        except RetriesExceededError as exc:
            last = getattr(exc, "last_exception", exc)
            raise StorageUnavailableError(
                f"{self.describe()} kept failing while transferring {key!r}: {last}"
            ) from exc
        except (BotoConnectionError, HTTPClientError) as exc:
            # EndpointConnectionError, ConnectTimeoutError, ReadTimeoutError,
            # ConnectionClosedError, ...: the store did not answer in time.
            raise StorageUnavailableError(f"{self.describe()} did not answer: {exc}") from exc
        except NoCredentialsError as exc:
            raise StorageError(
                "no S3 credentials found: set AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"S3 error on {key!r} in {self.describe()}: {exc}") from exc
        except OSError as exc:
            # A download whose local file ran out of room: transient, like on the local store.
            if exc.errno in (errno.ENOSPC, errno.EDQUOT):
                raise StorageFullError(
                    f"no space left on the local disk while downloading {key!r} from "
                    f"{self.describe()} ({exc.strerror})"
                ) from exc
            raise

    def _raise_client_error(
        self, exc: ClientError, key: str, raised: BaseException | None = None
    ) -> NoReturn:
        error = exc.response.get("Error", {})
        code = str(error.get("Code", ""))
        status = int(exc.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) or 0)
        origin = raised or exc
        if code in _NOT_FOUND_CODES:
            raise ObjectNotFoundError(key, self.describe()) from origin
        if code == "NoSuchBucket":
            raise StorageError(f"bucket {self.bucket!r} does not exist at {self.describe()}") from (
                origin
            )
        if status == 507 or code in _FULL_CODES:
            message = f"{self.describe()} is full ({code or status}) for {key!r}"
            raise StorageFullError(message) from origin
        if status >= 500 or code in _TRANSIENT_CODES:
            raise StorageUnavailableError(
                f"{self.describe()} answered {status or code} on {key!r}: {exc}"
            ) from origin
        if code in _ACCESS_CODES:
            raise StorageError(
                f"access to {key!r} in {self.describe()} was denied ({code}); check the S3 "
                "credentials and bucket policy"
            ) from origin
        raise StorageError(f"S3 error on {key!r} in {self.describe()}: {exc}") from origin

    # -- writes ------------------------------------------------------------------------

    def put_file(self, key: str, path: Path, content_type: str | None = None) -> int:
        validate_key(key)
        size = Path(path).stat().st_size
        extra = {"ContentType": content_type or guess_content_type(key)}
        with self._errors(key):
            self.client.upload_file(
                str(path), self.bucket, key, ExtraArgs=extra, Config=self._transfer_config
            )
        return size

    def _write_stream(self, key: str, stream: BinaryIO, content_type: str | None) -> int:
        validate_key(key)
        ctype = content_type or guess_content_type(key)
        part_size = self.multipart_chunk_bytes
        with self._errors(key):
            first = read_up_to(stream, part_size)
            if len(first) < part_size:
                # The whole body fits in one part: a single PUT, no multipart bookkeeping.
                self.client.put_object(Bucket=self.bucket, Key=key, Body=first, ContentType=ctype)
                return len(first)
            return self._multipart_from_stream(key, stream, first, ctype)

    def _multipart_from_stream(self, key: str, stream: BinaryIO, first: bytes, ctype: str) -> int:
        client = self.client
        upload_id = client.create_multipart_upload(Bucket=self.bucket, Key=key, ContentType=ctype)[
            "UploadId"
        ]
        parts: list[CompletedPartTypeDef] = []
        total = 0
        try:
            data = first
            while data:
                total += len(data)
                number = len(parts) + 1
                if number > MAX_PARTS:
                    raise StorageError(
                        f"{key!r} needs more than {MAX_PARTS} parts of "
                        f"{self.multipart_chunk_bytes} bytes; raise AUDIOFLOW_S3_PART_BYTES"
                    )
                answer = client.upload_part(
                    Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number, Body=data
                )
                parts.append({"ETag": answer["ETag"], "PartNumber": number})
                data = read_up_to(stream, self.multipart_chunk_bytes)
            client.complete_multipart_upload(
                Bucket=self.bucket,
                Key=key,
                UploadId=upload_id,
                MultipartUpload={"Parts": parts},
            )
        except BaseException:
            self._abort(key, upload_id)
            raise
        return total

    def _abort(self, key: str, upload_id: str) -> None:
        """Best-effort abort so no parts linger (and get billed) after a failed upload."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)
        except Exception:
            log.warning(
                "could not abort multipart upload %s of %r in %s; a bucket lifecycle rule "
                "for incomplete uploads will remove its parts",
                upload_id,
                key,
                self.describe(),
                exc_info=True,
            )

    # -- reads -------------------------------------------------------------------------

    def get_file(self, key: str, dest: Path) -> int:
        validate_key(key)
        dest = Path(dest)
        dest.parent.mkdir(parents=True, exist_ok=True)
        with self._errors(key):
            self.client.download_file(self.bucket, key, str(dest), Config=self._transfer_config)
        return dest.stat().st_size

    def _head(self, key: str) -> dict[str, Any] | None:
        validate_key(key)
        try:
            with self._errors(key):
                return dict(self.client.head_object(Bucket=self.bucket, Key=key))
        except ObjectNotFoundError:
            return None

    def exists(self, key: str) -> bool:
        return self._head(key) is not None

    def size(self, key: str) -> int:
        head = self._head(key)
        if head is None:
            raise ObjectNotFoundError(key, self.describe())
        return int(head["ContentLength"])

    def list_keys(self, prefix: str) -> list[str]:
        return [info.key for info in self.list_objects(prefix)]

    def list_objects(self, prefix: str) -> list[ObjectInfo]:
        validate_prefix(prefix)
        infos: list[ObjectInfo] = []
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=prefix,
                PaginationConfig={"PageSize": self.list_page_size},
            )
            for page in pages:
                infos.extend(
                    ObjectInfo(obj["Key"], int(obj.get("Size", 0)), obj["LastModified"])
                    for obj in page.get("Contents", [])
                    if "Key" in obj and "LastModified" in obj
                )
        return sorted(infos, key=lambda info: info.key)

    # -- deletes -----------------------------------------------------------------------

    def delete(self, key: str) -> None:
        validate_key(key)
        with self._errors(key):
            self.client.delete_object(Bucket=self.bucket, Key=key)

    def delete_prefix(self, prefix: str) -> int:
        validate_prefix(prefix)
        deleted = 0
        with self._errors(prefix):
            pages = self.client.get_paginator("list_objects_v2").paginate(
                Bucket=self.bucket,
                Prefix=prefix,
                PaginationConfig={"PageSize": self.list_page_size},
            )
            for page in pages:  # one DeleteObjects call per page of at most 1000 keys
                batch = [{"Key": obj["Key"]} for obj in page.get("Contents", []) if "Key" in obj]
                if not batch:
                    continue
                answer = self.client.delete_objects(
                    Bucket=self.bucket,
                    Delete={"Objects": batch, "Quiet": True},  # type: ignore[typeddict-item]
                )
                failed = answer.get("Errors", [])
                if failed:
                    first = failed[0]
                    raise StorageError(
                        f"could not delete {len(failed)} objects under {prefix!r} in "
                        f"{self.describe()}, e.g. {first.get('Key')!r}: {first.get('Message')}"
                    )
                deleted += len(batch)
        return deleted

    # -- misc --------------------------------------------------------------------------

    def presigned_put_url(
        self,
        key: str,
        expires_s: int = 3600,
        content_length: int | None = None,
        content_type: str | None = None,
    ) -> str:
        """A presigned PUT URL; with `content_length` / `content_type`, those headers are
        signed (`X-Amz-SignedHeaders`) and the client must send exactly those values."""
        validate_key(key)
        params: dict[str, Any] = {"Bucket": self.bucket, "Key": key}
        if content_length is not None:
            params["ContentLength"] = int(content_length)
        if content_type:
            params["ContentType"] = content_type
        with self._errors(key):
            return self.client.generate_presigned_url(
                "put_object", Params=params, ExpiresIn=int(expires_s), HttpMethod="PUT"
            )

    def ensure_bucket(self) -> None:
        """Create the bucket if it does not exist (demo stack and tests; production buckets
        are provisioned outside the app)."""
        with self._errors(""):
            try:
                self.client.head_bucket(Bucket=self.bucket)
                return
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code not in ("404", "NoSuchBucket", "NotFound"):
                    raise
            kwargs: dict[str, Any] = {"Bucket": self.bucket}
            if self.region and self.region not in ("us-east-1", "auto"):
                kwargs["CreateBucketConfiguration"] = {"LocationConstraint": self.region}
            try:
                self.client.create_bucket(**kwargs)
            except ClientError as exc:
                code = str(exc.response.get("Error", {}).get("Code", ""))
                if code != "BucketAlreadyOwnedByYou":
                    raise

    def describe(self) -> str:
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        return f"s3://{self.bucket}{where}"
