"""The `reprocessing` flow: repair what fell through, retry what may pass, reprocess on demand.

Each pass also rewrites episode manifests a store failure left missing or stale and, with
`AUDIOFLOW_OUTPUT_RETENTION_DAYS` set, removes old output versions (`domain.retention`).

Scheduled every few minutes from `prefect.yaml` with default parameters (reconcile, retry,
and sweep the temp folders that killed runs left on this worker); started by hand
(`audioflow reprocess`, `POST /reprocess`, or the Prefect UI form)
to reprocess selected tasks, for example to add `opus_64` to the whole back catalogue.
It writes through the same services as the API, and a summary artifact per run.
"""

from __future__ import annotations

import uuid
from datetime import datetime
from typing import Any, Literal

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact
from pydantic import BaseModel, Field

from core.errors import AudioflowError
from core.formats import get_format
from core.settings import get_settings
from core.storage import get_store
from db.engine import build_engine, build_session_factory
from db.models import TaskStatus
from db.repositories import TaskRepository
from domain.lifecycle import TaskAction, task_allows
from domain.reconciler import Reconciler, ReconcileReport
from domain.retention import HousekeepingReport, OutputHousekeeping
from domain.tasks import TaskService
from flows.workspace import prefect_run_state, sweep_run_dirs


class ReprocessParameters(BaseModel):
    """What a reprocessing run does; every field shows in the Prefect UI's run form."""

    reconcile: bool = Field(
        default=True, description="Compare queued/running workflows with Prefect and repair them."
    )
    retry_failed: bool = Field(
        default=True, description="Start a new attempt for tasks that failed transiently."
    )
    housekeeping: bool = Field(
        default=True,
        description="Rewrite missing or stale episode manifests; with "
        "AUDIOFLOW_OUTPUT_RETENTION_DAYS set, remove old output versions no manifest names.",
    )
    task_ids: list[str] = Field(default_factory=list, description="Reprocess these tasks.")
    episode_ids: list[str] = Field(
        default_factory=list, description="Reprocess the tasks of these episodes."
    )
    status: Literal["done", "failed", "cancelled"] | None = Field(
        default=None, description="Reprocess tasks with this status."
    )
    created_after: datetime | None = Field(default=None, description="Only tasks created since.")
    created_before: datetime | None = Field(default=None, description="Only tasks created before.")
    add_formats: list[str] = Field(
        default_factory=list,
        description="Formats to add (only these are encoded for tasks that are done).",
    )
    sweep_temp: bool = Field(
        default=True,
        description="Remove this worker's temp folders of runs that are no longer live.",
    )
    dry_run: bool = Field(default=False, description="List what would happen; change nothing.")
    limit: int = Field(default=1000, ge=1, le=100_000, description="At most this many tasks.")
    stale_after_s: float = Field(
        default=600, ge=30, description="Running with no progress this long counts as dead."
    )

    def selects_tasks(self) -> bool:
        return bool(
            self.task_ids
            or self.episode_ids
            or self.status
            or self.created_after
            or self.created_before
            or self.add_formats
        )


