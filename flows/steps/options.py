"""The task options every step shares: retry what may pass (storage, network), never bad
input, and cache nothing (a step's inputs are run folders and reporters, not values).

A step is declared with `@step("name")` instead of repeating the options on each `@task`;
a step adds only what is its own (a `task_run_name`, a concurrency tag).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any, ParamSpec, TypeVar

from prefect import Task, task
from prefect.cache_policies import NO_CACHE

from domain.contracts import ErrorKind
from flows.errors import classify

P = ParamSpec("P")
R = TypeVar("R")

#: Delays between the tries of a step that failed for a transient reason.
RETRY_DELAYS_S: list[float] = [2.0, 5.0, 10.0]


def retry_if_transient(_task: Any, _task_run: Any, state: Any) -> bool:
    """Prefect `retry_condition_fn`: True when the step's exception is transient."""
    try:
        state.result()
    except Exception as exc:
        return classify(exc) is ErrorKind.TRANSIENT
    return False


#: The preset: what `step` passes to `prefect.task` unless the step says otherwise.
STEP_OPTIONS: dict[str, Any] = {
    "retries": len(RETRY_DELAYS_S),
    "retry_delay_seconds": RETRY_DELAYS_S,
    "retry_condition_fn": retry_if_transient,
    "cache_policy": NO_CACHE,
}


def step(name: str, **options: Any) -> Callable[[Callable[P, R]], Task[P, R]]:
    """`@task` with the preset; `options` (any `prefect.task` keyword) add to or override it."""
    decorator: Callable[[Callable[P, R]], Task[P, R]] = task(
        name=name, **{**STEP_OPTIONS, **options}
    )
    return decorator
