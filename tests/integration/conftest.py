"""API fixtures: the real app on the test database, wired to the run's Prefect server."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace

import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import Settings
from tests.db_fixtures import TEST_TOKEN
from tests.prefect_fixtures import PrefectServer

AUTH = {"Authorization": f"Bearer {TEST_TOKEN}"}


@pytest.fixture
def settings(base_settings: Settings, prefect_server: PrefectServer) -> Settings:
    return replace(
        base_settings, prefect=replace(base_settings.prefect, api_url=prefect_server.url)
    )


@pytest.fixture
def client(settings: Settings, session_factory: sessionmaker[Session]) -> Iterator[TestClient]:  # type: ignore[type-arg]
    app = create_app(settings, session_factory=session_factory)
    with TestClient(app=app) as test_client:
        yield test_client
