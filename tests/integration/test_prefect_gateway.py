"""The gateway against the run's real Prefect server: a deployment re-created under a new id
(`prefect deploy` again) is looked up afresh instead of failing every run it starts."""

from __future__ import annotations

import uuid

import pytest

from core.settings import Settings
from domain import prefect_gateway


def test_a_stale_cached_deployment_id_is_looked_up_again(
    settings: Settings, monkeypatch: pytest.MonkeyPatch
) -> None:
    deployment = settings.prefect.audio_deployment
    # What the cache holds after the deployment was deleted and deployed again.
    stale = uuid.uuid4()
    monkeypatch.setitem(prefect_gateway._deployment_ids, deployment, stale)

    info = prefect_gateway.start_flow_run(
        settings.prefect.api_url,
        deployment,
        {
            "task_id": str(uuid.uuid4()),
            "workflow_id": str(uuid.uuid4()),
            "episode_id": "ep-gateway",
            "audio_key": "uploads/x/a.mp3",
            "encoding_formats": ["mp3_64"],
            "transcribe": False,
        },
        idempotency_key=f"gateway-test-{uuid.uuid4()}",
        name="gateway-test",
        tags=["test"],
    )

    assert info.state_type == "SCHEDULED"
    assert prefect_gateway._deployment_ids[deployment] not in (None, stale)
