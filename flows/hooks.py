"""Flow state hooks: keep the workflow and task rows in step with Prefect's view of the run.

on_crashed and on_cancellation run outside the flow process (in the serve process or a
helper of the worker), so everything they need comes from the flow run's parameters and
the process environment, never from the flow's memory. Hooks are best-effort: they
retry the report for a while and then give up; the reconciler repairs what they miss.
"""

from __future__ import annotations

import logging
from typing import Any

from core.settings import get_settings
from domain.contracts import AudioProcessingParameters, ErrorKind
from flows.errors import classify, describe
from flows.progress import HttpSender, ProgressPlan, WorkflowProgressReporter

log = logging.getLogger(__name__)

#: Final reports try longer than progress ticks (about 45 s in all): they carry the outcome.
FINAL_REPORT_ATTEMPTS = 8


def reporter_for(
    flow_run: Any, *, attempts: int = FINAL_REPORT_ATTEMPTS
) -> WorkflowProgressReporter | None:
    """A reporter for the run's workflow, or None if the run has no audioflow ids.

    The ids are read from the run's parameters in either shape (one `params` model, or the
    flat fields of runs created before it), and even when other parameters are invalid: the
    failure of such a run is reported too.
    """
    ids = AudioProcessingParameters.ids_of(dict(getattr(flow_run, "parameters", None) or {}))
    if ids is None:
        log.warning("flow run %s has no task_id/workflow_id; not reporting", flow_run.id)
        return None
    task_id, workflow_id = ids
    settings = get_settings()
    sender = HttpSender(settings.api.public_url, settings.internal_token, attempts=attempts)
    return WorkflowProgressReporter(
        task_id, workflow_id, ProgressPlan(weights={}), sender, min_interval_s=0
    )


def _report(flow_run: Any, **fields: Any) -> None:
    try:
        reporter = reporter_for(flow_run)
        if reporter is not None:
            reporter.report(progress=None, **fields)
    except Exception:  # a hook must never take the run down with it
        log.exception("state hook could not report for flow run %s", flow_run.id)


def _exception_of(state: Any) -> BaseException | None:
    try:
        outcome = state.result(raise_on_failure=False)
    except Exception as exc:
        return exc
    return outcome if isinstance(outcome, BaseException) else None


def on_running(flow: Any, flow_run: Any, state: Any) -> None:
    """Running: workflow running, task processing."""
    _report(
        flow_run, status="running", step="starting", message=f"flow run {flow_run.name} started"
    )


def on_completion(flow: Any, flow_run: Any, state: Any) -> None:
    """Completed, with the result: the flow posted it already, but that report may have been
    lost while the API was away, and a completed row must never lack its result."""
    try:
        result = state.result(raise_on_failure=False)
    except Exception:
        result = None
    _report(
        flow_run,
        status="completed",
        step="done",
        message="completed",
        result=result if isinstance(result, dict) else None,
    )


def on_failure(flow: Any, flow_run: Any, state: Any) -> None:
    """Failed: the reason a person can read and whether a retry could help."""
    exc = _exception_of(state)
    if exc is not None:
        reason, kind = describe(exc), classify(exc)
    else:
        reason, kind = (state.message or "flow run failed"), ErrorKind.TRANSIENT
    _report(flow_run, status="failed", error=reason, error_kind=kind, message="failed")


def on_crashed(flow: Any, flow_run: Any, state: Any) -> None:
    """Crashed (the process died or the infrastructure failed): always worth a retry."""
    _report(
        flow_run,
        status="crashed",
        error=f"flow run crashed: {state.message or 'no message'}",
        error_kind=ErrorKind.TRANSIENT,
        message="crashed",
    )


def on_cancellation(flow: Any, flow_run: Any, state: Any) -> None:
    """Cancelled in Prefect (UI, API or `POST /tasks/{id}/cancel`)."""
    _report(
        flow_run,
        status="cancelled",
        error=state.message or "cancelled",
        message="cancelled",
    )
