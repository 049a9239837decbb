"""`POST /reprocess`: start a run of the reprocessing deployment with the given selection
(or return the queued run with the same selection; see `domain.reprocessing`)."""

from __future__ import annotations

import msgspec
from litestar import Controller, Response, post
from litestar.di import NamedDependency
from litestar.openapi.datastructures import ResponseSpec
from litestar.params import JSONBody
from litestar.status_codes import HTTP_200_OK, HTTP_201_CREATED

from api.errors import error_responses
from api.schemas import ReprocessOut, ReprocessRequest
from domain.reprocessing import ReprocessService


class ReprocessController(Controller):
    """Reprocessing on demand."""

    path = "/reprocess"
    tags = ["reprocessing"]

    @post(
        "/",
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
        responses={
            HTTP_200_OK: ResponseSpec(
                data_container=ReprocessOut,
                description="A run with the same parameters is queued already: that run",
                generate_examples=False,
            ),
            **error_responses(400, 401, 422, 429, 503),
        },
    )
    def start_reprocessing(
        self,
        data: JSONBody[ReprocessRequest],
        reprocess_service: NamedDependency[ReprocessService],
    ) -> Response[ReprocessOut]:
        """Start a reprocessing run; `dryRun` only lists what it would do (in its artifact).

        The same parameters as a run that has not started yet return that run (200);
        past `AUDIOFLOW_REPROCESS_QUEUE_MAX` runs waiting to start, 429 with `Retry-After`.
        """
        run = reprocess_service.request_run(msgspec.structs.asdict(data))
        return Response(
            ReprocessOut(
                flow_run_id=run.info.id, flow_run_name=run.info.name, parameters=run.parameters
            ),
            status_code=HTTP_201_CREATED if run.created else HTTP_200_OK,
        )
