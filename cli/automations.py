"""Prefect automations and limits audioflow relies on, set by `audioflow deploy`.

"Crash zombie flow runs": a flow run that stops sending heartbeats (its process was
SIGKILLed, its machine died) is marked Crashed by Prefect after `ZOMBIE_WINDOW_S`, which
the reconciler then copies to the workflow and task. Runs send a heartbeat every
`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (30 on the stacks this project starts).

The transcription limit: how many `transcribe` tasks run at once across the pool
(`AUDIOFLOW_TRANSCRIPTION_SLOTS`, see `core.concurrency`).
"""

from __future__ import annotations

from datetime import timedelta

ZOMBIE_AUTOMATION = "audioflow: crash zombie flow runs"
ZOMBIE_WINDOW_S = 90


def ensure_zombie_automation() -> bool:
    """Create the automation unless one with its name exists; True if created."""
    from prefect.automations import Automation
    from prefect.client.schemas.objects import StateType
    from prefect.events.actions import ChangeFlowRunState
    from prefect.events.schemas.automations import EventTrigger, Posture
    from prefect.events.schemas.events import ResourceSpecification

    try:
        _existing = Automation.read(name=ZOMBIE_AUTOMATION)
        return False
    except ValueError:
        pass
    Automation(
        name=ZOMBIE_AUTOMATION,
        description="Mark flow runs Crashed when their heartbeats stop.",
        trigger=EventTrigger(
            after={"prefect.flow-run.heartbeat"},
            expect={
                "prefect.flow-run.heartbeat",
                "prefect.flow-run.Completed",
                "prefect.flow-run.Failed",
                "prefect.flow-run.Cancelled",
                "prefect.flow-run.Crashed",
            },
            match=ResourceSpecification({"prefect.resource.id": ["prefect.flow-run.*"]}),
            for_each={"prefect.resource.id"},
            posture=Posture.Proactive,
            threshold=1,
            within=timedelta(seconds=ZOMBIE_WINDOW_S),
        ),
        actions=[
            ChangeFlowRunState(
                name=None,
                force=False,
                state=StateType.CRASHED,
                message=f"no heartbeat for {ZOMBIE_WINDOW_S} s: the flow run's process is gone",
            )
        ],
    ).create()
    return True


def ensure_transcription_limit(slots: int) -> str:
    """Create or resize the transcription tag's limit; returns its name."""
    from prefect.client.orchestration import get_client

    from core.concurrency import TRANSCRIPTION_TAG, tag_limit_name

    name = tag_limit_name(TRANSCRIPTION_TAG)
    with get_client(sync_client=True) as client:
        client.upsert_global_concurrency_limit_by_name(name, slots)
    return name


if __name__ == "__main__":
    from core.settings import get_settings

    created = ensure_zombie_automation()
    print(f"automation {ZOMBIE_AUTOMATION!r} {'created' if created else 'already exists'}")
    slots = get_settings().whisper.slots
    print(f"concurrency limit {ensure_transcription_limit(slots)!r}: {slots} slot(s)")
