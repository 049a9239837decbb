"""The one module of the API that talks to Prefect.

Everything here is synchronous on purpose: services run in Litestar's thread pool, and
Prefect's `run_deployment` inside an `async def` silently returns an un-awaited coroutine
(no run, no error). The sync client has no such trap.

Idempotency keys are namespaced by the caller (deployment, task id, attempt): Prefect
dedupes per *flow* and forever, so a bare task id would block every later attempt.
"""

from __future__ import annotations

import contextlib
import threading
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from core.concurrency import tag_limit_name
from core.errors import NotFoundError, UpstreamUnavailableError


@dataclass(frozen=True)
class FlowRunInfo:
    """What the API needs to know about a flow run."""

    id: str
    name: str
    state_type: str | None  # SCHEDULED, PENDING, RUNNING, COMPLETED, FAILED, CRASHED, ...
    state_name: str | None
    state_message: str | None
    parameters: dict[str, Any]
    tags: list[str]
    #: When the run entered its current state (Prefect's clock).
    state_since: datetime | None = None
    idempotency_key: str | None = None


_deployment_ids: dict[str, uuid.UUID] = {}
_lock = threading.Lock()


#: Prefect's client retries 429/5xx answers up to 5 times with exponential backoff (about a
#: minute in all); an HTTP request should not wait that long, so the gateway allows three
#: (about 15 s of backoff), enough to ride out a busy Prefect server's 503s.
CLIENT_MAX_RETRIES = 3


#: One open client per (API URL, timeout) in this process, shared by all request threads
#: (httpx's client is thread-safe). Building a `SyncPrefectClient` costs ~80 ms of CPU
#: (an SSL context, settings), and applying the retry bound with `temporary_settings`
#: another ~20-45 ms: measured in bench/, that was most of `POST /tasks`.
_clients: dict[tuple[str, float], Any] = {}
_bounded_settings: list[Any] = []


def _new_client(api_url: str, timeout_s: float) -> Any:
    # Built from our own settings rather than `get_client()`: with no URL, Prefect would
    # quietly start a throwaway in-process server instead of failing.
    from prefect.client.orchestration import SyncPrefectClient
    from prefect.settings import PREFECT_API_AUTH_STRING, PREFECT_API_KEY

    client = SyncPrefectClient(
        api_url,
        auth_string=PREFECT_API_AUTH_STRING.value(),
        api_key=PREFECT_API_KEY.value(),
        httpx_settings={"timeout": timeout_s},
    )
    client.__enter__()  # opened once; closed by close_clients() when the app stops
    return client


def _shared_client(api_url: str, timeout_s: float) -> Any:
    with _lock:
        client = _clients.get((api_url, timeout_s))
        if client is None:
            client = _clients[(api_url, timeout_s)] = _new_client(api_url, timeout_s)
        return client


def _retry_bound() -> Any:
    """A settings context with Prefect's client retries bounded (built once, entered per call).

    The retry count is read from the current settings at every request, so it cannot be
    set on the client itself; entering a prebuilt context costs microseconds.
    """
    import prefect.context
    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES, get_current_settings

    current = prefect.context.SettingsContext.get()
    if current is None:  # cannot happen after `import prefect` (it sets a global context)
        return contextlib.nullcontext()
    with _lock:
        if not _bounded_settings:
            _bounded_settings.append(
                get_current_settings().copy_with_update(
                    updates={PREFECT_CLIENT_MAX_RETRIES: CLIENT_MAX_RETRIES}
                )
            )
        settings = _bounded_settings[0]
    return prefect.context.SettingsContext(profile=current.profile, settings=settings)


@contextlib.contextmanager
def _client(api_url: str, timeout_s: float) -> Iterator[Any]:
    if not api_url:
        raise UpstreamUnavailableError("PREFECT_API_URL is not set; cannot reach Prefect")
    client = _shared_client(api_url, timeout_s)
    with _retry_bound():
        yield client


def close_clients() -> None:
    """Close this process's Prefect clients (the app's shutdown hook)."""
    with _lock:
        clients = list(_clients.values())
        _clients.clear()
    for client in clients:
        with contextlib.suppress(Exception):
            client.__exit__(None, None, None)


def _unavailable(exc: Exception) -> UpstreamUnavailableError:
    return UpstreamUnavailableError(f"Prefect API unreachable: {type(exc).__name__}: {exc}")


