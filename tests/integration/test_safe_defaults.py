"""Safe by default (issue 10, case 3 and "Safe by default"), against the real app.

* JSON endpoints take only `application/json` (`application/*+json`, UTF-8): any other
  Content-Type is a 415 with a message and nothing is created. On the old code
  `POST /reprocess` with `text/plain` started a run (201), and so did `POST /tasks`.
* The `Host` header must name a host the API serves (loopback and the host of
  AUDIOFLOW_API_URL by default): 400 otherwise, which stops DNS rebinding.
* No CORS headers unless AUDIOFLOW_CORS_ORIGINS names the origin.
* `/health` tells an anonymous caller only up or down, never exception text.
* Presigned uploads: expiry bounded by AUDIOFLOW_PRESIGN_MAX_EXPIRES_S, the size declared,
  refused over AUDIOFLOW_MAX_UPLOAD_BYTES, and signed into the URL.
* The Prefect server refuses requests without the stack's auth string.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import uuid
from collections.abc import Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlsplit

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import Settings
from core.storage.s3 import S3Store
from tests.integration.conftest import AUTH
from tests.prefect_fixtures import PrefectServer, prefect_client
from tests.support.audio_files import lavfi
from tests.support.moto_server import FAKE_AWS_ENV
from tests.support.rows import count_rows

API_KEY = "apikey-" + uuid.uuid4().hex
KEYED = {"X-API-Key": API_KEY}
GOOD_TASK = {
    "type": "audio_processing",
    "payload": {"episodeId": "ep-1", "audioKey": "uploads/a.mp3", "encodingFormats": ["mp3_64"]},
}


def _on_demand_runs_naming(settings: Settings, marker: str) -> list[Any]:
    """Reprocessing flow runs whose parameters mention `marker` (Prefect, read directly)."""
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags

    with prefect_client(settings.prefect.api_url) as client:
        runs = client.read_flow_runs(
            flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["on-demand"])),
            limit=200,
        )
    return [r for r in runs if marker in json.dumps(r.parameters, default=str)]


# --- JSON only ------------------------------------------------------------------------------

NOT_JSON = [
    "text/plain",
    "text/plain; charset=utf-8",
    "application/x-www-form-urlencoded",
    "multipart/form-data; boundary=x",
    "application/xml",
    "application/jsonx",
    "text/json",
    "application/json; charset=latin-1",
    "application/json; charset=utf-16",
]


@pytest.mark.parametrize("content_type", NOT_JSON)
def test_case3_reprocess_with_a_non_json_content_type_is_415_and_starts_nothing(
    client: TestClient, settings: Settings, content_type: str
) -> None:
    marker = f"case3-{uuid.uuid4().hex[:12]}"
    body = json.dumps({"episodeIds": [marker], "dryRun": True})
    response = client.post("/reprocess", content=body, headers={"Content-Type": content_type})
    assert response.status_code == 415, response.text  # the old code: 201, a run started
    assert "application/json" in response.json()["detail"] or "UTF-8" in response.json()["detail"]
    assert _on_demand_runs_naming(settings, marker) == []


def test_json_bodies_need_a_content_type(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    no_type = client.build_request("POST", "/tasks", content=json.dumps(GOOD_TASK).encode())
    assert "content-type" not in no_type.headers
    response = client.send(no_type)
    assert response.status_code == 415, response.text
    assert count_rows(session_factory) == 0


@pytest.mark.parametrize("content_type", NOT_JSON[:4])
@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/tasks", GOOD_TASK),
        ("/uploads/presign", {"filename": "a.mp3", "size": 10}),
        ("/internal/workflow-progress", {"taskId": str(uuid.uuid4()), "workflowId": "x"}),
    ],
)
def test_every_json_endpoint_refuses_other_content_types(
    client: TestClient,
    session_factory: sessionmaker[Session],
    path: str,
    body: dict[str, Any],
    content_type: str,
) -> None:
    response = client.post(
        path, content=json.dumps(body), headers=AUTH | {"Content-Type": content_type}
    )
    assert response.status_code == 415, (path, response.text)
    assert count_rows(session_factory) == 0


@pytest.mark.parametrize(
    "content_type",
    ["application/json", "Application/JSON; charset=UTF-8", "application/vnd.audioflow+json"],
)
def test_json_media_types_are_accepted(client: TestClient, content_type: str) -> None:
    response = client.post(
        "/tasks", content=json.dumps(GOOD_TASK), headers={"Content-Type": content_type}
    )
    assert response.status_code == 201, response.text


def test_the_upload_endpoint_is_not_a_json_endpoint(client: TestClient, tmp_path: Path) -> None:
    """Raw audio bytes with any Content-Type: judged by decoding, as before."""
    wav = tmp_path / "tone.wav"
    lavfi(wav, "sine=duration=0.5")
    response = client.post(
        "/uploads",
        params={"filename": "a.wav"},
        content=wav.read_bytes(),
        headers={"Content-Type": "text/plain"},
    )
    assert response.status_code == 201, response.text


def test_the_openapi_document_declares_the_415(client: TestClient) -> None:
    doc = client.get("/schema/openapi.json").json()
    with_json_body = [
        (path, method)
        for path, ops in doc["paths"].items()
        for method, op in ops.items()
        if "application/json" in (op.get("requestBody") or {}).get("content", {})
    ]
    assert ("/reprocess", "post") in with_json_body and len(with_json_body) == 4
    for path, method in with_json_body:
        spec = doc["paths"][path][method]["responses"]["415"]
        assert spec["content"]["application/json"]["schema"] == {
            "$ref": "#/components/schemas/ErrorOut"
        }, path


# --- Host and CORS -----------------------------------------------------------------------


@pytest.fixture
def default_hosts_client(
    settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[TestClient]:
    """The app with no AUDIOFLOW_ALLOWED_HOSTS: loopback and the API URL's host."""
    plain = replace(
        settings,
        api=replace(settings.api, allowed_hosts=(), public_url="https://api.example.com"),
    )
    with TestClient(app=create_app(plain, session_factory=session_factory)) as test_client:
        yield test_client


