"""Reconciliation: make the database agree with Prefect, and retry what may pass.

Prefect's state hooks are best-effort: a SIGKILLed worker runs none, an unreachable API
loses a report. So a scheduled run compares every workflow the database holds as queued
or running (and those that ended recently) with its flow run in Prefect and takes
Prefect's state as the truth:

* a run Prefect no longer has, one that has been Running with no progress for longer
  than `stale_after_s`, or one that has been Pending (claimed by a worker, never started)
  that long, becomes **crashed**. The last two are first marked Crashed in Prefect too:
  the run is ended there *before* the row says crashed, so the retry that a crashed row
  earns can never run beside it (if Prefect cannot be told, the row is left as it is and
  the next pass tries again). A flow process that is in fact alive learns it at its next
  progress report (409) and stops; see `flows.progress`;
* a Running run that is waiting for a transcription slot (a task run held by the
  `audioflow-transcription` limit, every slot taken) is waiting, not stale;
* Completed becomes **completed** only if every output is in the store (otherwise failed,
  transient); Prefect's late corrections (Crashed, then Completed) are followed too;
* Failed, Crashed and Cancelled are copied over with Prefect's message.

Every change is one the lifecycle allows the reconciler (`domain.lifecycle`): a live row
may end or start running, a terminal one may only become completed. So a cancelled or
permanently failed task is never turned into a crashed one (which would be retried), even
when its run still shows as Running in Prefect. Each change goes through
`WorkflowService.correct`, which records what, when and why on the workflow. Failed tasks
whose error is transient get a new attempt after a backoff, until `max_attempts`; bad audio
is never retried.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.concurrency import TRANSCRIPTION_TAG
from core.errors import AudioflowError, NotFoundError
from core.settings import Settings
from core.storage.base import ObjectStore
from core.storage.errors import StorageError
from db.base import utcnow
from db.models import Task, TaskStatus, Workflow, WorkflowStatus
from db.repositories import WorkflowRepository
from domain import lifecycle, prefect_gateway
from domain.contracts import (
    AudioOutput,
    AudioProcessingParameters,
    AudioProcessingResult,
    ChaptersSummary,
    ErrorKind,
    TranscriptSummary,
    WaveformSummary,
)
from domain.dispatch import FlowRunDispatcher
from domain.lifecycle import Writer
from domain.outputs import expected_outputs, missing_outputs
from domain.tasks import TaskService
from domain.workflows import WorkflowService

log = logging.getLogger(__name__)

FlowRunReader = Callable[[str, str], prefect_gateway.FlowRunInfo]
#: (api_url, flow_run_id, tag) -> whether the run waits for a slot of the tag's limit.
SlotWaitReader = Callable[[str, str, str], bool]

#: Prefect state type -> the workflow status it means.
STATUS_FOR_PREFECT_STATE: dict[str, WorkflowStatus] = {
    "RUNNING": WorkflowStatus.RUNNING,
    "COMPLETED": WorkflowStatus.COMPLETED,
    "FAILED": WorkflowStatus.FAILED,
    "CRASHED": WorkflowStatus.CRASHED,
    "CANCELLED": WorkflowStatus.CANCELLED,
}


#: Key in a decision's extras: also mark the flow run Crashed in Prefect.
CRASH_IN_PREFECT = "crash_in_prefect"


@dataclass(frozen=True)
class Correction:
    """One change the reconciler made (or, in a dry run, would make)."""

    task_id: str
    workflow_id: str
    from_status: str
    to_status: str
    reason: str


@dataclass(frozen=True)
class RetryStarted:
    """A new attempt for a task that failed for a transient reason."""

    task_id: str
    attempt: int
    reason: str
    new_status: str


@dataclass
class ReconcileReport:
    """What one pass looked at and did."""

    checked: int = 0
    corrections: list[Correction] = field(default_factory=list)
    retries: list[RetryStarted] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


def retry_backoff_s(attempts: int, base_s: float = 30.0, cap_s: float = 3600.0) -> float:
    """Wait before attempt n+1: 30 s, 60 s, 120 s, ... at most an hour."""
    return min(cap_s, base_s * 2 ** max(0, attempts - 1))


class Reconciler:
    """Brings workflow and task rows in line with Prefect; retries transient failures."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        settings: Settings,
        store: ObjectStore,
        *,
        read_flow_run: FlowRunReader | None = None,
        waits_for_slot: SlotWaitReader | None = None,
        stale_after_s: float = 600.0,
        lookback: timedelta = timedelta(hours=24),
        retry_base_s: float | None = None,
        tasks: TaskService | None = None,
    ) -> None:
        self.session_factory = session_factory
        self.settings = settings
        self.store = store
        self.read_flow_run = read_flow_run or (
            lambda api_url, run_id: prefect_gateway.read_flow_run(api_url, run_id)
        )
        self.waits_for_slot = waits_for_slot or (
            lambda api_url, run_id, tag: prefect_gateway.waits_for_slot(api_url, run_id, tag)
        )
        self.stale_after_s = stale_after_s
        self.lookback = lookback
        self.retry_base_s = settings.retry_backoff_s if retry_base_s is None else retry_base_s
        if tasks is None:
            # Standalone (tests, tools): collaborators of its own, wired as the composition
            # root wires them; processes pass the TaskService of `domain.composition`.
            workflows = WorkflowService(session_factory, store)
            tasks = TaskService(
                session_factory,
                settings,
                dispatcher=FlowRunDispatcher(session_factory, settings),
                workflows=workflows,
                store=store,
            )
        self.tasks = tasks
        self.workflows = tasks.workflows

    # -- reconciliation ------------------------------------------------------------------

    def reconcile(
        self,
        *,
        dry_run: bool = False,
        report: ReconcileReport | None = None,
        now: datetime | None = None,
    ) -> ReconcileReport:
        """One pass over active and recently ended workflows (as of `now`, default: now)."""
        report = report or ReconcileReport()
        now = now or utcnow()
        with self.session_factory() as session:
            repo = WorkflowRepository(session)
            candidates = (
                repo.list_active(lifecycle.LIVE_WORKFLOW_STATUSES)
                + repo.list_recently_ended(
                    now - self.lookback, lifecycle.CORRECTABLE_TERMINAL_STATUSES
                )
                + repo.list_completed_without_result(now - self.lookback)
            )
        for workflow in candidates:
            report.checked += 1
            try:
                decision = self._decide(workflow, now)
            except AudioflowError as exc:  # Prefect unreachable: leave the row for next time
                report.skipped.append(f"{workflow.id}: {exc.detail}")
                continue
            if decision is None:
                continue
            status, reason, extra = decision
            crash_in_prefect = extra.pop(CRASH_IN_PREFECT, False)
            correction = Correction(
                str(workflow.task_id), str(workflow.id), workflow.status.value, status.value, reason
            )
            if not dry_run:
                if crash_in_prefect and workflow.instance_id is not None:
                    # Prefect first: a crashed row may be retried at once, and its old run
                    # must not be live beside the new one.
                    problem = self._crash_in_prefect(workflow.instance_id, reason)
                    if problem is not None:
                        report.skipped.append(
                            f"{workflow.id}: could not end its flow run in Prefect ({problem}); "
                            "left as it is until the next pass"
                        )
                        continue
                applied = self.workflows.correct(
                    workflow.id, status, reason, expected=workflow.status, **extra
                )
                if applied is None:
                    continue  # a hook landed meanwhile; the next pass looks again
            report.corrections.append(correction)
        return report

    def _decide(
        self, workflow: Workflow, now: datetime
    ) -> tuple[WorkflowStatus, str, dict[str, Any]] | None:
        """The correction Prefect's state calls for, if the lifecycle allows it; else None."""
        decision = self._propose(workflow, now)
        if decision is None or not lifecycle.allows(
            Writer.RECONCILER, workflow.status, decision[0]
        ):
            return None
        return decision

    def _propose(
        self, workflow: Workflow, now: datetime
    ) -> tuple[WorkflowStatus, str, dict[str, Any]] | None:
        if workflow.instance_id is None:
            age = (now - workflow.created_at).total_seconds()
            if workflow.status is lifecycle.WAITING_FOR_RUN and age > self.stale_after_s:
                return (
                    WorkflowStatus.FAILED,
                    f"no flow run was ever started ({age:.0f} s)",
                    {"error": "the flow run was never started", "error_kind": ErrorKind.TRANSIENT},
                )
            return None
        try:
            info = self.read_flow_run(self.settings.prefect.api_url, workflow.instance_id)
        except NotFoundError:
            return (
                WorkflowStatus.CRASHED,
                "the flow run no longer exists in Prefect",
                {
                    "error": "flow run lost: it no longer exists in Prefect",
                    "error_kind": ErrorKind.TRANSIENT,
                },
            )
        if info.state_type == "PENDING":
            return self._decide_pending(info, now)
        target = STATUS_FOR_PREFECT_STATE.get(info.state_type or "")
        if target is None:
            return None  # SCHEDULED, CANCELLING, PAUSED: not ours to decide yet
        if target is workflow.status is WorkflowStatus.COMPLETED and workflow.result is None:
            return self._decide_completed(workflow)  # completed, but its result never arrived
        if target is WorkflowStatus.RUNNING:
            return self._decide_running(workflow, info, now)
        if target is workflow.status:
            return None
        if target is WorkflowStatus.COMPLETED:
            return self._decide_completed(workflow)
        message = info.state_message or info.state_name or target.value
        kind = ErrorKind.TRANSIENT if target is not WorkflowStatus.CANCELLED else None
        extra: dict[str, Any] = {"error": f"Prefect: {message}"}
        if kind:
            extra["error_kind"] = kind
        return target, f"Prefect reports {info.state_name}", extra

    def _decide_pending(
        self, info: prefect_gateway.FlowRunInfo, now: datetime
    ) -> tuple[WorkflowStatus, str, dict[str, Any]] | None:
        """Pending lasts seconds (a worker claimed the run and is starting its process);
        far longer means that worker died in between, and nothing will ever start it.
        A run waiting in the queue is Scheduled, not Pending, so a backlog is not touched."""
        if info.state_since is None:
            return None
        pending = (now - info.state_since).total_seconds()
        if pending <= self.stale_after_s:
            return None
        return (
            WorkflowStatus.CRASHED,
            f"Pending in Prefect for {pending:.0f} s: the worker that claimed it is gone",
            {
                "error": f"flow run never started: Pending for {pending:.0f} s",
                "error_kind": ErrorKind.TRANSIENT,
                CRASH_IN_PREFECT: True,
            },
        )

    def _crash_in_prefect(self, flow_run_id: str, reason: str) -> str | None:
        """End the run in Prefect (forced Crashed); None when done, else why it failed."""
        try:
            prefect_gateway.crash_flow_run(self.settings.prefect.api_url, flow_run_id, reason)
        except NotFoundError:
            return None  # nothing left to end
        except AudioflowError as exc:
            log.warning("could not mark flow run %s Crashed in Prefect: %s", flow_run_id, exc)
            return exc.detail
        return None

    def _decide_running(
        self, workflow: Workflow, info: prefect_gateway.FlowRunInfo, now: datetime
    ) -> tuple[WorkflowStatus, str, dict[str, Any]] | None:
        idle = (now - workflow.updated_at).total_seconds()
        if idle > self.stale_after_s:
            if self.waits_for_slot(
                self.settings.prefect.api_url, info.id, TRANSCRIPTION_TAG
            ):
                return None  # queued behind other transcriptions: silent, not dead
            return (
                WorkflowStatus.CRASHED,
                f"Running in Prefect but no progress for {idle:.0f} s",
                {
                    "error": f"no progress for {idle:.0f} s; presumed dead",
                    "error_kind": ErrorKind.TRANSIENT,
                    CRASH_IN_PREFECT: True,
                },
            )
        # From queued only (the hook was missed); the lifecycle refuses the rest.
        return WorkflowStatus.RUNNING, "Prefect reports Running (the hook was missed)", {}

    def _decide_completed(
        self, workflow: Workflow
    ) -> tuple[WorkflowStatus, str, dict[str, Any]] | None:
        try:
            missing = missing_outputs(self.store, workflow.parameters, workflow.result)
        except StorageError as exc:
            log.warning("cannot check outputs of %s: %s", workflow.id, exc)
            return None
        if missing:
            return (
                WorkflowStatus.FAILED,
                "Prefect reports Completed but outputs are missing",
                {
                    "error": f"outputs missing: {', '.join(missing)}",
                    "error_kind": ErrorKind.TRANSIENT,
                },
            )
        result = workflow.result or self._result_from_store(workflow)
        return (
            WorkflowStatus.COMPLETED,
            f"Prefect reports Completed and all outputs are present (was {workflow.status.value})",
            {"result": result},
        )

    def _result_from_store(self, workflow: Workflow) -> dict[str, Any]:
        """A result rebuilt from the store when the flow's own report never arrived.

        `missing_outputs` found every required key present, in the attempt's folder or (a
        run created before attempts had folders) in the old episode-level layout. The
        chapters and waveform files are named when they exist (a chapters file only when
        the task gave chapters or the source had some).
        """
        params = AudioProcessingParameters.read(workflow.parameters)
        expected = expected_outputs(workflow.parameters)
        if not all(self.store.exists(key) for key in expected.required_keys()):
            expected = expected_outputs(workflow.parameters, legacy=True)
        fields: dict[str, Any] = {
            "episode_id": params.episode_id if params is not None else None,
            "storage": self.store.describe(),
            "outputs": {
                name: AudioOutput(key=key, size=self.store.size(key))
                for name, key in expected.audio.items()
            },
            "reconstructed": True,
        }
        if expected.transcript:
            # Keyed by transcript format name, as the flow keys them (`expected_outputs`).
            fields["transcript"] = TranscriptSummary(keys=dict(expected.transcript))
        if expected.chapters is not None and self.store.exists(expected.chapters):
            fields["chapters"] = ChaptersSummary(key=expected.chapters)
        if expected.waveform is not None and self.store.exists(expected.waveform):
            fields["waveform"] = WaveformSummary(key=expected.waveform)
        result = AudioProcessingResult(**fields)
        return result.to_json()

    # -- retries -------------------------------------------------------------------------

    def retry_transient_failures(
        self, *, dry_run: bool = False, report: ReconcileReport | None = None
    ) -> ReconcileReport:
        """A new attempt for each task that failed transiently, once its backoff has passed."""
        report = report or ReconcileReport()
        now = utcnow()
        with self.session_factory() as session:
            candidates = list(
                session.scalars(
                    select(Task).where(
                        Task.status == TaskStatus.FAILED,
                        Task.error_kind == ErrorKind.TRANSIENT.value,
                        Task.attempts < self.settings.max_attempts,
                    )
                ).all()
            )
        for task in candidates:
            ended = task.completed_at or task.updated_at
            wait = retry_backoff_s(task.attempts, self.retry_base_s)
            if (now - ended).total_seconds() < wait:
                continue
            reason = f"transient failure ({(task.error or '')[:200]}); attempt {task.attempts + 1}"
            if dry_run:
                report.retries.append(
                    RetryStarted(str(task.id), task.attempts + 1, reason, "dry-run")
                )
                continue
            try:
                retried = self.tasks.retry(task.id)
            except AudioflowError as exc:
                report.skipped.append(f"retry of {task.id}: {exc.detail}")
                continue
            report.retries.append(
                RetryStarted(str(task.id), retried.attempts, reason, retried.status.value)
            )
        return report
