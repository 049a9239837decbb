"""The app's lifespan: the dispatcher runs while the app serves and stops with it.

`POST /tasks` only commits rows; the flow run comes from the dispatcher threads that the
lifespan starts (`api.app.services_lifespan`). Without them every task would stay pending.
"""

from __future__ import annotations

import logging
import threading
from dataclasses import replace

from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import Settings
from domain import prefect_gateway
from tests.integration.conftest import create_task, wait_for

PAYLOAD = {"episodeId": "ep-lifespan", "audioKey": "uploads/ep.mp3", "encodingFormats": ["mp3_64"]}


def _dispatcher_threads() -> set[threading.Thread]:
    return {
        t
        for t in threading.enumerate()
        if t.name.startswith("audioflow-dispatcher-") and t.is_alive()
    }


def test_the_dispatcher_runs_between_startup_and_shutdown(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    before = _dispatcher_threads()  # other tests' dispatchers are not this app's business
    app = create_app(settings, session_factory=session_factory)
    assert _dispatcher_threads() == before  # building the app starts nothing

    with TestClient(app=app) as client:
        started = _dispatcher_threads() - before
        assert len(started) == settings.prefect.dispatch_threads
        task = create_task(client, PAYLOAD)  # waits until the dispatcher recorded its run
        run = prefect_gateway.read_flow_run(settings.prefect.api_url, task["workflowInstanceId"])
        assert run.parameters["params"]["task_id"] == task["id"]

    assert not any(t.is_alive() for t in started)  # joined at shutdown, not left running
    assert prefect_gateway._clients == {}  # the shutdown closed the Prefect clients too


def test_the_app_can_be_started_again_after_a_shutdown(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """Each startup starts fresh threads (a test client per test, a server restart)."""
    app = create_app(settings, session_factory=session_factory)
    with TestClient(app=app):
        first = set(_dispatcher_threads())
    with TestClient(app=app) as client:
        second = _dispatcher_threads()
        assert second and not second & first
        task = create_task(client, PAYLOAD | {"episodeId": "ep-lifespan-2"})
        assert task["workflowInstanceId"]
    assert not any(t.is_alive() for t in second)


def test_an_api_process_without_dispatcher_threads_leaves_new_tasks_to_another(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    """`AUDIOFLOW_DISPATCH_THREADS=0`: this process only commits rows and says so at start;
    a process with dispatcher threads on the same database creates the run."""
    before = _dispatcher_threads()
    serving = replace(settings, prefect=replace(settings.prefect, dispatch_threads=0))
    quiet = create_app(serving, session_factory=session_factory)
    warnings: list[str] = []
    handler = logging.Handler(logging.WARNING)
    handler.emit = lambda record: warnings.append(record.getMessage())  # type: ignore[method-assign]
    # On its own logger: Litestar's logging set-up replaces the root's handlers (caplog's).
    logging.getLogger("domain.dispatch").addHandler(handler)
    try:
        with TestClient(app=quiet):
            pass
    finally:
        logging.getLogger("domain.dispatch").removeHandler(handler)
    assert any("creates no flow runs" in w for w in warnings), warnings
    with TestClient(app=quiet) as client:
        assert _dispatcher_threads() == before
        response = client.post(
            "/tasks", json={"type": "audio_processing", "payload": PAYLOAD | {"episodeId": "ep-0"}}
        )
        assert response.status_code == 201, response.text
        task_id = response.json()["id"]
        queued = client.get(f"/tasks/{task_id}").json()
        assert queued["status"] == "pending" and queued["workflowInstanceId"] is None

        dispatching = create_app(settings, session_factory=session_factory)
        with TestClient(app=dispatching):
            task = wait_for(
                "the other process's dispatcher",
                lambda: (t := client.get(f"/tasks/{task_id}").json())["workflowInstanceId"] and t,
                30,
            )
    run = prefect_gateway.read_flow_run(settings.prefect.api_url, task["workflowInstanceId"])
    assert run.parameters["params"]["task_id"] == task_id
