"""Shared fixtures: the environment is fixed before any app module reads it."""

from __future__ import annotations

import os

# Set before the app is imported: tests never read a developer's own configuration.
os.environ["AUDIOFLOW_ENV"] = "test"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
for _name in ("DATABASE_URL", "PREFECT_API_URL", "AUDIOFLOW_API_KEY", "AUDIOFLOW_STORAGE"):
    os.environ.pop(_name, None)

pytest_plugins = ["tests.db_fixtures", "tests.prefect_fixtures"]
