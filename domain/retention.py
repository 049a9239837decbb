"""Output housekeeping for the reprocessing run: repair manifests, then (when
`AUDIOFLOW_OUTPUT_RETENTION_DAYS` is set) remove output versions no manifest names.

Every attempt keeps its own folder (`core.keys.attempt_prefix`), so superseded versions,
the partial outputs of failed attempts and anything a cancel could not remove pile up.
The sweep removes an object only if all of these hold:

* it lies in an attempt folder (`episodes/{id}/tasks/...`): objects of the layout before
  attempt folders, and uploads, are never touched;
* neither the stored manifest nor the one the database calls for names it;
* its task is not pending or processing, and its attempt's workflow has ended;
* it is older than the retention period, counting from the later of its own last write
  and its attempt's end.

An episode whose manifest cannot be written (store down) is not swept this time.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import KW_ONLY, dataclass, field
from datetime import datetime, timedelta

from sqlalchemy import case, func, select
from sqlalchemy.orm import Session, sessionmaker

from core.keys import attempt_label, tasks_prefix
from core.storage.base import ObjectStore
from core.storage.errors import StorageError
from db.base import utcnow
from db.models import Task, Workflow, WorkflowStatus
from domain import lifecycle
from domain.manifest import (
    ManifestPublisher,
    build_manifest,
    current_completion,
    manifest_keys,
    read_manifest,
)

log = logging.getLogger(__name__)


@dataclass
class HousekeepingReport:
    """What one pass did (or, in a dry run, would do)."""

    manifests_written: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    skipped: list[str] = field(default_factory=list)


@dataclass(eq=False)
class OutputHousekeeping:
    """Manifest repair and the retention sweep; `clock` is injectable for tests."""

    session_factory: sessionmaker[Session]
    store: ObjectStore
    retention_days: float | None
    _: KW_ONLY
    clock: Callable[[], datetime] = utcnow
    lookback: timedelta = timedelta(hours=24)

    def __post_init__(self) -> None:
        self.manifests = ManifestPublisher(self.session_factory, self.store, self.clock)

    def run(self, *, dry_run: bool = False) -> HousekeepingReport:
        """Repair the manifests of recently completed episodes, then sweep (if enabled)."""
        report = HousekeepingReport()
        now = self.clock()
        failed: set[str] = set()
        for episode_id in [] if dry_run else self._recently_completed(now - self.lookback):
            try:
                if self.manifests.repair(episode_id):
                    report.manifests_written.append(episode_id)
            except Exception as exc:  # one episode's trouble must not stop the pass
                log.warning("manifest of %s not repaired: %s", episode_id, exc)
                failed.add(episode_id)
                report.skipped.append(f"manifest of {episode_id}: {exc}")
        if self.retention_days is None:
            return report
        cutoff = now - timedelta(days=self.retention_days)
        for episode_id in self._with_superseded_versions():
            if episode_id in failed:
                continue
            try:
                self.sweep(episode_id, cutoff, dry_run=dry_run, report=report)
            except StorageError as exc:
                report.skipped.append(f"retention of {episode_id}: {exc}")
        return report

    def _recently_completed(self, since: datetime) -> list[str]:
        with self.session_factory() as session:
            rows = session.scalars(
                select(Task.episode_id)
                .join(Workflow, Workflow.task_id == Task.id)
                .where(
                    Task.episode_id.is_not(None),
                    Workflow.status == WorkflowStatus.COMPLETED,
                    Workflow.completed_at >= since,
                )
                .distinct()
            ).all()
        return sorted(e for e in rows if e)

    def _with_superseded_versions(self) -> list[str]:
        """Episodes that can hold a version no manifest names: more than one attempt in
        all, or an attempt that did not complete. (One completed attempt is all named.)"""
        not_completed = func.sum(case((Workflow.status != WorkflowStatus.COMPLETED, 1), else_=0))
        with self.session_factory() as session:
            rows = session.scalars(
                select(Task.episode_id)
                .join(Workflow, Workflow.task_id == Task.id)
                .where(Task.episode_id.is_not(None))
                .group_by(Task.episode_id)
                .having((func.count(Workflow.id) > 1) | (not_completed > 0))
            ).all()
        return sorted(e for e in rows if e)

    def sweep(
        self,
        episode_id: str,
        cutoff: datetime,
        *,
        dry_run: bool = False,
        report: HousekeepingReport | None = None,
    ) -> list[str]:
        """Remove the episode's unnamed attempt objects last written before `cutoff`."""
        report = report if report is not None else HousekeepingReport()
        prefix = tasks_prefix(episode_id)
        with self.session_factory() as session:
            current = current_completion(session, episode_id)
            protected = manifest_keys(read_manifest(self.store, episode_id))
            if current is not None:
                protected |= manifest_keys(build_manifest(*current, now=cutoff))
            tasks = {
                str(t.id): t
                for t in session.scalars(select(Task).where(Task.episode_id == episode_id))
            }
            workflows = (
                session.scalars(select(Workflow).where(Workflow.task_id.in_(task_ids))).all()
                if (task_ids := [t.id for t in tasks.values()])
                else []
            )
        attempts = {(str(w.task_id), label): w for w in workflows for label in _labels(w)}
        removed = []
        for info in self.store.list_objects(prefix):
            if info.key in protected:
                continue
            task_part, _, rest = info.key[len(prefix) :].partition("/")
            label = rest.partition("/")[0]
            task = tasks.get(task_part)
            if task is not None and lifecycle.task_is_live(task.status):
                continue  # still running: its objects may be about to be named
            workflow = attempts.get((task_part, label))
            if workflow is not None and not lifecycle.is_terminal(workflow.status):
                continue
            last = info.modified
            if workflow is not None and workflow.completed_at is not None:
                last = max(last, workflow.completed_at)
            if last >= cutoff:
                continue
            if not dry_run:
                self.store.delete(info.key)
            removed.append(info.key)
        if removed:
            verb = "would remove" if dry_run else "removed"
            log.info("retention: %s %d objects of %s", verb, len(removed), episode_id)
        report.removed.extend(removed)
        return removed


def _labels(workflow: Workflow) -> list[str]:
    """The folder names an attempt may have written to (by number, or by workflow id for
    runs created before the attempt number was a parameter)."""
    return [attempt_label(workflow.attempt), attempt_label(None, workflow.id)]
