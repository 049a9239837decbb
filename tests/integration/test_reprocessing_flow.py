"""The reprocessing flow, run for real (its own process, as a worker would run it) against
the test PostgreSQL database and Prefect server: each pass is a task run of its own in
Prefect (what the UI shows), and the summary still reports what every pass did."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

from litestar.testing import TestClient
from prefect.client.orchestration import SyncPrefectClient
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId
from prefect.states import Failed

from core.settings import Settings
from tests.integration.conftest import create_task
from tests.prefect_fixtures import PrefectServer

ROOT = Path(__file__).resolve().parents[2]
PAYLOAD = {"episodeId": "ep-passes", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_64"]}
PASSES = {"reconcile", "retry-failed", "reprocess-selection", "housekeeping", "sweep-temp"}

# Runs the flow in this process (no deployment, no worker) and prints its run id and summary.
RUN_FLOW = """
import json, sys
from flows.reprocessing import ReprocessParameters, reprocessing
state = reprocessing(ReprocessParameters.model_validate_json(sys.argv[1]), return_state=True)
print(json.dumps({"flowRunId": str(state.state_details.flow_run_id), "summary": state.result()}))
"""


def _run_flow(
    settings: Settings, prefect_server: PrefectServer, temp_dir: Path, params: dict[str, Any]
) -> dict[str, Any]:
    env = {
        **prefect_server.env,
        "AUDIOFLOW_ENV": "test",
        "AUDIOFLOW_HOME": str(settings.home),
        "DATABASE_URL": settings.database.url,
        "AUDIOFLOW_STORAGE": "local",
        "AUDIOFLOW_STORAGE_DIR": str(settings.storage.local_dir),
        "AUDIOFLOW_TEMP_DIR": str(temp_dir),
        "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")]),
    }
    done = subprocess.run(
        [sys.executable, "-c", RUN_FLOW, json.dumps(params)],
        env=env,
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=180,
    )
    assert done.returncode == 0, done.stderr[-4000:]
    out: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return out


def test_each_pass_is_a_task_run_and_the_summary_reports_them(
    client: TestClient,
    prefect: SyncPrefectClient,
    prefect_server: PrefectServer,
    settings: Settings,
    tmp_path: Path,
) -> None:
    # A run that failed in Prefect while its row still says queued: the reconcile pass's.
    task = create_task(client, PAYLOAD)
    prefect.set_flow_run_state(
        uuid.UUID(task["workflowInstanceId"]), Failed(message="worker lost"), force=True
    )
    # An upload spool file a killed API process left a day ago: the sweep's.
    temp_dir = tmp_path / "temp"
    temp_dir.mkdir()
    spool = temp_dir / "audioflow-upload-killed"
    spool.write_bytes(b"x" * 1024)
    day_ago = time.time() - 24 * 3600 - 60
    os.utime(spool, (day_ago, day_ago))

    out = _run_flow(
        settings, prefect_server, temp_dir, {"task_ids": [task["id"]], "stale_after_s": 60}
    )

    summary = out["summary"]
    assert summary["checked"] >= 1
    assert [(c["task_id"], c["to_status"]) for c in summary["corrections"]] == [
        (task["id"], "failed")
    ]
    assert summary["retries"] == []  # failed a moment ago: its backoff has not passed
    assert [(r["taskId"], r["outcome"]) for r in summary["reprocessed"]] == [
        (task["id"], "attempt 2: pending")
    ]
    assert summary["sweptTempFolders"] == [spool.name]
    assert not spool.exists()
    assert client.get(f"/tasks/{task['id']}").json()["attempts"] == 2

    runs = prefect.read_task_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[uuid.UUID(out["flowRunId"])]))
    )
    states = {run.name.rsplit("-", 1)[0]: run.state.type.value for run in runs if run.state}
    assert states == {name: "COMPLETED" for name in PASSES}
