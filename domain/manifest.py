"""The episode manifest: one object per episode (`episodes/{id}/manifest.json`) naming the
outputs that are current, i.e. those of the episode's most recently completed task.

Why a manifest: every attempt writes under its own folder (`core.keys`), so "which file is
the episode's mp3 now" is no longer a fixed key. The manifest answers it, and only ever with
one task's complete result: it is written after the database says that task is done (a
completion the database refused never publishes), in one all-or-nothing put.

Who writes it: `WorkflowService` when it applies the completion of a task's current
workflow (the flow's report or the reconciler's correction), and the reprocessing run,
which rewrites any manifest that is missing or names something other than the database's
answer (a store that was down at completion time). Writers do not lock: each one, after
writing, asks the database again and writes again if a newer completion has landed, so two
tasks completing at once leave the manifest of the later one.
"""

from __future__ import annotations

import io
import json
import logging
import tempfile
from datetime import datetime
from pathlib import Path
from typing import Any

from sqlalchemy import select
from sqlalchemy.orm import Session, sessionmaker

from core.keys import manifest_key
from core.storage.base import ObjectStore
from core.storage.errors import ObjectNotFoundError
from db.base import utcnow
from db.models import Task, Workflow, WorkflowStatus

log = logging.getLogger(__name__)

MANIFEST_VERSION = 1
#: Single files a result may name beside outputs and transcript: the Podcasting 2.0
#: chapters file and the waveform file, each `{"key": ...}` in the manifest.
_FILES = ("chapters", "waveform")
#: Bound on write-and-check rounds; each extra round means yet another task completed.
_MAX_ROUNDS = 5
#: A manifest is a few hundred bytes; a larger object is not ours to parse.
_MAX_MANIFEST_BYTES = 1024 * 1024


def current_completion(session: Session, episode_id: str) -> tuple[Task, Workflow] | None:
    """The episode's most recently completed workflow that has a result on its task.

    Completion time decides, not the task's status: a done task that is being reprocessed
    keeps its result (and its place) until the new attempt completes.
    """
    row = session.execute(
        select(Task, Workflow)
        .join(Workflow, Workflow.task_id == Task.id)
        .where(
            Task.episode_id == episode_id,
            Task.result.is_not(None),
            Workflow.status == WorkflowStatus.COMPLETED,
            Workflow.completed_at.is_not(None),
        )
        .order_by(Workflow.completed_at.desc(), Workflow.id.desc())
        .limit(1)
    ).one_or_none()
    return (row[0], row[1]) if row is not None else None


def build_manifest(task: Task, workflow: Workflow, *, now: datetime) -> dict[str, Any]:
    """The manifest naming `task`'s result (every format it has, which after a reprocess
    that added formats spans several of its attempts) as of `workflow`'s completion."""
    result = task.result if isinstance(task.result, dict) else {}
    outputs = {
        str(name): {"key": out["key"], "size": out.get("size")}
        for name, out in _mapping(result.get("outputs")).items()
        if isinstance(out, dict) and isinstance(out.get("key"), str)
    }
    manifest: dict[str, Any] = {
        "version": MANIFEST_VERSION,
        "episodeId": task.episode_id,
        "taskId": str(task.id),
        "workflowId": str(workflow.id),
        "attempt": workflow.attempt,
        "completedAt": workflow.completed_at.isoformat() if workflow.completed_at else None,
        "publishedAt": now.isoformat(),
        "outputs": outputs,
    }
    transcript = _mapping(result.get("transcript"))
    transcript_keys = {
        str(name): key
        for name, key in _mapping(transcript.get("keys")).items()
        if isinstance(key, str)
    }
    if transcript_keys:
        manifest["transcript"] = {"language": transcript.get("language"), "keys": transcript_keys}
    for name in _FILES:
        key = _mapping(result.get(name)).get("key")
        if isinstance(key, str):
            manifest[name] = {"key": key}
    return manifest



