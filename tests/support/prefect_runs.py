"""Reading flow runs back from a test's Prefect server: a run's state, and the live runs of
one task (the dispatcher tags each run `task:<id>`), for tests that must see no second run."""

from __future__ import annotations

import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient

#: State types of a run that is, or may still become, running.
LIVE_STATES = frozenset({"SCHEDULED", "PENDING", "RUNNING", "CANCELLING", "PAUSED"})


def run_state(prefect: SyncPrefectClient, run_id: str) -> str | None:
    """The run's state type (`RUNNING`, `CANCELLED`, ...), None for a run without a state."""
    state = prefect.read_flow_run(uuid.UUID(run_id)).state
    return state.type.value if state is not None else None


def live_runs(prefect: SyncPrefectClient, task_id: str | uuid.UUID) -> list[str]:
    """Ids of the task's flow runs whose state is live (`LIVE_STATES`)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    runs = prefect.read_flow_runs(
        flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"task:{task_id}"]))
    )
    return [str(r.id) for r in runs if r.state is not None and r.state.type.value in LIVE_STATES]
