"""The passes of the reprocessing flow, one Prefect task each: each shows in the UI as a
task run of its own and is retried (the steps' preset, `flows.steps.options`) when it
failed for a reason that may pass, such as a database or Prefect connection that dropped.

The rules live in the domain (`domain.reconciler`, `domain.retention`, `domain.tasks`) and
in `flows.workspace` (the temp sweep); a pass only calls them. Each pass returns its own
report, and a retried pass starts from a fresh one: the corrections of a failed try are
made again or found already made (every pass rereads the rows it works on).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from prefect import get_run_logger
from sqlalchemy.orm import Session, sessionmaker

from core.errors import AudioflowError
from core.settings import Settings
from core.storage.base import ObjectStore
from db.models import TaskStatus
from db.repositories import TaskRepository
from domain.lifecycle import TaskAction, task_allows
from domain.reconciler import Reconciler, ReconcileReport
from domain.retention import HousekeepingReport, OutputHousekeeping
from domain.tasks import TaskService
from flows.steps.options import step
from flows.workspace import prefect_run_state, sweep_run_dirs

if TYPE_CHECKING:
    from domain.contracts import ReprocessParameters


@step("reconcile")
def reconcile_workflows(reconciler: Reconciler, dry_run: bool) -> ReconcileReport:
    """Compare queued and running workflows (and recently ended ones) with Prefect; repair."""
    return reconciler.reconcile(dry_run=dry_run)


@step("retry-failed")
def retry_failed_tasks(reconciler: Reconciler, dry_run: bool) -> ReconcileReport:
    """A new attempt for each task that failed transiently, once its backoff has passed."""
    return reconciler.retry_transient_failures(dry_run=dry_run)


@step("reprocess-selection")
def reprocess_selection(service: TaskService, params: ReprocessParameters) -> list[dict[str, Any]]:
    """A new attempt for each selected task that has ended; one summary entry per task.

    Tasks still pending or processing are skipped, which also makes a retried pass skip
    the tasks its failed try already started.
    """
    with service.session_factory() as session:
        tasks, _ = TaskRepository(session).find(
            ids=list(params.task_ids) or None,
            episode_ids=params.episode_ids or None,
            status=TaskStatus(params.status) if params.status else None,
            created_after=params.created_after,
            created_before=params.created_before,
            limit=params.limit,
        )
    done: list[dict[str, Any]] = []
    for task in tasks:
        entry: dict[str, Any] = {"taskId": str(task.id), "episodeId": task.episode_id}
        if not task_allows(TaskAction.REPROCESS, task.status):
            entry["outcome"] = f"skipped: {task.status.value}"
        elif params.dry_run:
            entry["outcome"] = "would reprocess" + (
                f" adding {', '.join(params.add_formats)}" if params.add_formats else ""
            )
        else:
            try:
                updated = service.reprocess(task.id, params.add_formats or None)
                entry["outcome"] = f"attempt {updated.attempts}: {updated.status.value}"
            except AudioflowError as exc:
                entry["outcome"] = f"skipped: {exc.detail}"
        done.append(entry)
    return done


@step("housekeeping")
def housekeep_outputs(
    session_factory: sessionmaker[Session],
    store: ObjectStore,
    retention_days: float | None,
    dry_run: bool,
) -> HousekeepingReport:
    """Rewrite missing or stale episode manifests; remove old output versions (retention)."""
    return OutputHousekeeping(session_factory, store, retention_days).run(dry_run=dry_run)


@step("sweep-temp")
def sweep_temp_folders(settings: Settings) -> list[str]:
    """Remove the run folders of dead runs under this worker's temp root (see
    `flows.workspace`); a sweep that cannot ask Prefect keeps everything."""
    if not settings.prefect.api_url:
        return []
    api_url = settings.prefect.api_url
    report = sweep_run_dirs(settings.temp_dir, prefect_run_state(api_url), api_url)
    for error in report.errors:
        get_run_logger().warning("temp folder kept, its run's state is unknown: %s", error)
    return report.removed
