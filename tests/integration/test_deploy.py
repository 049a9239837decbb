"""`deploy()` (what `audioflow deploy` runs) registers both deployments, the schedule and the
zombie-run automation, and can run again without changing anything; the pull step names no
path of the deploying machine."""

from __future__ import annotations

from cli.automations import ZOMBIE_AUTOMATION, ZOMBIE_WINDOW_S
from cli.stack import MAINTENANCE_POOL, WORK_POOL, deploy
from tests.prefect_fixtures import PrefectServer, prefect_client


def test_deploy_registers_everything_and_is_idempotent(prefect_server: PrefectServer) -> None:
    # The fixture already deployed once: this is the second time. The deploying machine's
    # AUDIOFLOW_PROJECT_DIR must not end up in the deployments (workers elsewhere have
    # their checkout at another path): the pull step is resolved on the worker.
    deploy({**prefect_server.env, "AUDIOFLOW_PROJECT_DIR": "/the/deployers/checkout"})
    with prefect_client(prefect_server.url) as client:
        audio = client.read_deployment_by_name("audio-processing/audio-processing")
        repro = client.read_deployment_by_name("reprocessing/reprocessing")
        assert audio.work_pool_name == WORK_POOL
        assert (audio.job_variables or {}).get("command") == "python -m flows.launch"
        assert repro.work_pool_name == MAINTENANCE_POOL
        for deployment in (audio, repro):
            assert deployment.pull_steps == [
                {
                    "prefect.deployments.steps.set_working_directory": {
                        "directory": "{{ $AUDIOFLOW_PROJECT_DIR }}"
                    }
                }
            ]
        # The API's runs skip the server's schema check; hand-started repairs keep it.
        assert audio.enforce_parameter_schema is False
        assert repro.enforce_parameter_schema is True
        # The run form is the parameters model, typed and documented; the flat fields that
        # older runs carry are accepted but not offered in the form.
        schema = audio.parameter_openapi_schema or {}
        assert list(schema["properties"]) == ["params"]
        assert schema["properties"]["params"]["$ref"] == "#/definitions/AudioProcessingParameters"
        model = schema["definitions"]["AudioProcessingParameters"]
        assert "mp3_320" in model["properties"]["encoding_formats"]["description"]
        assert model["properties"]["task_id"]["format"] == "uuid"
        assert set(model["required"]) == {"task_id", "workflow_id", "episode_id", "audio_key"}
        assert [s.schedule.cron for s in repro.schedules] == ["*/5 * * * *"]  # type: ignore[union-attr]
        automations = client.read_automations_by_name(ZOMBIE_AUTOMATION)
    assert len(automations) == 1
    trigger = automations[0].trigger
    assert trigger.within.total_seconds() == ZOMBIE_WINDOW_S  # type: ignore[union-attr]
    assert automations[0].actions[0].type == "change-flow-run-state"
