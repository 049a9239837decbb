"""Cancel, retry, reprocess and reconcile, on PostgreSQL against a real Prefect server."""

from __future__ import annotations

import uuid
from dataclasses import replace
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from litestar.testing import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.states import Completed, Crashed, Failed, Pending, Running
from sqlalchemy import update
from sqlalchemy.orm import Session, sessionmaker

from core.settings import Settings
from core.storage import build_store
from db.base import utcnow
from db.models import Workflow
from domain.composition import build_services
from domain.reconciler import Reconciler
from tests.integration.conftest import AUTH, PROGRESS, create_task, report_progress

PAYLOAD = {"episodeId": "ep-rec", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_64"]}


@pytest.fixture
def reconciler(settings: Settings, session_factory: sessionmaker[Session]) -> Reconciler:
    return Reconciler(
        session_factory, settings, build_store(settings.storage), stale_after_s=60, retry_base_s=0
    )


def _create(client: TestClient, payload: dict[str, Any] = PAYLOAD) -> dict[str, Any]:
    return create_task(client, payload)


def _put_outputs(settings: Settings, parameters: dict[str, Any], tmp_path: Path) -> None:
    from domain.outputs import attempt_output_keys

    store = build_store(settings.storage)
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 100)
    for key in attempt_output_keys(parameters):
        store.put_file(key, blob)


# -- cancel -------------------------------------------------------------------------------


def test_cancel_stops_the_flow_run_and_ends_both_rows(
    client: TestClient, prefect: SyncPrefectClient
) -> None:
    task = _create(client)
    response = client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 200, response.text
    assert response.json()["status"] == "cancelled"
    workflow = client.get(f"/workflows/{task['workflowId']}").json()
    assert workflow["status"] == "cancelled"
    run = prefect.read_flow_run(uuid.UUID(task["workflowInstanceId"]))
    assert run.state is not None and run.state.type.value in ("CANCELLED", "CANCELLING")

    again = client.post(f"/tasks/{task['id']}/cancel")
    assert again.status_code == 409 and "only pending or processing" in again.json()["detail"]


def test_cancel_removes_partial_outputs_but_keeps_earlier_ones(
    client: TestClient, settings: Settings, tmp_path: Path
) -> None:
    from domain.outputs import attempt_output_keys

    store = build_store(settings.storage)
    earlier_key = "episodes/ep-partial/audio/mp3_64.mp3"  # the layout before attempt folders
    blob = tmp_path / "b"
    blob.write_bytes(b"earlier output")
    store.put_file(earlier_key, blob)
    task = _create(client, PAYLOAD | {"episodeId": "ep-partial", "encodingFormats": ["mp3_64"]})
    workflow = client.get(f"/workflows/{task['workflowId']}").json()
    partial_key = attempt_output_keys(workflow["parameters"])[0]  # its mp3_64
    store.put_file(partial_key, blob)  # as if the attempt had uploaded before being cancelled
    assert client.post(f"/tasks/{task['id']}/cancel").status_code == 200
    assert not store.exists(partial_key)
    assert store.exists(earlier_key)


def test_finished_tasks_cannot_be_cancelled(client: TestClient) -> None:
    task = _create(client)
    report_progress(client, task, status="running")
    report_progress(client, task, status="completed", result={"outputs": {}})
    response = client.post(f"/tasks/{task['id']}/cancel")
    assert response.status_code == 409
    assert client.get(f"/tasks/{task['id']}").json()["status"] == "done"
    assert client.post(f"/tasks/{uuid.uuid4()}/cancel").status_code == 404


# -- retry --------------------------------------------------------------------------------