@flow(name="reprocessing", description=__doc__, persist_result=False)
def reprocessing(params: ReprocessParameters | None = None) -> dict[str, Any]:
    """One pass: reconcile, retry, then reprocess the selection (if any)."""
    params = params or ReprocessParameters()
    logger = get_run_logger()
    for name in params.add_formats:
        get_format(name)
    settings = get_settings()
    engine = build_engine(settings.database)
    session_factory = build_session_factory(engine)
    store = get_store()
    reconciler = Reconciler(session_factory, settings, store, stale_after_s=params.stale_after_s)
    report = ReconcileReport()
    try:
        if params.reconcile:
            reconciler.reconcile(dry_run=params.dry_run, report=report)
        if params.retry_failed:
            reconciler.retry_transient_failures(dry_run=params.dry_run, report=report)
        reprocessed = (
            _reprocess_selection(session_factory, settings, store, params)
            if params.selects_tasks()
            else []
        )
        housekeeping = (
            OutputHousekeeping(session_factory, store, settings.storage.output_retention_days).run(
                dry_run=params.dry_run
            )
            if params.housekeeping
            else HousekeepingReport()
        )
    finally:
        engine.dispose()
    swept = _sweep_temp(settings) if params.sweep_temp and not params.dry_run else []
    summary = {
        "dryRun": params.dry_run,
        "checked": report.checked,
        "corrections": [c.__dict__ for c in report.corrections],
        "retries": [r.__dict__ for r in report.retries],
        "reprocessed": reprocessed,
        "manifestsWritten": housekeeping.manifests_written,
        "outputsRemoved": housekeeping.removed,
        "skipped": report.skipped + housekeeping.skipped,
        "sweptTempFolders": swept,
    }
    logger.info(
        "checked %d workflows: %d corrected, %d retried, %d reprocessed, %d skipped; "
        "%d manifests written, %d old outputs removed",
        report.checked,
        len(report.corrections),
        len(report.retries),
        len(reprocessed),
        len(report.skipped) + len(housekeeping.skipped),
        len(housekeeping.manifests_written),
        len(housekeeping.removed),
    )
    _summary_artifact(summary)
    return summary


def _sweep_temp(settings: Any) -> list[str]:
    """Remove the run folders of dead runs under this worker's temp root (see
    `flows.workspace`); a sweep that cannot ask Prefect keeps everything."""
    if not settings.prefect.api_url:
        return []
    api_url = settings.prefect.api_url
    report = sweep_run_dirs(settings.temp_dir, prefect_run_state(api_url), api_url)
    for error in report.errors:
        get_run_logger().warning("temp folder kept, its run's state is unknown: %s", error)
    return report.removed


def _reprocess_selection(
    session_factory: Any, settings: Any, store: Any, params: ReprocessParameters
) -> list[dict[str, Any]]:
    with session_factory() as session:
        tasks, _ = TaskRepository(session).find(
            ids=[uuid.UUID(t) for t in params.task_ids] or None,
            episode_ids=params.episode_ids or None,
            status=TaskStatus(params.status) if params.status else None,
            created_after=params.created_after,
            created_before=params.created_before,
            limit=params.limit,
        )
    service = TaskService(session_factory, settings, store=store)
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


def _summary_artifact(summary: dict[str, Any]) -> None:
    lines = [
        f"# Reprocessing run{' (dry run)' if summary['dryRun'] else ''}",
        "",
        f"Checked **{summary['checked']}** workflows; "
        f"**{len(summary['corrections'])}** corrected, **{len(summary['retries'])}** retried, "
        f"**{len(summary['reprocessed'])}** reprocessed.",
    ]
    if summary["corrections"]:
        lines += ["", "| task | workflow | from | to | why |", "|---|---|---|---|---|"]
        lines += [
            f"| {c['task_id']} | {c['workflow_id']} | {c['from_status']} | {c['to_status']} | "
            f"{c['reason']} |"
            for c in summary["corrections"]
        ]
    if summary["retries"]:
        lines += ["", "| retried task | attempt | why |", "|---|---|---|"]
        lines += [
            f"| {r['task_id']} | {r['attempt']} | {r['reason']} |" for r in summary["retries"]
        ]
    if summary["reprocessed"]:
        lines += ["", "| reprocessed task | episode | outcome |", "|---|---|---|"]
        lines += [
            f"| {r['taskId']} | {r['episodeId']} | {r['outcome']} |" for r in summary["reprocessed"]
        ]
    if summary["manifestsWritten"] or summary["outputsRemoved"]:
        lines += [
            "",
            f"Manifests written: **{len(summary['manifestsWritten'])}**; old output versions "
            f"removed: **{len(summary['outputsRemoved'])}**.",
        ]
    if summary["skipped"]:
        lines += ["", "Skipped:", *[f"- {s}" for s in summary["skipped"]]]
    if summary["sweptTempFolders"]:
        lines += ["", "Temp folders of dead runs removed:"]
        lines += [f"- `{name}`" for name in summary["sweptTempFolders"]]
    create_markdown_artifact(
        "\n".join(lines), key="reprocessing-summary", description="What this run did"
    )