@pytest.mark.parametrize(
    "host",
    ["127.0.0.1:8000", "localhost", "LOCALHOST:1", "[::1]:8000", "api.example.com"],
)
def test_loopback_and_the_api_host_are_served(default_hosts_client: TestClient, host: str) -> None:
    response = default_hosts_client.get("/tasks", headers={"Host": host})
    assert response.status_code == 200, response.text


@pytest.mark.parametrize(
    "host",
    [
        "evil.example",  # a rebinding page's own name
        "evil.example:8000",
        "127.0.0.1.evil.example",
        "localhost.",
        "api.example.com.evil.example",
        "127.0.0.1:80:80",
        "[::1",
        "",
    ],
)
def test_another_host_is_400(
    default_hosts_client: TestClient, session_factory: sessionmaker[Session], host: str
) -> None:
    response = default_hosts_client.post("/tasks", json=GOOD_TASK, headers={"Host": host})
    assert response.status_code == 400, response.text
    assert "AUDIOFLOW_ALLOWED_HOSTS" in response.json()["detail"]
    assert count_rows(session_factory) == 0


def test_a_configured_host_list_replaces_the_default(
    settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    listed = replace(
        settings, api=replace(settings.api, allowed_hosts=("audio.example.org", "*.example.net"))
    )
    with TestClient(app=create_app(listed, session_factory=session_factory)) as client:
        assert client.get("/tasks", headers={"Host": "audio.example.org:443"}).status_code == 200
        assert client.get("/tasks", headers={"Host": "w1.example.net"}).status_code == 200
        assert client.get("/tasks", headers={"Host": "example.net"}).status_code == 400
        assert client.get("/tasks", headers={"Host": "127.0.0.1"}).status_code == 400


def test_allowed_hosts_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AUDIOFLOW_ALLOWED_HOSTS", raising=False)
    monkeypatch.setenv("AUDIOFLOW_API_URL", "http://Workers.Example.com:8000/")
    assert Settings.from_env().api.hosts_allowed() == (
        "127.0.0.1",
        "localhost",
        "::1",
        "workers.example.com",
    )
    monkeypatch.setenv("AUDIOFLOW_ALLOWED_HOSTS", " api.example.com, ,*.example.org ")
    assert Settings.from_env().api.hosts_allowed() == ("api.example.com", "*.example.org")


def test_no_cors_headers_by_default(client: TestClient) -> None:
    origin = {"Origin": "https://evil.example"}
    response = client.get("/tasks", headers=origin)
    assert response.status_code == 200
    assert not any(k.lower().startswith("access-control-") for k in response.headers)
    preflight = client.options("/tasks", headers=origin | {"Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in preflight.headers


def test_cors_for_the_configured_origins_only(
    settings: Settings, session_factory: sessionmaker[Session], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("AUDIOFLOW_CORS_ORIGINS", "https://app.example.com")
    origins = Settings.from_env().api.cors_origins
    assert origins == ("https://app.example.com",)
    cors = replace(settings, api=replace(settings.api, cors_origins=origins))
    with TestClient(app=create_app(cors, session_factory=session_factory)) as client:
        allowed = client.get("/tasks", headers={"Origin": "https://app.example.com"})
        assert allowed.headers["access-control-allow-origin"] == "https://app.example.com"
        preflight = client.options(
            "/tasks",
            headers={
                "Origin": "https://app.example.com",
                "Access-Control-Request-Method": "POST",
                "Access-Control-Request-Headers": "x-api-key, content-type",
            },
        )
        assert preflight.status_code in (200, 204), preflight.text
        assert preflight.headers["access-control-allow-origin"] == "https://app.example.com"
        other = client.get("/tasks", headers={"Origin": "https://evil.example"})
        assert "access-control-allow-origin" not in other.headers


# --- /health --------------------------------------------------------------------------------


@pytest.fixture
def keyed_settings(settings: Settings) -> Settings:
    return replace(settings, api=replace(settings.api, api_key=API_KEY))


def test_health_tells_anonymous_callers_up_or_down_only(
    keyed_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    with TestClient(app=create_app(keyed_settings, session_factory=session_factory)) as client:
        up = client.get("/health")
        assert (up.status_code, up.json()) == (200, {"status": "ok"})
        detailed = client.get("/health", headers=KEYED)
        assert detailed.json() == {"status": "ok", "database": "ok", "prefect": "ok"}
        wrong = client.get("/health", headers={"X-API-Key": "wrong"})
        assert wrong.json() == {"status": "ok"}

    dead_prefect = replace(
        keyed_settings, prefect=replace(keyed_settings.prefect, api_url="http://127.0.0.1:9/api")
    )
    with TestClient(app=create_app(dead_prefect, session_factory=session_factory)) as client:
        down = client.get("/health")
        # The old code answered {"status": "degraded", ..., "prefect": "unreachable:
        # ConnectError: All connection attempts failed"} to anyone.
        assert (down.status_code, down.json()) == (503, {"status": "unavailable"})
        assert "Error" not in down.text and "127.0.0.1" not in down.text
        detailed = client.get("/health", headers=KEYED).json()
        assert detailed["status"] == "unavailable" and detailed["database"] == "ok"
        assert detailed["prefect"].startswith("unreachable")


# --- presigned uploads ----------------------------------------------------------------------


@pytest.fixture
def s3_client(
    settings: Settings,
    s3_store: S3Store,
    moto_endpoint: str,
    session_factory: sessionmaker[Session],
) -> Iterator[TestClient]:
    on_s3 = replace(
        settings,
        api=replace(settings.api, max_upload_bytes=1_000_000, presign_max_expires_s=1800),
        storage=replace(
            settings.storage,
            backend="s3",
            bucket=s3_store.bucket,
            endpoint_url=moto_endpoint,
            region="us-east-1",
        ),
    )
    with TestClient(app=create_app(on_s3, session_factory=session_factory)) as client:
        yield client


def test_presign_expiry_is_bounded_by_the_setting(s3_client: TestClient) -> None:
    default = s3_client.post("/uploads/presign", json={"filename": "a.mp3", "size": 10})
    assert default.status_code == 200 and default.json()["expiresIn"] == 1800, default.text
    ok = s3_client.post(
        "/uploads/presign", json={"filename": "a.mp3", "size": 10, "expiresIn": 1800}
    )
    assert ok.status_code == 200, ok.text
    assert ok.json()["expiresIn"] == 1800
    assert dict(parse_qsl(urlsplit(ok.json()["url"]).query))["X-Amz-Expires"] == "1800"
    # The old code accepted up to 7 days.
    long = s3_client.post(
        "/uploads/presign", json={"filename": "a.mp3", "size": 10, "expiresIn": 1801}
    )
    assert long.status_code == 422, long.text
    assert "AUDIOFLOW_PRESIGN_MAX_EXPIRES_S" in long.json()["detail"]


def test_presign_needs_a_size_within_the_upload_limit(s3_client: TestClient) -> None:
    assert s3_client.post("/uploads/presign", json={"filename": "a.mp3"}).status_code == 400
    for size in (0, -1):
        response = s3_client.post("/uploads/presign", json={"filename": "a.mp3", "size": size})
        assert response.status_code == 400, response.text
    over = s3_client.post("/uploads/presign", json={"filename": "a.mp3", "size": 1_000_001})
    assert over.status_code == 413, over.text
    assert "1000000" in over.json()["detail"]
    at_limit = s3_client.post("/uploads/presign", json={"filename": "a.mp3", "size": 1_000_000})
    assert at_limit.status_code == 200, at_limit.text


def _sigv4_query_signature(method: str, url: str, headers: dict[str, str], secret_key: str) -> str:
    """The SigV4 query-string signature of a request, computed here from the AWS
    specification (not by botocore), to check what a presigned URL binds."""
    parts = urlsplit(url)
    query = [(k, v) for k, v in parse_qsl(parts.query, keep_blank_values=True)]
    params = dict(query)
    signed_names = params["X-Amz-SignedHeaders"].split(";")
    canonical_query = "&".join(
        f"{quote(k, safe='-_.~')}={quote(v, safe='-_.~')}"
        for k, v in sorted(query)
        if k != "X-Amz-Signature"
    )
    lowered = {k.lower(): v.strip() for k, v in headers.items()}
    canonical_headers = "".join(f"{name}:{lowered[name]}\n" for name in signed_names)
    canonical_request = "\n".join(
        [
            method,
            quote(parts.path, safe="/-_.~"),
            canonical_query,
            canonical_headers,
            params["X-Amz-SignedHeaders"],
            "UNSIGNED-PAYLOAD",
        ]
    )
    date = params["X-Amz-Date"]
    scope = params["X-Amz-Credential"].split("/", 1)[1]
    to_sign = "\n".join(
        [
            "AWS4-HMAC-SHA256",
            date,
            scope,
            hashlib.sha256(canonical_request.encode()).hexdigest(),
        ]
    )
    key = ("AWS4" + secret_key).encode()
    for part in scope.split("/"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_the_declared_size_is_signed_into_the_url(s3_client: TestClient) -> None:
    """S3 checks the signature over the signed headers, so a PUT with another
    Content-Length is refused. moto does not check presigned signatures (a larger body
    is stored, measured: 200), so this verifies the signature itself: it holds for the
    declared length and for no other."""
    presigned = s3_client.post("/uploads/presign", json={"filename": "a.mp3", "size": 12345})
    assert presigned.status_code == 200, presigned.text
    out = presigned.json()
    assert out["method"] == "PUT" and out["headers"] == {"Content-Length": "12345"}
    params = dict(parse_qsl(urlsplit(out["url"]).query))
    assert params["X-Amz-SignedHeaders"].split(";") == ["content-length", "host"]
    host = urlsplit(out["url"]).netloc
    secret = FAKE_AWS_ENV["AWS_SECRET_ACCESS_KEY"]

    def signature(length: int) -> str:
        headers = {"Host": host, "Content-Length": str(length)}
        return _sigv4_query_signature("PUT", out["url"], headers, secret)

    assert signature(12345) == params["X-Amz-Signature"]
    for other in (12346, 1_000_001, 0):
        assert signature(other) != params["X-Amz-Signature"]
    # And the URL works for the declared size (moto stores the body).
    put = httpx.put(out["url"], content=b"\0" * 12345, timeout=30)
    assert put.status_code == 200, put.text


# --- the Prefect server's auth --------------------------------------------------------------


def test_the_prefect_server_refuses_requests_without_the_auth_string(
    prefect_server: PrefectServer,
) -> None:
    """Any local process or web page could start runs on the old stack's Prefect server."""
    api = prefect_server.url
    attempts: list[tuple[str, str, dict[str, Any]]] = [
        ("POST", f"{api}/deployments/filter", {"json": {}}),
        ("POST", f"{api}/flow_runs/", {"json": {"flow_id": str(uuid.uuid4())}}),
        ("POST", f"{api}/flow_runs/filter", {"json": {}}),
        ("GET", f"{api}/hello", {}),
    ]
    wrong = [{}, {"Authorization": "Basic " + "YWRtaW46cGFzcw=="}, {"Authorization": "Bearer x"}]
    for method, url, kwargs in attempts:
        for headers in wrong:
            response = httpx.request(method, url, headers=headers, timeout=10, **kwargs)
            assert response.status_code == 401, (method, url, headers, response.text)
    # Probes stay open, and the stack's own clients (with the auth string) get in.
    assert httpx.get(f"{api}/health", timeout=10).status_code == 200
    with prefect_client(api) as client:
        names = {d.name for d in client.read_deployments()}
    assert {"audio-processing", "reprocessing"} <= names
    assert prefect_server.env["PREFECT_API_AUTH_STRING"] == os.environ["PREFECT_API_AUTH_STRING"]
