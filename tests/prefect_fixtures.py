"""A real Prefect server for the run, with audioflow's deployments registered on it."""

from __future__ import annotations

import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

from cli.stack import ManagedProcess, deploy, free_port, prefect_env, start_prefect_server

if TYPE_CHECKING:
    from prefect.client.orchestration import SyncPrefectClient


@dataclass
class PrefectServer:
    """A running server and the environment that reaches it."""

    url: str
    env: dict[str, str]
    home: Path
    process: ManagedProcess


@pytest.fixture(scope="session")
def prefect_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrefectServer]:
    home = tmp_path_factory.mktemp("prefect")
    port = free_port()
    env = {
        **os.environ,
        **prefect_env(home, port, auth_string=os.environ["PREFECT_API_AUTH_STRING"]),
    }
    process = start_prefect_server(env, port, home / "logs")
    try:
        deploy(env)
        yield PrefectServer(url=env["PREFECT_API_URL"], env=env, home=home, process=process)
    finally:
        process.stop()


def prefect_client(api_url: str) -> SyncPrefectClient:
    """A client of one of the tests' Prefect servers, with the run's auth string (a bare
    `SyncPrefectClient(url)` sends none and gets 401)."""
    from prefect.client.orchestration import SyncPrefectClient

    return SyncPrefectClient(api_url, auth_string=os.environ["PREFECT_API_AUTH_STRING"])