def test_retry_makes_a_new_attempt_with_its_own_flow_run(
    client: TestClient, prefect: SyncPrefectClient
) -> None:
    task = _create(client)
    report_progress(client, task, status="failed", error="storage down", errorKind="transient")
    retried = client.post(f"/tasks/{task['id']}/retry")
    assert retried.status_code == 201, retried.text
    body = retried.json()
    assert body["status"] == "pending" and body["attempts"] == 2
    assert body["workflowId"] != task["workflowId"]
    assert body["workflowInstanceId"] != task["workflowInstanceId"]
    attempts = client.get(f"/tasks/{task['id']}/workflows").json()
    assert [w["attempt"] for w in attempts] == [1, 2]
    assert [w["status"] for w in attempts] == ["failed", "queued"]
    run = prefect.read_flow_run(uuid.UUID(body["workflowInstanceId"]))
    assert run.parameters["params"]["workflow_id"] == body["workflowId"]

    # The old attempt's late news changes its own row only, never the task.
    late = client.post(
        PROGRESS,
        json={"taskId": task["id"], "workflowId": task["workflowId"], "progress": 50},
        headers=AUTH,
    )
    assert late.status_code == 409  # that attempt is already terminal

    assert client.post(f"/tasks/{task['id']}/retry").status_code == 409  # now pending


def test_done_and_running_tasks_cannot_be_retried(client: TestClient) -> None:
    task = _create(client)
    report_progress(client, task, status="running")
    assert client.post(f"/tasks/{task['id']}/retry").status_code == 409
    report_progress(client, task, status="completed")
    response = client.post(f"/tasks/{task['id']}/retry")
    assert response.status_code == 409 and "done" in response.json()["detail"]


# -- reconcile ----------------------------------------------------------------------------


def test_prefect_crash_without_hook_becomes_crashed(
    client: TestClient, prefect: SyncPrefectClient, reconciler: Reconciler
) -> None:
    task = _create(client)
    report_progress(client, task, status="running", progress=30)
    run_id = uuid.UUID(task["workflowInstanceId"])
    prefect.set_flow_run_state(run_id, Running(), force=True)
    prefect.set_flow_run_state(run_id, Crashed(message="process killed"), force=True)

    report = reconciler.reconcile()
    assert [(c.from_status, c.to_status) for c in report.corrections] == [("running", "crashed")]
    row = client.get(f"/tasks/{task['id']}").json()
    assert row["status"] == "failed" and row["errorKind"] == "transient"
    assert "process killed" in row["error"]
    workflow = client.get(f"/workflows/{task['workflowId']}").json()
    assert workflow["corrections"][-1]["to"] == "crashed"
    assert workflow["corrections"][-1]["reason"]
    assert reconciler.reconcile().corrections == []  # idempotent


def test_lost_flow_run_becomes_crashed(
    client: TestClient, prefect: SyncPrefectClient, reconciler: Reconciler
) -> None:
    task = _create(client)
    prefect.delete_flow_run(uuid.UUID(task["workflowInstanceId"]))
    report = reconciler.reconcile()
    assert [c.to_status for c in report.corrections] == ["crashed"]
    assert "no longer exists" in client.get(f"/tasks/{task['id']}").json()["error"]


def test_running_without_progress_past_the_window_becomes_crashed(
    client: TestClient,
    prefect: SyncPrefectClient,
    reconciler: Reconciler,
    session_factory: sessionmaker[Session],
) -> None:
    task = _create(client)
    report_progress(client, task, status="running")
    prefect.set_flow_run_state(uuid.UUID(task["workflowInstanceId"]), Running(), force=True)
    assert reconciler.reconcile().corrections == []  # fresh: left alone
    with session_factory.begin() as session:
        session.execute(
            update(Workflow)
            .where(Workflow.id == uuid.UUID(task["workflowId"]))
            .values(updated_at=utcnow() - timedelta(minutes=5))
        )
    report = reconciler.reconcile()
    assert [c.to_status for c in report.corrections] == ["crashed"]
    assert "no progress" in report.corrections[0].reason


def test_a_cancelled_task_whose_run_still_runs_silently_stays_cancelled(
    client: TestClient,
    prefect: SyncPrefectClient,
    reconciler: Reconciler,
    session_factory: sessionmaker[Session],
) -> None:
    """Only Prefect's Completed lifts a terminal row (the lifecycle's rule for corrections).
    A stale Running run behind a cancelled row once made it crashed: a failed, transient
    task that the reconciler then retried, against the person who cancelled it."""
    task = _create(client)
    report_progress(client, task, status="running")
    assert client.post(f"/tasks/{task['id']}/cancel").status_code == 200
    run_id = uuid.UUID(task["workflowInstanceId"])
    prefect.set_flow_run_state(run_id, Running(), force=True)  # the run did not stop
    with session_factory.begin() as session:
        session.execute(
            update(Workflow)
            .where(Workflow.id == uuid.UUID(task["workflowId"]))
            .values(updated_at=utcnow() - timedelta(minutes=5))
        )
    assert reconciler.reconcile().corrections == []
    assert reconciler.retry_transient_failures().retries == []
    row = client.get(f"/tasks/{task['id']}").json()
    assert (row["status"], row["attempts"]) == ("cancelled", 1)
    assert client.get(f"/workflows/{task['workflowId']}").json()["corrections"] == []


