"""`audioflow status` output for a task whose flow run is not created yet, and one that has it."""

from __future__ import annotations

from typing import Any

from cli.render import task_details


def _task(**fields: Any) -> dict[str, Any]:
    return {
        "id": "t-1",
        "status": "pending",
        "progress": 0,
        "attempts": 1,
        "workflowId": "w-1",
        "workflowInstanceId": None,
        "episodeId": "ep-1",
        **fields,
    }


def test_a_task_right_after_post_says_its_run_is_being_created() -> None:
    text = task_details(_task())
    assert "its Prefect flow run is being created" in text
    assert "None" not in text


def test_a_dispatched_task_shows_its_flow_run() -> None:
    text = task_details(_task(workflowInstanceId="run-9"))
    assert "(Prefect flow run run-9)" in text
