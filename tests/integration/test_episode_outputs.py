"""Two tasks of one episode: every attempt writes and removes only its own objects, and the
episode's manifest names one done task's outputs, complete. On PostgreSQL, the real API
and Prefect server (no worker: the test writes what a flow run would have uploaded), and
the local store."""

from __future__ import annotations

import json
import threading
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from prefect.states import Completed
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.keys import manifest_key
from core.settings import Settings
from core.storage import build_store
from core.storage.base import ObjectStore
from db.base import utcnow
from db.models import Workflow, WorkflowStatus
from domain.composition import build_services
from domain.manifest import current_completion, manifest_keys, read_manifest
from domain.outputs import attempt_output_keys, expected_outputs, result_keys
from domain.reconciler import Reconciler
from domain.retention import OutputHousekeeping
from domain.workflows import ProgressUpdate, WorkflowService
from tests.integration.conftest import AUTH, PROGRESS, create_task, report_progress
from tests.prefect_fixtures import prefect_client


@pytest.fixture
def store(settings: Settings) -> ObjectStore:
    return build_store(settings.storage)


@pytest.fixture
def episode() -> str:
    return f"ep-shared-{uuid.uuid4().hex[:8]}"


def _create(client: TestClient, episode: str, formats: list[str]) -> dict[str, Any]:
    return create_task(
        client,
        {
            "episodeId": episode,
            "audioKey": "uploads/ep.mp3",
            "encodingFormats": formats,
            "transcribe": False,
        },
    )


def _parameters(client: TestClient, workflow_id: str) -> dict[str, Any]:
    params: dict[str, Any] = client.get(f"/workflows/{workflow_id}").json()["parameters"]
    return params


def _upload(store: ObjectStore, params: dict[str, Any], tag: bytes, tmp_path: Path) -> None:
    """What the attempt's flow run would upload: every output, each holding `tag`."""
    blob = tmp_path / f"blob-{uuid.uuid4().hex}"
    blob.write_bytes(tag)
    for key in attempt_output_keys(params):
        store.put_file(key, blob)


def _result(store: ObjectStore, params: dict[str, Any]) -> dict[str, Any]:
    """The result the flow reports for what `_upload` put: outputs, chapters, waveform."""
    expected = expected_outputs(params)
    result: dict[str, Any] = {
        "episodeId": params["episode_id"],
        "outputs": {
            name: {"key": key, "size": store.size(key)} for name, key in expected.audio.items()
        },
    }
    if expected.chapters is not None:
        result["chapters"] = {"key": expected.chapters, "origin": "source"}
    if expected.waveform is not None:
        result["waveform"] = {"key": expected.waveform}
    return result


def _finish(
    client: TestClient, store: ObjectStore, task: dict[str, Any], tag: bytes, tmp_path: Path
) -> dict[str, Any]:
    """Run the task's current attempt to `done` as its flow would: upload, then report."""
    params = _parameters(client, task["workflowId"])
    _upload(store, params, tag, tmp_path)
    report_progress(client, task, status="running")
    report_progress(client, task, status="completed", result=_result(store, params))
    row: dict[str, Any] = client.get(f"/tasks/{task['id']}").json()
    assert row["status"] == "done", row
    return row


def _read(store: ObjectStore, key: str, tmp_path: Path) -> bytes:
    dest = tmp_path / f"read-{uuid.uuid4().hex}"
    store.get_file(key, dest)
    return dest.read_bytes()


def _manifest(store: ObjectStore, episode: str) -> dict[str, Any]:
    manifest = read_manifest(store, episode)
    assert manifest is not None, "no manifest"
    return manifest


def _assert_manifest_names(
    store: ObjectStore, episode: str, task: dict[str, Any], tmp_path: Path
) -> None:
    """The manifest names exactly `task`'s result, and every key it names is there."""
    manifest = _manifest(store, episode)
    assert manifest["taskId"] == task["id"]
    assert manifest["workflowId"] == task["workflowId"]
    assert manifest["episodeId"] == episode
    named = {name: out["key"] for name, out in manifest["outputs"].items()}
    assert named == {name: out["key"] for name, out in task["result"]["outputs"].items()}
    for name, key in named.items():
        assert store.size(key) == manifest["outputs"][name]["size"]
    for name in ("chapters", "waveform"):
        assert manifest.get(name) == (
            {"key": task["result"][name]["key"]} if name in task["result"] else None
        )
        if name in manifest:
            assert store.exists(manifest[name]["key"])


