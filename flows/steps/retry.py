"""Retry policy shared by the steps: retry what may pass (storage, network), never bad input."""

from __future__ import annotations

from typing import Any

from domain.contracts import ErrorKind
from flows.errors import classify

#: Delays between the tries of a step that failed for a transient reason.
RETRY_DELAYS_S: list[float] = [2.0, 5.0, 10.0]


def retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: True when the step's exception is transient."""
    try:
        state.result()
    except Exception as exc:
        return classify(exc) is ErrorKind.TRANSIENT
    return False
