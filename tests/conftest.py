"""Shared fixtures: the environment is fixed before any app module reads it."""

from __future__ import annotations

import os
import secrets

# Set before the app is imported: tests never read a developer's own configuration.
os.environ["AUDIOFLOW_ENV"] = "test"
os.environ["DO_NOT_TRACK"] = "1"
os.environ["PREFECT_SERVER_ANALYTICS_ENABLED"] = "false"
for _name in (
    "DATABASE_URL",
    "PREFECT_API_URL",
    "AUDIOFLOW_API_KEY",
    "AUDIOFLOW_INTERNAL_TOKEN",
    "AUDIOFLOW_STORAGE",
    "AUDIOFLOW_ALLOWED_HOSTS",
    "AUDIOFLOW_CORS_ORIGINS",
    "PREFECT_SERVER_API_AUTH_STRING",
):
    os.environ.pop(_name, None)
# Every Prefect server the tests start requires this run's auth string, and it is set
# before Prefect is imported, so this process's own Prefect clients (the in-process API's
# gateway, the tests' `prefect_client`) send it: Prefect reads its settings once.
os.environ["PREFECT_API_AUTH_STRING"] = f"audioflow-tests:{secrets.token_urlsafe(24)}"

pytest_plugins = ["tests.db_fixtures", "tests.prefect_fixtures"]