def test_pending_past_the_window_is_crashed_here_and_in_prefect(
    client: TestClient, prefect: SyncPrefectClient, reconciler: Reconciler
) -> None:
    """A worker that dies between claiming a run and starting it leaves the run Pending."""
    task = _create(client)
    run_id = uuid.UUID(task["workflowInstanceId"])
    prefect.set_flow_run_state(run_id, Pending(), force=True)
    assert reconciler.reconcile().corrections == []  # claimed a moment ago: left alone
    later = utcnow() + timedelta(seconds=reconciler.stale_after_s + 5)
    report = reconciler.reconcile(now=later)
    assert [(c.from_status, c.to_status) for c in report.corrections] == [("queued", "crashed")]
    assert "Pending" in report.corrections[0].reason
    row = client.get(f"/tasks/{task['id']}").json()
    assert row["status"] == "failed" and row["errorKind"] == "transient"
    state = prefect.read_flow_run(run_id).state
    assert state is not None and state.type.value == "CRASHED"
    assert reconciler.reconcile(now=later).corrections == []  # idempotent


def test_a_backlog_waiting_in_the_queue_is_left_alone(
    client: TestClient, reconciler: Reconciler
) -> None:
    """Scheduled runs (waiting for a free worker) are never taken for lost ones."""
    task = _create(client)
    later = utcnow() + timedelta(seconds=reconciler.stale_after_s + 5)
    assert reconciler.reconcile(now=later).corrections == []
    assert client.get(f"/tasks/{task['id']}").json()["status"] == "pending"


def test_completed_in_prefect_counts_only_with_all_outputs(
    client: TestClient,
    prefect: SyncPrefectClient,
    reconciler: Reconciler,
    settings: Settings,
    tmp_path: Path,
) -> None:
    task = _create(client, PAYLOAD | {"episodeId": "ep-complete"})
    report_progress(client, task, status="running")
    run_id = uuid.UUID(task["workflowInstanceId"])
    prefect.set_flow_run_state(run_id, Completed(), force=True)
    # Outputs missing: not trusted.
    report = reconciler.reconcile()
    assert [c.to_status for c in report.corrections] == ["failed"]
    assert "outputs missing" in client.get(f"/tasks/{task['id']}").json()["error"]

    # Prefect's word plus the outputs now present: the reconciler alone may lift a terminal row.
    workflow = client.get(f"/workflows/{task['workflowId']}").json()
    _put_outputs(settings, workflow["parameters"], tmp_path)
    report = reconciler.reconcile()
    assert [(c.from_status, c.to_status) for c in report.corrections] == [("failed", "completed")]
    row = client.get(f"/tasks/{task['id']}").json()
    assert row["status"] == "done" and row["error"] is None
    key = f"episodes/ep-complete/tasks/{task['id']}/a1/audio/mp3_64.mp3"
    assert row["result"]["outputs"]["mp3_64"]["key"] == key
    # The chapters and waveform files were there too: the rebuilt result names them.
    folder = f"episodes/ep-complete/tasks/{task['id']}/a1/"
    assert row["result"]["chapters"] == {"key": f"{folder}chapters/chapters.json"}
    assert row["result"]["waveform"] == {"key": f"{folder}waveform/waveform.json"}