def _deployment_id(client: Any, deployment_name: str) -> uuid.UUID:
    from prefect.exceptions import ObjectNotFound

    with _lock:
        cached = _deployment_ids.get(deployment_name)
    if cached is not None:
        return cached
    try:
        deployment = client.read_deployment_by_name(deployment_name)
    except ObjectNotFound as exc:
        raise UpstreamUnavailableError(
            f"Prefect deployment {deployment_name!r} does not exist; run `audioflow deploy`"
        ) from exc
    with _lock:
        _deployment_ids[deployment_name] = deployment.id
    return deployment.id


def _info(flow_run: Any) -> FlowRunInfo:
    state = flow_run.state
    return FlowRunInfo(
        id=str(flow_run.id),
        name=flow_run.name,
        state_type=state.type.value if state is not None else None,
        state_name=state.name if state is not None else None,
        state_message=state.message if state is not None else None,
        parameters=dict(flow_run.parameters or {}),
        tags=list(flow_run.tags or []),
        state_since=state.timestamp if state is not None else None,
        idempotency_key=getattr(flow_run, "idempotency_key", None),
    )


def start_flow_run(
    api_url: str,
    deployment_name: str,
    parameters: dict[str, Any],
    *,
    idempotency_key: str,
    name: str,
    tags: list[str],
    timeout_s: float = 10.0,
) -> FlowRunInfo:
    """Create a flow run of a deployment and return at once (it is picked up by a worker)."""
    from prefect.exceptions import ObjectNotFound, PrefectHTTPStatusError

    try:
        with _client(api_url, timeout_s) as client:

            def create(deployment_id: Any) -> Any:
                return client.create_flow_run_from_deployment(
                    deployment_id,
                    parameters=parameters,
                    idempotency_key=idempotency_key,
                    name=name,
                    tags=tags,
                )

            deployment_id = _deployment_id(client, deployment_name)
            try:
                flow_run = create(deployment_id)
            except (ObjectNotFound, PrefectHTTPStatusError) as exc:
                # The deployment was re-created under a new id since we cached it (Prefect's
                # client reports that 404 as a plain HTTP error, not as ObjectNotFound).
                if isinstance(exc, PrefectHTTPStatusError) and exc.response.status_code != 404:
                    raise
                with _lock:
                    _deployment_ids.pop(deployment_name, None)
                flow_run = create(_deployment_id(client, deployment_name))
    except UpstreamUnavailableError:
        raise
    except Exception as exc:
        raise _unavailable(exc) from exc
    return _info(flow_run)


@contextlib.contextmanager
def _flow_run_call(api_url: str, flow_run_id: str, timeout_s: float) -> Iterator[Any]:
    """A client for a call about one flow run, with Prefect's errors mapped to ours."""
    from prefect.exceptions import ObjectNotFound

    try:
        with _client(api_url, timeout_s) as client:
            yield client
    except ObjectNotFound as exc:
        raise NotFoundError(f"flow run {flow_run_id} does not exist in Prefect") from exc
    except UpstreamUnavailableError:
        raise
    except Exception as exc:
        raise _unavailable(exc) from exc


def read_flow_run(api_url: str, flow_run_id: str, *, timeout_s: float = 10.0) -> FlowRunInfo:
    """The flow run's current state; NotFoundError when Prefect no longer has it."""
    with _flow_run_call(api_url, flow_run_id, timeout_s) as client:
        flow_run = client.read_flow_run(uuid.UUID(flow_run_id))
    return _info(flow_run)


def cancel_flow_run(api_url: str, flow_run_id: str, *, timeout_s: float = 10.0) -> str:
    """Ask Prefect to cancel a run; returns the state Prefect accepted (e.g. CANCELLING)."""
    from prefect.states import Cancelling

    with _flow_run_call(api_url, flow_run_id, timeout_s) as client:
        result = client.set_flow_run_state(
            uuid.UUID(flow_run_id), Cancelling(message="cancelled through the audioflow API")
        )
    return str(result.state.type.value) if result.state is not None else "UNKNOWN"


def crash_flow_run(
    api_url: str, flow_run_id: str, message: str, *, timeout_s: float = 10.0
) -> None:
    """Mark a run Crashed in Prefect (forced): for runs whose worker died before starting them,
    so the UI stops showing them as Pending forever."""
    from prefect.states import Crashed

    with _flow_run_call(api_url, flow_run_id, timeout_s) as client:
        client.set_flow_run_state(uuid.UUID(flow_run_id), Crashed(message=message), force=True)


