"""Upload endpoints: stream audio into object storage, or get a presigned URL for it."""

from __future__ import annotations

from typing import Annotated

from litestar import Controller, Request, post
from litestar.di import NamedDependency
from litestar.params import JSONBody, QueryParameter
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.errors import error_responses
from api.schemas import PresignOut, PresignRequest, UploadOut
from core.errors import PayloadTooLargeError
from domain.uploads import UploadService


class UploadController(Controller):
    """`POST /uploads` and `POST /uploads/presign`."""

    path = "/uploads"
    tags = ["uploads"]

    @post(
        "/",
        status_code=HTTP_201_CREATED,
        request_max_body_size=None,
        responses=error_responses(400, 401, 413, 415, 422, 503, 507),
    )
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
        declared = request.headers.get("content-length")
        if declared is not None and declared.isdigit() and int(declared) > upload_service.max_bytes:
            raise PayloadTooLargeError(
                f"upload of {declared} bytes exceeds the limit of {upload_service.max_bytes} bytes"
            )
        stored = await upload_service.receive(filename, request.stream())
        return UploadOut.of(stored)

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