def test_a_completed_run_must_have_its_waveform_but_may_lack_chapters(
    client: TestClient,
    prefect: SyncPrefectClient,
    reconciler: Reconciler,
    settings: Settings,
    tmp_path: Path,
) -> None:
    """Chapters from the source exist only if the source had some; the waveform the task
    asked for always does."""
    from domain.outputs import expected_outputs

    task = _create(client, PAYLOAD | {"episodeId": "ep-wave", "transcribe": False})
    workflow = client.get(f"/workflows/{task['workflowId']}").json()
    expected = expected_outputs(workflow["parameters"])
    assert expected.waveform is not None and expected.chapters is not None
    store = build_store(settings.storage)
    blob = tmp_path / "blob"
    blob.write_bytes(b"x" * 10)
    for key in expected.audio.values():
        store.put_file(key, blob)
    prefect.set_flow_run_state(uuid.UUID(task["workflowInstanceId"]), Completed(), force=True)
    report = reconciler.reconcile()
    assert [c.to_status for c in report.corrections] == ["failed"]
    error = client.get(f"/tasks/{task['id']}").json()["error"]
    assert error == f"outputs missing: {expected.waveform}"

    store.put_file(expected.waveform, blob)
    report = reconciler.reconcile()
    assert [(c.from_status, c.to_status) for c in report.corrections] == [("failed", "completed")]
    result = client.get(f"/tasks/{task['id']}").json()["result"]
    assert result["waveform"] == {"key": expected.waveform}
    assert "chapters" not in result and result["reconstructed"] is True


def test_late_correction_crashed_then_completed(
    client: TestClient,
    prefect: SyncPrefectClient,
    reconciler: Reconciler,
    settings: Settings,
    tmp_path: Path,
) -> None:
    task = _create(client, PAYLOAD | {"episodeId": "ep-late"})
    report_progress(client, task, status="crashed", error="heartbeat lost", errorKind="transient")
    workflow = client.get(f"/workflows/{task['workflowId']}").json()
    _put_outputs(settings, workflow["parameters"], tmp_path)
    prefect.set_flow_run_state(uuid.UUID(task["workflowInstanceId"]), Completed(), force=True)
    report = reconciler.reconcile()
    assert [(c.from_status, c.to_status) for c in report.corrections] == [("crashed", "completed")]
    assert client.get(f"/tasks/{task['id']}").json()["status"] == "done"


def test_dry_run_changes_nothing(
    client: TestClient, prefect: SyncPrefectClient, reconciler: Reconciler
) -> None:
    task = _create(client)
    prefect.set_flow_run_state(
        uuid.UUID(task["workflowInstanceId"]), Failed(message="x"), force=True
    )
    before = client.get(f"/tasks/{task['id']}").json()
    report = reconciler.reconcile(dry_run=True)
    assert [c.to_status for c in report.corrections] == ["failed"]
    assert client.get(f"/tasks/{task['id']}").json() == before