# -- case 2 of issue 10 -------------------------------------------------------------------


def test_cancelling_a_second_task_keeps_the_first_tasks_published_outputs(
    client: TestClient, store: ObjectStore, episode: str, tmp_path: Path
) -> None:
    """Task A done; task B of the same episode uploads part of its work and is cancelled.
    Before per-attempt keys, B's uploads overwrote A's files and the cancel deleted them."""
    a = _finish(client, store, _create(client, episode, ["mp3_64"]), b"A", tmp_path)
    a_keys = [out["key"] for out in a["result"]["outputs"].values()]
    _assert_manifest_names(store, episode, a, tmp_path)

    b = _create(client, episode, ["mp3_64"])
    b_params = _parameters(client, b["workflowId"])
    _upload(store, b_params, b"B", tmp_path)  # B had uploaded when the cancel came
    response = client.post(f"/tasks/{b['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"

    assert [_read(store, key, tmp_path) for key in a_keys] == [b"A"] * len(a_keys)
    assert client.get(f"/tasks/{a['id']}").json()["status"] == "done"
    _assert_manifest_names(store, episode, a, tmp_path)
    assert not any(store.exists(key) for key in attempt_output_keys(b_params))


def test_a_later_task_becomes_current_and_the_earlier_files_stay(
    client: TestClient, store: ObjectStore, episode: str, tmp_path: Path
) -> None:
    a = _finish(client, store, _create(client, episode, ["mp3_64", "opus_64"]), b"A", tmp_path)
    b = _finish(client, store, _create(client, episode, ["mp3_64", "opus_64"]), b"B", tmp_path)
    for out in a["result"]["outputs"].values():
        assert _read(store, out["key"], tmp_path) == b"A"
    assert {o["key"] for o in a["result"]["outputs"].values()}.isdisjoint(
        o["key"] for o in b["result"]["outputs"].values()
    )
    _assert_manifest_names(store, episode, b, tmp_path)
    assert client.get(f"/tasks/{a['id']}").json()["result"] == a["result"]


def test_a_failure_halfway_leaves_the_manifest_naming_the_done_task(
    client: TestClient, store: ObjectStore, episode: str, tmp_path: Path
) -> None:
    a = _finish(client, store, _create(client, episode, ["mp3_64", "opus_64"]), b"A", tmp_path)
    b = _create(client, episode, ["mp3_64", "opus_64"])
    b_params = _parameters(client, b["workflowId"])
    first_key = attempt_output_keys(b_params)[0]
    blob = tmp_path / "half"
    blob.write_bytes(b"B")
    store.put_file(first_key, blob)  # one format uploaded, then the store went away
    report_progress(client, b, status="running")
    report_progress(
        client,
        b,
        status="failed",
        error="storage unavailable",
        errorKind="transient",
    )
    _assert_manifest_names(store, episode, a, tmp_path)
    for out in a["result"]["outputs"].values():
        assert _read(store, out["key"], tmp_path) == b"A"


def test_a_refused_completion_publishes_nothing(
    client: TestClient, store: ObjectStore, episode: str, tmp_path: Path
) -> None:
    """A completion the database refuses (the workflow was cancelled) names nothing."""
    a = _finish(client, store, _create(client, episode, ["mp3_64"]), b"A", tmp_path)
    b = _create(client, episode, ["mp3_64"])
    assert client.post(f"/tasks/{b['id']}/cancel").status_code == 200
    b_params = _parameters(client, b["workflowId"])
    _upload(store, b_params, b"B", tmp_path)  # a late run uploads anyway
    late = client.post(
        PROGRESS,
        json={
            "taskId": b["id"],
            "workflowId": b["workflowId"],
            "status": "completed",
            "result": _result(store, b_params),
        },
        headers=AUTH,
    )
    assert late.status_code == 409
    _assert_manifest_names(store, episode, a, tmp_path)


# -- the manifest -------------------------------------------------------------------------


def test_store_failure_at_completion_keeps_it_and_reprocessing_writes_the_manifest(
    client: TestClient,
    store: ObjectStore,
    settings: Settings,
    session_factory: sessionmaker[Session],
    episode: str,
    tmp_path: Path,
) -> None:
    # A folder where the manifest goes: every write of it fails, as with a store that is down.
    blocker = Path(settings.storage.local_dir, *manifest_key(episode).split("/"))
    blocker.mkdir(parents=True)
    a = _finish(client, store, _create(client, episode, ["mp3_64"]), b"A", tmp_path)
    assert a["status"] == "done"  # the completion stands
    assert read_manifest(store, episode) is None

    housekeeping = OutputHousekeeping(session_factory, store, None)
    assert episode in housekeeping.run().skipped[0]  # still failing: reported, not raised
    blocker.rmdir()
    assert housekeeping.run().manifests_written == [episode]
    _assert_manifest_names(store, episode, a, tmp_path)
    assert episode not in housekeeping.run().manifests_written  # idempotent


def test_reprocessing_rewrites_a_stale_manifest(
    client: TestClient,
    store: ObjectStore,
    session_factory: sessionmaker[Session],
    episode: str,
    tmp_path: Path,
) -> None:
    a = _finish(client, store, _create(client, episode, ["mp3_64"]), b"A", tmp_path)
    b = _finish(client, store, _create(client, episode, ["mp3_64"]), b"B", tmp_path)
    stale = json.dumps({**_manifest(store, episode), "taskId": a["id"]}).encode()
    blob = tmp_path / "stale.json"
    blob.write_bytes(stale)
    store.put_file(manifest_key(episode), blob)  # as if A's slower writer had landed last
    assert OutputHousekeeping(session_factory, store, None).run().manifests_written == [episode]
    _assert_manifest_names(store, episode, b, tmp_path)


def test_two_tasks_completing_at_once_leave_one_complete_manifest(
    client: TestClient,
    store: ObjectStore,
    session_factory: sessionmaker[Session],
    tmp_path: Path,
) -> None:
    """Both completions race through the service; the manifest ends up naming exactly the
    one the database calls current, with all of its keys and none of the other's."""
    service = WorkflowService(session_factory, store)
    for round_ in range(4):
        episode = f"ep-race-{round_}-{uuid.uuid4().hex[:6]}"
        tasks = [_create(client, episode, ["mp3_64", "opus_64"]) for _ in range(2)]
        updates = []
        for n, task in enumerate(tasks):
            params = _parameters(client, task["workflowId"])
            _upload(store, params, str(n).encode(), tmp_path)
            report_progress(client, task, status="running")
            updates.append(
                ProgressUpdate(
                    task_id=uuid.UUID(task["id"]),
                    workflow_id=uuid.UUID(task["workflowId"]),
                    status=WorkflowStatus.COMPLETED,
                    result=_result(store, params),
                )
            )
        barrier = threading.Barrier(2)

        def complete(update: ProgressUpdate, barrier: threading.Barrier = barrier) -> None:
            barrier.wait()
            service.apply_progress(update)

        threads = [threading.Thread(target=complete, args=(u,)) for u in updates]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
        with session_factory() as session:
            current = current_completion(session, episode)
        assert current is not None
        winner = client.get(f"/tasks/{current[0].id}").json()
        _assert_manifest_names(store, episode, winner, tmp_path)
        loser = next(t for t in tasks if t["id"] != winner["id"])
        loser_keys = {
            o["key"]
            for o in client.get(f"/tasks/{loser['id']}").json()["result"]["outputs"].values()
        }
        assert manifest_keys(_manifest(store, episode)).isdisjoint(loser_keys)


# -- reprocessing that adds formats -------------------------------------------------------


def test_adding_a_format_keeps_the_earlier_attempts_keys(
    client: TestClient,
    store: ObjectStore,
    settings: Settings,
    session_factory: sessionmaker[Session],
    episode: str,
    tmp_path: Path,
) -> None:
    a = _finish(client, store, _create(client, episode, ["mp3_64"]), b"A1", tmp_path)
    first_key = a["result"]["outputs"]["mp3_64"]["key"]
    service = build_services(settings, session_factory=session_factory, store=store).tasks

    # An added format, done: the result and the manifest name both attempts' keys.
    added = service.reprocess(uuid.UUID(a["id"]), ["opus_64"])
    params = _parameters(client, str(added.workflow_id))
    assert params["encoding_formats"] == ["opus_64"] and params["attempt"] == 2
    row = _finish(
        client, store, {"id": a["id"], "workflowId": str(added.workflow_id)}, b"A2", tmp_path
    )
    assert row["result"]["outputs"]["mp3_64"]["key"] == first_key
    assert "/a2/" in row["result"]["outputs"]["opus_64"]["key"]
    _assert_manifest_names(store, episode, row, tmp_path)

    # Another added format, cancelled: only that attempt's folder is cleaned.
    cancelled = service.reprocess(uuid.UUID(a["id"]), ["aac_128"])
    params = _parameters(client, str(cancelled.workflow_id))
    assert params["encoding_formats"] == ["aac_128"] and params["attempt"] == 3
    _upload(store, params, b"A3", tmp_path)
    assert client.post(f"/tasks/{a['id']}/cancel").status_code == 200
    assert not any(store.exists(k) for k in attempt_output_keys(params))
    assert [_read(store, o["key"], tmp_path) for o in row["result"]["outputs"].values()] == [
        b"A1",
        b"A2",
    ]
    _assert_manifest_names(store, episode, row, tmp_path)


# -- the reconciler -----------------------------------------------------------------------


def test_reconciler_completion_checks_the_attempts_keys_and_writes_the_manifest(
    client: TestClient,
    store: ObjectStore,
    settings: Settings,
    session_factory: sessionmaker[Session],
    episode: str,
    tmp_path: Path,
) -> None:
    reconciler = Reconciler(session_factory, settings, store, stale_after_s=60, retry_base_s=0)
    task = _create(client, episode, ["mp3_64"])
    report_progress(client, task, status="running")
    params = _parameters(client, task["workflowId"])
    _upload(store, params, b"R", tmp_path)
    with prefect_client(settings.prefect.api_url) as prefect:
        prefect.set_flow_run_state(uuid.UUID(task["workflowInstanceId"]), Completed(), force=True)
    report = reconciler.reconcile()
    assert [c.to_status for c in report.corrections] == ["completed"]
    row = client.get(f"/tasks/{task['id']}").json()
    assert row["result"]["outputs"]["mp3_64"]["key"] == attempt_output_keys(params)[0]
    _assert_manifest_names(store, episode, row, tmp_path)


def test_a_run_from_before_attempt_folders_is_checked_in_the_old_layout(
    client: TestClient,
    store: ObjectStore,
    settings: Settings,
    session_factory: sessionmaker[Session],
    episode: str,
    tmp_path: Path,
) -> None:
    """A workflow created before the change has no `attempt` parameter and may have run the
    old code, which wrote `episodes/{id}/audio/...`: those outputs count."""
    reconciler = Reconciler(session_factory, settings, store, stale_after_s=60, retry_base_s=0)
    task = _create(client, episode, ["mp3_64"])
    params = {k: v for k, v in _parameters(client, task["workflowId"]).items() if k != "attempt"}
    with session_factory.begin() as session:
        session.execute(
            update(Workflow)
            .where(Workflow.id == uuid.UUID(task["workflowId"]))
            .values(parameters=params)
        )
    legacy_key = f"episodes/{episode}/audio/mp3_64.mp3"
    blob = tmp_path / "legacy"
    blob.write_bytes(b"old layout")
    store.put_file(legacy_key, blob)
    report_progress(client, task, status="running")
    with prefect_client(settings.prefect.api_url) as prefect:
        prefect.set_flow_run_state(uuid.UUID(task["workflowInstanceId"]), Completed(), force=True)
    report = reconciler.reconcile()
    assert [c.to_status for c in report.corrections] == ["completed"]
    row = client.get(f"/tasks/{task['id']}").json()
    assert row["result"]["outputs"]["mp3_64"]["key"] == legacy_key
    assert _manifest(store, episode)["outputs"]["mp3_64"]["key"] == legacy_key


# -- retention ----------------------------------------------------------------------------


def test_retention_removes_only_old_unnamed_versions(
    client: TestClient,
    store: ObjectStore,
    session_factory: sessionmaker[Session],
    episode: str,
    tmp_path: Path,
) -> None:
    """Superseded and failed attempts go once old; the manifest's version, a running task's
    objects and old-layout objects a done result names stay. The clock is injected."""
    # An old-layout result, as written before this change, named by a done task.
    old = _create(client, episode, ["mp3_64"])
    legacy_key = f"episodes/{episode}/audio/mp3_64.mp3"
    blob = tmp_path / "legacy"
    blob.write_bytes(b"old layout")
    store.put_file(legacy_key, blob)
    report_progress(client, old, status="running")
    report_progress(
        client,
        old,
        status="completed",
        result={"outputs": {"mp3_64": {"key": legacy_key, "size": 10}}},
    )
    a = _finish(client, store, _create(client, episode, ["mp3_64"]), b"A", tmp_path)
    failed = _create(client, episode, ["mp3_64"])
    failed_params = _parameters(client, failed["workflowId"])
    _upload(store, failed_params, b"F", tmp_path)
    report_progress(client, failed, status="failed", error="x")
    b = _finish(client, store, _create(client, episode, ["mp3_64"]), b"B", tmp_path)
    running = _create(client, episode, ["mp3_64"])
    running_params = _parameters(client, running["workflowId"])
    _upload(store, running_params, b"R", tmp_path)
    report_progress(client, running, status="running")

    # Every file each result names: outputs, and the chapters and waveform files.
    a_keys = sorted(result_keys(a["result"]))
    b_keys = sorted(result_keys(b["result"]))
    assert len(a_keys) == len(b_keys) == 3
    failed_keys = attempt_output_keys(failed_params)
    running_keys = attempt_output_keys(running_params)

    def housekeeping(days_later: float) -> OutputHousekeeping:
        later = utcnow() + timedelta(days=days_later)
        return OutputHousekeeping(session_factory, store, 7, clock=lambda: later)

    # Younger than the retention period: nothing goes.
    assert housekeeping(6).run().removed == []
    # Unset (the default): nothing ever goes.
    never = OutputHousekeeping(
        session_factory, store, None, clock=lambda: utcnow() + timedelta(days=999)
    )
    assert never.run().removed == []
    assert all(store.exists(k) for k in [*a_keys, *failed_keys, legacy_key])
    # A dry run lists without removing.
    assert sorted(housekeeping(8).run(dry_run=True).removed) == sorted(a_keys + failed_keys)
    assert all(store.exists(k) for k in [*a_keys, *failed_keys])

    report = housekeeping(8).run()
    assert sorted(report.removed) == sorted(a_keys + failed_keys)
    assert not any(store.exists(k) for k in [*a_keys, *failed_keys])
    assert [_read(store, k, tmp_path) for k in b_keys] == [b"B"] * len(b_keys)
    assert all(store.exists(k) for k in running_keys)  # its task is still running
    assert store.exists(legacy_key)  # old layout: never swept
    _assert_manifest_names(store, episode, b, tmp_path)
    assert housekeeping(8).run().removed == []  # idempotent


def test_the_queries_agree_on_postgresql_and_sqlite(
    factory: sessionmaker[Session], store: ObjectStore
) -> None:
    """Which completion is current, and which episodes can hold superseded versions, on
    both databases (rows written directly: no API, no Prefect)."""
    from db.models import Task, TaskStatus

    now = utcnow()

    def add(
        session: Session, episode: str, statuses: list[WorkflowStatus], result: Any, age_s: int
    ) -> Task:
        task = Task(
            type="audio_processing",
            status=TaskStatus.DONE,
            episode_id=episode,
            payload={},
            result=result,
            attempts=len(statuses),
        )
        session.add(task)
        session.flush()
        for n, status in enumerate(statuses, start=1):
            session.add(
                Workflow(
                    name="audio-processing",
                    deployment_name="d",
                    task_id=task.id,
                    attempt=n,
                    status=status,
                    parameters={},
                    corrections=[],
                    completed_at=now - timedelta(seconds=age_s - n),
                )
            )
        return task

    done = WorkflowStatus.COMPLETED
    result = {"outputs": {"mp3_64": {"key": "k", "size": 1}}}
    with factory.begin() as session:
        add(session, "ep-one", [done], result, 100)
        older = add(session, "ep-two", [done], result, 100)
        newer = add(session, "ep-two", [done], result, 50)
        add(session, "ep-two", [done], None, 10)  # completed, result not yet there
        add(session, "ep-failed", [WorkflowStatus.FAILED], None, 100)
        add(session, "ep-retried", [WorkflowStatus.FAILED, done], result, 100)
    with factory() as session:
        current = current_completion(session, "ep-two")
        assert current is not None and current[0].id == newer.id != older.id
        assert current_completion(session, "ep-failed") is None
    housekeeping = OutputHousekeeping(factory, store, 7)
    assert housekeeping._with_superseded_versions() == ["ep-failed", "ep-retried", "ep-two"]
    since = now - timedelta(hours=1)
    assert housekeeping._recently_completed(since) == ["ep-one", "ep-retried", "ep-two"]
