"""The API docs render without the internet: Swagger UI's files come from the API itself.

This machine has no internet access, so a page that loads anything from a CDN is blank
here: the tests check that the page names only same-origin URLs, that each answers with
its file, and, in a real headless Chromium against a real API process, that the page
lists the API's endpoints.
"""

from __future__ import annotations

import re
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import replace
from html.parser import HTMLParser
from pathlib import Path
from urllib.parse import urlsplit

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from api.docs_ui import ASSETS, ASSETS_PATH, SWAGGER_UI_DIR
from core.settings import Settings
from tests.support.api_processes import api_processes

API_KEY = "docs-test-key-0123456789abcdef"
EXPECTED_TYPES = {".js": "text/javascript", ".css": "text/css", ".png": "image/png"}


class _AssetUrls(HTMLParser):
    """Every URL the page makes a browser load: script src, link href, img src."""

    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        wanted = {"script": "src", "link": "href", "img": "src"}.get(tag)
        for name, value in attrs:
            if name == wanted and value:
                self.urls.append(value)


def asset_urls(html: str) -> list[str]:
    parser = _AssetUrls()
    parser.feed(html)
    return parser.urls


@pytest.fixture
def keyed_client(
    base_settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[TestClient]:
    """The app with an API key configured, as in production."""
    settings = replace(base_settings, api=replace(base_settings.api, api_key=API_KEY))
    with TestClient(app=create_app(settings, session_factory=session_factory)) as client:
        yield client


def test_swagger_page_loads_only_its_own_files(keyed_client: TestClient) -> None:
    page = keyed_client.get("/schema/swagger")  # open like the OpenAPI document: no key
    assert page.status_code == 200, page.text
    urls = asset_urls(page.text)
    assert len(urls) == len(ASSETS), urls  # the favicon, the stylesheet, the two scripts
    for url in urls:
        parts = urlsplit(url)
        assert not parts.scheme and not parts.netloc, f"{url} is not on this server"
        assert url.startswith(ASSETS_PATH + "/"), url
        answer = keyed_client.get(url)
        assert answer.status_code == 200, (url, answer.text)
        name = url.rsplit("/", 1)[1]
        media_type = answer.headers["content-type"].partition(";")[0]
        assert media_type == EXPECTED_TYPES[Path(name).suffix], (url, media_type)
        assert answer.content == (SWAGGER_UI_DIR / name).read_bytes()
        assert "immutable" in answer.headers["cache-control"]
    assert not re.search(r"https?://", page.text.split("<body", 1)[0]), "a remote URL in <head>"
    # The key still guards the API itself.
    assert keyed_client.get("/tasks").status_code == 401


def test_only_the_listed_files_are_served(keyed_client: TestClient) -> None:
    # The package's demo page (it loads a public petstore) and anything else: 404.
    for name in ("index.html", "swagger-initializer.js", "..%2F__init__.py", "%2Fetc%2Fpasswd"):
        response = keyed_client.get(f"{ASSETS_PATH}/{name}")
        assert response.status_code == 404, (name, response.status_code)


def test_scalar_is_not_served(keyed_client: TestClient) -> None:
    """No package ships Scalar's standalone script: its page would be blank, so there is none."""
    assert keyed_client.get("/schema/scalar").status_code == 404


def test_chromium_renders_the_endpoints(base_settings: Settings, tmp_path: Path) -> None:
    """A real browser against a real API process: Swagger UI runs and lists every path."""
    chromium = shutil.which("chromium")
    assert chromium, "chromium is missing: `make system-deps` installs it"
    settings = replace(base_settings, api=replace(base_settings.api, api_key=API_KEY))
    with api_processes(settings, tmp_path / "logs") as (api,):
        document = httpx.get(f"{api.url}/schema/openapi.json", timeout=10).json()
        dom = subprocess.run(
            [
                chromium,
                "--headless",
                "--no-sandbox",  # root in a container: Chromium's sandbox cannot start
                "--disable-gpu",
                f"--user-data-dir={tmp_path / 'chromium'}",
                "--virtual-time-budget=15000",  # let the page's scripts run to the end
                "--dump-dom",
                f"{api.url}/schema/swagger",
            ],
            capture_output=True,
            text=True,
            timeout=120,
            check=True,
        ).stdout
    shown = set(re.findall(r'class="opblock-summary-path" data-path="([^"]+)"', dom))
    assert shown == set(document["paths"]), (shown, sorted(document["paths"]))
    assert "Unable to render" not in dom and "Failed to load" not in dom
