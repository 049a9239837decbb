"""On-demand reprocessing runs: one queued run per selection, and a bounded queue.

Every `POST /reprocess` used to queue another run of the reprocessing deployment. A client
that repeated itself (a fuzzer, a retry loop, a lost answer) could queue thousands, each a
full pass over the database once a worker took it. Now, in one place:

* a request whose parameters equal those of a run that has not started yet (Scheduled or
  Pending in Prefect) gets that run back: also how a client finds the run when the answer
  to its first request was lost;
* at most `AUDIOFLOW_REPROCESS_QUEUE_MAX` on-demand runs wait to start; past that the
  request is refused (429 with `Retry-After`), and nothing is queued.

The request's own rules live here too (known format names, the run's parameters and name),
so the handler only translates HTTP. The check and the creation run under a lock, so
requests to one API process cannot overshoot the bound; several API processes can each add
one run past it at worst. The scheduled runs of the deployment (its cron) are not on-demand
and not counted.
"""

from __future__ import annotations

import hashlib
import json
import threading
import uuid
from dataclasses import dataclass
from typing import Any

from pydantic import ValidationError
from pydantic.alias_generators import to_camel

from core.errors import InvalidInputError, QueueFullError
from core.settings import Settings
from domain import prefect_gateway
from domain.contracts import ReprocessParameters, problems

#: Tag on runs started through the API (and only those count against the bound).
ON_DEMAND_TAG = "on-demand"
#: What a refused client is told to wait: about the time a worker takes to start a run.
RETRY_AFTER_S = 30


def parameters_digest(params: dict[str, Any]) -> str:
    """A stable digest of a run's parameters (key order and JSON spacing do not matter)."""
    canonical = json.dumps(params, sort_keys=True, separators=(",", ":"), default=str)
    return hashlib.sha256(canonical.encode()).hexdigest()


@dataclass(frozen=True)
class ReprocessRun:
    """The run that serves a request, whether this request created it, and the parameters
    it was asked for (what the run's `params` hold)."""

    info: prefect_gateway.FlowRunInfo
    created: bool
    parameters: dict[str, Any]


class ReprocessService:
    """Starts on-demand reprocessing runs; see the module docstring for the rules."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self._lock = threading.Lock()

    def request_run(self, fields: dict[str, Any]) -> ReprocessRun:
        """An on-demand run with the selection `fields` names (`ReprocessParameters`' fields
        that a request may set, by their Python names).

        InvalidInputError naming the field (unknown format names, with the known ones) before
        anything is asked of Prefect; otherwise as `start`.
        """
        try:
            request = ReprocessParameters.model_validate(fields)
        except ValidationError as exc:
            raise InvalidInputError(problems(exc, to_camel)) from None
        return self.start(
            request.requested(), name_prefix=f"reprocess-{'dry-' if request.dry_run else ''}"
        )

    def start(self, params: dict[str, Any], *, name_prefix: str) -> ReprocessRun:
        """The queued run with these parameters, or a new one if the queue has room."""
        prefect = self.settings.prefect
        limit = prefect.reprocess_queue_max
        digest = parameters_digest(params)
        with self._lock:
            queued = prefect_gateway.list_unstarted_flow_runs(
                prefect.api_url,
                prefect.reprocess_deployment,
                tag=ON_DEMAND_TAG,
                limit=limit,
                timeout_s=prefect.trigger_timeout_s,
            )
            for run in queued:
                if parameters_digest(run.parameters.get("params") or {}) == digest:
                    return ReprocessRun(run, created=False, parameters=params)
            if len(queued) >= limit:
                raise QueueFullError(
                    f"{len(queued)} reprocessing runs are already waiting to start (the "
                    f"limit, AUDIOFLOW_REPROCESS_QUEUE_MAX, is {limit}); try again once "
                    "they have started",
                    retry_after_s=RETRY_AFTER_S,
                )
            run_key = uuid.uuid4().hex
            info = prefect_gateway.start_flow_run(
                prefect.api_url,
                prefect.reprocess_deployment,
                {"params": params},
                idempotency_key=f"{prefect.reprocess_deployment}:{digest[:16]}:{run_key}",
                name=f"{name_prefix}{run_key[:8]}",
                tags=["reprocessing", ON_DEMAND_TAG],
                timeout_s=prefect.trigger_timeout_s,
            )
        return ReprocessRun(info, created=True, parameters=params)
