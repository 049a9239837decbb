"""`POST /reprocess`: start a run of the reprocessing deployment with the given selection."""

from __future__ import annotations

import uuid
from typing import Any

from litestar import Controller, post
from litestar.datastructures import State
from litestar.params import JSONBody
from litestar.status_codes import HTTP_201_CREATED

from api import prefect_gateway
from api.errors import error_responses
from api.schemas import ReprocessOut, ReprocessRequest
from api.security import API_KEY_REQUIRED, require_api_key
from core.errors import InvalidInputError
from core.formats import FORMATS
from core.settings import Settings


class ReprocessController(Controller):
    """Reprocessing on demand."""

    path = "/reprocess"
    tags = ["reprocessing"]
    guards = [require_api_key]
    security = API_KEY_REQUIRED

    @post(
        "/",
        sync_to_thread=True,
        status_code=HTTP_201_CREATED,
        responses=error_responses(400, 401, 422, 503),
    )
    def start_reprocessing(self, data: JSONBody[ReprocessRequest], state: State) -> ReprocessOut:
        """Start a reprocessing run; `dryRun` only lists what it would do (in its artifact)."""
        settings: Settings = state.settings
        unknown = [f for f in data.add_formats if f not in FORMATS]
        if unknown:
            raise InvalidInputError(
                f"unknown format(s): {', '.join(unknown)}; known: {', '.join(FORMATS)}"
            )
        params: dict[str, Any] = {
            "reconcile": data.reconcile,
            "retry_failed": data.retry_failed,
            "task_ids": [str(t) for t in data.task_ids],
            "episode_ids": data.episode_ids,
            "status": data.status,
            "created_after": data.created_after.isoformat() if data.created_after else None,
            "created_before": data.created_before.isoformat() if data.created_before else None,
            "add_formats": data.add_formats,
            "dry_run": data.dry_run,
            "limit": data.limit,
            "stale_after_s": data.stale_after_s,
        }
        run_key = uuid.uuid4().hex
        info = prefect_gateway.start_flow_run(
            settings.prefect.api_url,
            settings.prefect.reprocess_deployment,
            {"params": params},
            idempotency_key=f"{settings.prefect.reprocess_deployment}:{run_key}",
            name=f"reprocess-{'dry-' if data.dry_run else ''}{run_key[:8]}",
            tags=["reprocessing", "on-demand"],
            timeout_s=settings.prefect.trigger_timeout_s,
        )
        return ReprocessOut(flow_run_id=info.id, flow_run_name=info.name, parameters=params)