def _mapping(value: Any) -> dict[Any, Any]:
    """`value` if it is a JSON object, else an empty one: results and stored manifests are
    data from outside (a flow's report, an object anyone with bucket access can replace)."""
    return value if isinstance(value, dict) else {}


def manifest_keys(manifest: dict[str, Any] | None) -> set[str]:
    """Every object key a manifest names (whatever else a malformed one holds is ignored)."""
    if not isinstance(manifest, dict):
        return set()
    keys = {o.get("key") for o in _mapping(manifest.get("outputs")).values() if isinstance(o, dict)}
    keys |= set(_mapping(_mapping(manifest.get("transcript")).get("keys")).values())
    keys |= {_mapping(manifest.get(name)).get("key") for name in _FILES}
    return {k for k in keys if isinstance(k, str)}


def read_manifest(store: ObjectStore, episode_id: str) -> dict[str, Any] | None:
    """The stored manifest, or None if there is none (or it is not a manifest)."""
    key = manifest_key(episode_id)
    try:
        if store.size(key) > _MAX_MANIFEST_BYTES:
            return None
        store_bytes = _read_bytes(store, key)
    except ObjectNotFoundError:
        return None
    try:
        manifest = json.loads(store_bytes)
    except ValueError:
        return None
    return manifest if isinstance(manifest, dict) else None


def _read_bytes(store: ObjectStore, key: str) -> bytes:
    with tempfile.TemporaryDirectory(prefix="audioflow-manifest-") as tmp:
        dest = Path(tmp) / "manifest.json"
        store.get_file(key, dest)
        return dest.read_bytes()


def _identity(manifest: dict[str, Any] | None) -> tuple[Any, Any]:
    return (manifest or {}).get("taskId"), (manifest or {}).get("workflowId")


class ManifestPublisher:
    """Writes an episode's manifest from the database's answer (see the module docstring)."""

    def __init__(
        self,
        session_factory: sessionmaker[Session],
        store: ObjectStore,
        clock: Any = utcnow,
    ) -> None:
        self.session_factory = session_factory
        self.store = store
        self.clock = clock

    def _current(self, episode_id: str) -> tuple[Task, Workflow] | None:
        with self.session_factory() as session:
            return current_completion(session, episode_id)

    def publish(self, episode_id: str) -> dict[str, Any] | None:
        """Write the manifest of the episode's current completion; return what was written
        last (None: the episode has no completed task, and any manifest is left alone).

        Store errors propagate; the caller logs them and the reprocessing run repairs.
        """
        written: dict[str, Any] | None = None
        for _ in range(_MAX_ROUNDS):
            current = self._current(episode_id)
            if current is None:
                return written
            task, workflow = current
            if written is not None and _identity(written) == (str(task.id), str(workflow.id)):
                return written  # nothing newer landed while we wrote
            written = build_manifest(task, workflow, now=self.clock())
            body = json.dumps(written, indent=2, sort_keys=True).encode()
            self.store.put_stream(manifest_key(episode_id), io.BytesIO(body), "application/json")
        log.warning("manifest of %s: completions kept landing; the next pass checks", episode_id)
        return written

    def publish_quietly(self, episode_id: str | None) -> None:
        """`publish`, for a completion that is already committed: a failure is logged, never
        raised, so the completion stands; the reprocessing run writes the manifest later."""
        if not episode_id:
            return
        try:
            self.publish(episode_id)
        except Exception:
            log.exception(
                "manifest of episode %s not written; the reprocessing run will", episode_id
            )

    def repair(self, episode_id: str) -> bool:
        """Rewrite the manifest if it is missing or names another completion; True if written.

        Idempotent: a manifest that already names the current completion is left as it is.
        """
        current = self._current(episode_id)
        if current is None:
            return False
        task, workflow = current
        stored = read_manifest(self.store, episode_id)
        if _identity(stored) == (str(task.id), str(workflow.id)) and manifest_keys(
            stored
        ) == manifest_keys(build_manifest(task, workflow, now=self.clock())):
            return False
        self.publish(episode_id)
        return True