def cancel_unstarted_flow_run(
    api_url: str, flow_run_id: str, message: str, *, timeout_s: float = 10.0
) -> None:
    """Mark a run that no worker has started Cancelled (forced): it will never start.

    For a run created for a workflow that was cancelled while Prefect was creating it;
    `Cancelling` would wait for a worker to act on it.
    """
    from prefect.states import Cancelled

    with _flow_run_call(api_url, flow_run_id, timeout_s) as client:
        client.set_flow_run_state(uuid.UUID(flow_run_id), Cancelled(message=message), force=True)


def find_flow_run(
    api_url: str, idempotency_key: str, *, timeout_s: float = 10.0
) -> FlowRunInfo | None:
    """The flow run created with this idempotency key, or None if Prefect has none.

    How a caller finds a run whose creation answer was lost (a timeout or a dropped
    connection after Prefect had created it): Prefect keeps the key on the run.
    """
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterIdempotencyKey

    try:
        with _client(api_url, timeout_s) as client:
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    idempotency_key=FlowRunFilterIdempotencyKey(any_=[idempotency_key])
                ),
                limit=1,
            )
    except UpstreamUnavailableError:
        raise
    except Exception as exc:
        raise _unavailable(exc) from exc
    return _info(runs[0]) if runs else None


def list_unstarted_flow_runs(
    api_url: str, deployment_name: str, *, tag: str, limit: int, timeout_s: float = 10.0
) -> list[FlowRunInfo]:
    """Runs of a deployment with `tag` that no worker has started yet (Scheduled or
    Pending), oldest first, at most `limit`."""
    from prefect.client.schemas.filters import (
        FlowRunFilter,
        FlowRunFilterDeploymentId,
        FlowRunFilterState,
        FlowRunFilterStateType,
        FlowRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.client.schemas.sorting import FlowRunSort

    try:
        with _client(api_url, timeout_s) as client:
            deployment_id = _deployment_id(client, deployment_name)
            runs = client.read_flow_runs(
                flow_run_filter=FlowRunFilter(
                    deployment_id=FlowRunFilterDeploymentId(any_=[deployment_id]),
                    tags=FlowRunFilterTags(all_=[tag]),
                    state=FlowRunFilterState(
                        type=FlowRunFilterStateType(any_=[StateType.SCHEDULED, StateType.PENDING])
                    ),
                ),
                sort=FlowRunSort.EXPECTED_START_TIME_ASC,
                limit=limit,
            )
    except UpstreamUnavailableError:
        raise
    except Exception as exc:
        raise _unavailable(exc) from exc
    return [_info(run) for run in runs]


def waits_for_slot(api_url: str, flow_run_id: str, tag: str, *, timeout_s: float = 10.0) -> bool:
    """True when the run is waiting for a slot of the tag's concurrency limit.

    Prefect holds such a task run before it starts (Pending, or Scheduled with the name
    AwaitingConcurrencySlot) while every slot of `tag:<tag>` is taken; the flow run stays
    Running and reports nothing meanwhile. A full limit is required too: a task run left
    Pending by a dead process holds no slot, so it does not count as waiting for long.
    """
    from prefect.client.schemas.filters import (
        TaskRunFilter,
        TaskRunFilterFlowRunId,
        TaskRunFilterState,
        TaskRunFilterStateType,
        TaskRunFilterTags,
    )
    from prefect.client.schemas.objects import StateType
    from prefect.exceptions import ObjectNotFound

    with _flow_run_call(api_url, flow_run_id, timeout_s) as client:
        held = client.read_task_runs(
            task_run_filter=TaskRunFilter(
                flow_run_id=TaskRunFilterFlowRunId(any_=[uuid.UUID(flow_run_id)]),
                tags=TaskRunFilterTags(all_=[tag]),
                state=TaskRunFilterState(
                    type=TaskRunFilterStateType(any_=[StateType.PENDING, StateType.SCHEDULED])
                ),
            ),
            limit=1,
        )
        if not held:
            return False
        try:
            limit = client.read_global_concurrency_limit_by_name(tag_limit_name(tag))
        except ObjectNotFound:
            return False  # no limit: nothing to wait for
    return bool(limit.active) and limit.active_slots >= limit.limit


def check_health(api_url: str, *, timeout_s: float = 3.0) -> str | None:
    """None when Prefect answers, else the reason it did not."""
    try:
        with _client(api_url, timeout_s) as client:
            client.hello()
    except Exception as exc:
        return f"{type(exc).__name__}: {exc}"
    return None
