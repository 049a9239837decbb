"""Upload endpoints: stream audio or a cover image into object storage, or get a presigned URL."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Annotated, Any

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.openapi.spec import OpenAPIFormat, OpenAPIMediaType, OpenAPIType, RequestBody, Schema
from litestar.openapi.spec import Operation as OpenAPIOperation
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.errors import error_responses
from api.schemas import ImageUploadOut, PresignOut, PresignRequest, UploadOut
from core.errors import PayloadTooLargeError
from domain.uploads import UploadService

#: What `POST /uploads/images` says in the OpenAPI document (Litestar shows no docstrings).
IMAGE_UPLOAD_DESCRIPTION = """\
Stream a cover or chapter image (the raw request body, JPEG or PNG) into the store; use the
returned `key` as `metadata.coverKey` or a chapter's `imageKey`.

The type is read from the bytes, never from `filename` or Content-Type; the key gets the
detected type's extension (`.jpg`, `.png`) and the stored object that Content-Type. Send the
image's own type, `application/octet-stream` or none: any other Content-Type is refused.

Refused, with nothing stored: over AUDIOFLOW_COVER_MAX_BYTES (default 512 KiB) 413, as soon
as the body passes the limit; not a JPEG or PNG, or a Content-Type that disagrees with the
bytes, 415 (the message says what the body is); empty, truncated, damaged, or wider or
taller than 3000 px 422."""


@dataclass
class _ImageBodyOperation(OpenAPIOperation):
    """The operation with its raw image body documented: the handler reads the stream, so
    Litestar sees no `data` parameter to describe."""

    def __post_init__(self) -> None:
        binary = Schema(type=OpenAPIType.STRING, format=OpenAPIFormat.BINARY)
        self.request_body = RequestBody(
            required=True,
            description="The image's bytes (JPEG or PNG).",
            content={
                media: OpenAPIMediaType(schema=binary)
                for media in ("image/jpeg", "image/png", "application/octet-stream")
            },
        )


def _streamed_upload() -> dict[str, Any]:
    """What the routes that stream a body into the store (audio, image) share: 201; no body
    limit in Litestar (the service refuses a body as soon as it passes its own: 413, and
    `_refuse_declared_oversize` before reading); the same refusals."""
    return {
        "status_code": HTTP_201_CREATED,
        "request_max_body_size": None,
        "responses": error_responses(400, 401, 413, 415, 422, 503, 507),
    }


def _refuse_declared_oversize(request: Request, max_bytes: int) -> None:
    """413 before reading a byte when Content-Length already says the body is too large."""
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > max_bytes:
        raise PayloadTooLargeError(
            f"upload of {declared} bytes exceeds the limit of {max_bytes} bytes"
        )


class UploadController(Controller):
    """`POST /uploads`, `POST /uploads/images` and `POST /uploads/presign`."""

    path = "/uploads"
    tags = ["uploads"]

    @post("/", **_streamed_upload())
    async def upload_audio(
        self,
        request: Request,
        upload_service: NamedDependency[UploadService],
        filename: Annotated[str, QueryParameter(min_length=1, max_length=255)],
    ) -> UploadOut:
        """Stream the raw request body (any audio format) into storage; returns its key.

        The body is checked by decoding it, not by its name: non-audio is 415, an oversize
        body 413 (refused as soon as it passes the limit), a full server disk 507.
        """
        _refuse_declared_oversize(request, upload_service.max_bytes)
        stored = await upload_service.receive(filename, request.stream())
        return UploadOut.of(stored)

    @post(
        "/images",
        summary="Upload a cover or chapter image",
        description=IMAGE_UPLOAD_DESCRIPTION,
        operation_class=_ImageBodyOperation,
        **_streamed_upload(),
    )
    async def upload_image(
        self,
        request: Request,
        upload_service: NamedDependency[UploadService],
        filename: Annotated[str | None, QueryParameter(min_length=1, max_length=255)] = None,
    ) -> ImageUploadOut:
        """Stream a cover or chapter image into storage (see IMAGE_UPLOAD_DESCRIPTION).

        Why here and not only presigned PUTs: the local-folder store has no presigned URLs,
        so without this a client could not put the object `metadata.coverKey` names.
        """
        _refuse_declared_oversize(request, upload_service.cover_max_bytes)
        stored = await upload_service.receive_image(
            filename, request.stream(), request.headers.get("content-type")
        )
        return ImageUploadOut.of(stored)

    @post(
        "/presign",
        status_code=HTTP_200_OK,
        sync_to_thread=False,
        responses=error_responses(400, 401, 413, 422),
    )
    def presign_upload(
        self, data: JSONBody[PresignRequest], upload_service: NamedDependency[UploadService]
    ) -> PresignOut:
        """A presigned PUT URL for a direct upload of `size` bytes (S3 backends only)."""
        presigned = upload_service.presign(data.filename, data.size, data.expires_in)
        return PresignOut.of(presigned)
