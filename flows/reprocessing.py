"""The `reprocessing` flow: repair what fell through, retry what may pass, reprocess on demand.

Each pass also rewrites episode manifests a store failure left missing or stale and, with
`AUDIOFLOW_OUTPUT_RETENTION_DAYS` set, removes old output versions (`domain.retention`).

Scheduled every few minutes from `prefect.yaml` with default parameters (reconcile, retry,
and sweep the temp folders that killed runs left on this worker); started by hand
(`audioflow reprocess`, `POST /reprocess`, or the Prefect UI form)
to reprocess selected tasks, for example to add `opus_64` to the whole back catalogue.
Each pass is a Prefect task (`flows.steps.passes`) that calls the domain, the same services
as the API; the run writes a summary artifact.
"""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import create_markdown_artifact

from domain.composition import build_services
from domain.contracts import ReprocessParameters
from domain.reconciler import Reconciler, ReconcileReport
from domain.retention import HousekeepingReport
from flows.steps.passes import (
    housekeep_outputs,
    reconcile_workflows,
    reprocess_selection,
    retry_failed_tasks,
    sweep_temp_folders,
)


@flow(name="reprocessing", description=__doc__, persist_result=False)
def reprocessing(params: ReprocessParameters | None = None) -> dict[str, Any]:
    """One pass: reconcile, retry, then reprocess the selection (if any); each a task."""
    params = params or ReprocessParameters()  # format names were checked when it was built
    logger = get_run_logger()
    services = build_services()
    settings, session_factory, store = services.settings, services.session_factory, services.store
    reconciler = Reconciler(
        session_factory,
        settings,
        store,
        stale_after_s=params.stale_after_s,
        tasks=services.tasks,
    )
    try:
        reconciled = (
            reconcile_workflows(reconciler, params.dry_run)
            if params.reconcile
            else ReconcileReport()
        )
        retried = (
            retry_failed_tasks(reconciler, params.dry_run)
            if params.retry_failed
            else ReconcileReport()
        )
        reprocessed = (
            reprocess_selection(services.tasks, params)
            if params.selects_tasks()
            else []
        )
        housekeeping = (
            housekeep_outputs(
                session_factory, store, settings.storage.output_retention_days, params.dry_run
            )
            if params.housekeeping
            else HousekeepingReport()
        )
    finally:
        services.dispose()
    swept = sweep_temp_folders(settings) if params.sweep_temp and not params.dry_run else []
    skipped = reconciled.skipped + retried.skipped + housekeeping.skipped
    summary = {
        "dryRun": params.dry_run,
        "checked": reconciled.checked,
        "corrections": [c.__dict__ for c in reconciled.corrections],
        "retries": [r.__dict__ for r in retried.retries],
        "reprocessed": reprocessed,
        "manifestsWritten": housekeeping.manifests_written,
        "outputsRemoved": housekeeping.removed,
        "skipped": skipped,
        "sweptTempFolders": swept,
    }
    logger.info(
        "checked %d workflows: %d corrected, %d retried, %d reprocessed, %d skipped; "
        "%d manifests written, %d old outputs removed",
        reconciled.checked,
        len(reconciled.corrections),
        len(retried.retries),
        len(reprocessed),
        len(skipped),
        len(housekeeping.manifests_written),
        len(housekeeping.removed),
    )
    _summary_artifact(summary)
    return summary


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