def test_prefect_unreachable_skips_rows_and_changes_nothing(
    client: TestClient, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    task = _create(client)
    dead = replace(settings, prefect=replace(settings.prefect, api_url="http://127.0.0.1:9/api"))
    reconciler = Reconciler(session_factory, dead, build_store(settings.storage))
    before = client.get(f"/tasks/{task['id']}").json()
    report = reconciler.reconcile()
    assert report.corrections == [] and len(report.skipped) == 1
    assert client.get(f"/tasks/{task['id']}").json() == before


# -- automatic retries --------------------------------------------------------------------


def test_transient_failures_are_retried_until_the_budget_is_spent(
    client: TestClient, reconciler: Reconciler, settings: Settings
) -> None:
    transient = _create(client, PAYLOAD | {"episodeId": "ep-transient"})
    report_progress(client, transient, status="failed", error="storage down", errorKind="transient")
    permanent = _create(client, PAYLOAD | {"episodeId": "ep-permanent"})
    report_progress(client, permanent, status="failed", error="not audio", errorKind="permanent")

    report = reconciler.retry_transient_failures()
    assert [r.task_id for r in report.retries] == [transient["id"]]
    assert client.get(f"/tasks/{permanent['id']}").json()["attempts"] == 1

    for _ in range(settings.max_attempts):
        row = client.get(f"/tasks/{transient['id']}").json()
        if row["status"] == "pending":
            current = {"id": row["id"], "workflowId": row["workflowId"]}
            report_progress(
                client, current, status="failed", error="storage down", errorKind="transient"
            )
        reconciler.retry_transient_failures()
    row = client.get(f"/tasks/{transient['id']}").json()
    assert row["attempts"] == settings.max_attempts
    assert row["status"] == "failed"


def test_backoff_delays_the_retry(
    client: TestClient, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    task = _create(client)
    report_progress(client, task, status="failed", error="storage down", errorKind="transient")
    patient = Reconciler(
        session_factory, settings, build_store(settings.storage), retry_base_s=3600
    )
    assert patient.retry_transient_failures().retries == []


# -- reprocess ----------------------------------------------------------------------------


def test_reprocess_adds_a_format_and_keeps_earlier_outputs(
    client: TestClient, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    task = _create(client, PAYLOAD | {"episodeId": "ep-add", "encodingFormats": ["mp3_128"]})
    first = {
        "outputs": {"mp3_128": {"key": "episodes/ep-add/audio/mp3_128.mp3"}},
        "transcript": {"language": "en", "keys": {}},
    }
    report_progress(client, task, status="completed", result=first)

    service = build_services(settings, session_factory=session_factory).tasks
    updated = service.reprocess(uuid.UUID(task["id"]), ["opus_64"])
    assert updated.payload["encodingFormats"] == ["mp3_128", "opus_64"]
    assert updated.attempts == 2
    workflow = client.get(f"/workflows/{updated.workflow_id}").json()
    assert workflow["parameters"]["encoding_formats"] == ["opus_64"]
    assert workflow["parameters"]["transcribe"] is False

    second = {"outputs": {"opus_64": {"key": "episodes/ep-add/audio/opus_64.opus"}}}
    current = {"id": task["id"], "workflowId": str(updated.workflow_id)}
    report_progress(client, current, status="completed", result=second)
    result = client.get(f"/tasks/{task['id']}").json()["result"]
    assert set(result["outputs"]) == {"mp3_128", "opus_64"}
    assert result["transcript"]["language"] == "en"


def test_adding_a_format_keeps_the_waveform_the_task_has(
    client: TestClient, settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """The waveform is drawn from the source, not a format: an attempt that only adds a
    format does not make it again, and the task's result keeps the one it has. A task
    without one (done before waveforms existed) gets one."""
    service = build_services(settings, session_factory=session_factory).tasks
    for episode, first_waveform in (("ep-wave-kept", True), ("ep-wave-new", False)):
        task = _create(client, PAYLOAD | {"episodeId": episode, "encodingFormats": ["mp3_128"]})
        first: dict[str, Any] = {"outputs": {"mp3_128": {"key": f"episodes/{episode}/a.mp3"}}}
        if first_waveform:
            first["waveform"] = {"key": f"episodes/{episode}/waveform.json"}
        report_progress(client, task, status="completed", result=first)
        updated = service.reprocess(uuid.UUID(task["id"]), ["opus_64"])
        workflow = client.get(f"/workflows/{updated.workflow_id}").json()
        assert workflow["parameters"]["encoding_formats"] == ["opus_64"]
        assert workflow["parameters"]["waveform"] is (not first_waveform)

        second = {"outputs": {"opus_64": {"key": f"episodes/{episode}/b.opus"}}}
        current = {"id": task["id"], "workflowId": str(updated.workflow_id)}
        report_progress(client, current, status="completed", result=second)
        result = client.get(f"/tasks/{task['id']}").json()["result"]
        assert set(result["outputs"]) == {"mp3_128", "opus_64"}
        assert ("waveform" in result) is first_waveform


def test_reprocess_endpoint_starts_a_reprocessing_run(
    client: TestClient, prefect: SyncPrefectClient
) -> None:
    response = client.post(
        "/reprocess", json={"addFormats": ["opus_64"], "status": "done", "dryRun": True}
    )
    assert response.status_code == 201, response.text
    run = prefect.read_flow_run(uuid.UUID(response.json()["flowRunId"]))
    assert run.parameters["params"]["add_formats"] == ["opus_64"]
    assert run.parameters["params"]["dry_run"] is True
    bad = client.post("/reprocess", json={"addFormats": ["mp3_999"]})
    assert bad.status_code == 422 and "mp3_999" in bad.json()["detail"]
