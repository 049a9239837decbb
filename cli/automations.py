"""Prefect automations audioflow relies on, created (once) by `audioflow deploy`.

"Crash zombie flow runs": a flow run that stops sending heartbeats (its process was
SIGKILLed, its machine died) is marked Crashed by Prefect after `ZOMBIE_WINDOW_S`, which
the reconciler then copies to the workflow and task. Runs send a heartbeat every
`PREFECT_FLOWS_HEARTBEAT_FREQUENCY` seconds (30 on the stacks this project starts).
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


if __name__ == "__main__":
    created = ensure_zombie_automation()
    print(f"automation {ZOMBIE_AUTOMATION!r} {'created' if created else 'already exists'}")
