"""Security at the API's edge: object keys, the API key, the internal token, production mode.

* Object keys that could escape a folder or confuse a log or a header are refused at
  `POST /tasks` (422 naming the field, nothing stored); `test_api_bad_input.py` has the
  first few, these are the rest.
* With `AUDIOFLOW_API_KEY` set, every public endpoint is 401 without the key or with a wrong
  one (nothing happens), and 2xx with it. The internal endpoint takes only its own bearer
  token: not the API key, and the public endpoints do not take the internal token.
* Neither secret ever appears in a response (body or headers) or in the app's log output,
  even with the app in debug mode, where Litestar logs every exception with its traceback.
* Production mode refuses to build the app without real secrets.
"""

from __future__ import annotations

import logging
import uuid
from collections.abc import Iterator
from dataclasses import replace
from typing import Any

import httpx
import pytest
from litestar.testing import TestClient
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.settings import Settings, SettingsError
from core.storage.s3 import S3Store
from tests.db_fixtures import TEST_TOKEN
from tests.support.audio_files import tone_wav_bytes
from tests.support.rows import count_rows

#: Distinctive values, so that finding them in a body or a log line means a leak.
API_KEY = "apikey-3f9c1e7a-public-secret"
INTERNAL = TEST_TOKEN
BEARER = {"Authorization": f"Bearer {INTERNAL}"}
KEYED = {"X-API-Key": API_KEY}
GOOD = {"episodeId": "ep-1", "audioKey": "uploads/a.mp3", "encodingFormats": ["mp3_64"]}


def _assert_no_secret(response: httpx.Response) -> None:
    exposed = response.text + "".join(f"{k}: {v}\n" for k, v in response.headers.items())
    for secret in (API_KEY, INTERNAL):
        assert secret not in exposed, f"a secret leaked into a {response.status_code} response"


# --- object keys --------------------------------------------------------------------------

UNSAFE_KEYS = [
    "uploads/../../etc/passwd",  # `..` in the middle
    "uploads/..",
    "..",
    "./uploads/a.mp3",  # `.` segment
    "uploads//a.mp3",  # empty segment
    "uploads/a.mp3/",  # a folder, not an object
    "uploads\\..\\a.mp3",  # Windows separators
    "C:\\episodes\\a.mp3",
    "//server/share/a.mp3",  # absolute (UNC-like)
    "/",
    "",
    " uploads/a.mp3",  # surrounding whitespace
    "uploads/a.mp3 ",
    "uploads/a.mp3\n",
    "uploads/a\nb.mp3",  # log injection
    "uploads/a\rb.mp3",
    "uploads/a\tb.mp3",
    "uploads/\x1b[31mred.mp3",  # terminal escape
    "uploads/a\x7fb.mp3",  # DEL
    "uploads/a\u0085b.mp3",  # NEL, a C1 control character
    "uploads/a\x00",
    "k" * 1025,  # over S3's 1024-byte limit
    "é" * 513,  # 1026 bytes in UTF-8, 513 characters
]


@pytest.mark.parametrize("key", UNSAFE_KEYS, ids=[repr(k)[:40] for k in UNSAFE_KEYS])
@pytest.mark.parametrize("field", ["audioKey", "audioR2Key"])
def test_unsafe_object_keys_are_refused(
    client: TestClient, session_factory: sessionmaker[Session], field: str, key: str
) -> None:
    payload = {k: v for k, v in GOOD.items() if k != "audioKey"} | {field: key}
    response = client.post("/tasks", json={"type": "audio_processing", "payload": payload})
    assert response.status_code == 422, response.text
    assert "audioKey" in response.json()["detail"]
    assert count_rows(session_factory) == 0


def test_a_lone_surrogate_in_a_key_is_refused(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    # Not expressible as UTF-8: written as a JSON escape by hand.
    body = (
        '{"type": "audio_processing", "payload": {"episodeId": "ep-1", '
        '"audioKey": "uploads/a\\ud800.mp3", "encodingFormats": ["mp3_64"]}}'
    )
    response = client.post("/tasks", content=body, headers={"Content-Type": "application/json"})
    assert response.status_code in (400, 422), response.text
    assert count_rows(session_factory) == 0


def test_an_alias_cannot_smuggle_a_second_key(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    payload = GOOD | {"audioR2Key": "../../etc/passwd"}
    response = client.post("/tasks", json={"type": "audio_processing", "payload": payload})
    assert response.status_code == 422, response.text
    assert "disagree" in response.json()["detail"]
    assert count_rows(session_factory) == 0


# --- the API key and the internal token ----------------------------------------------------


@pytest.fixture
def keyed_settings(settings: Settings, s3_store: S3Store, moto_endpoint: str) -> Settings:
    """The test settings with an API key, on S3 (moto) so that presigning works too."""
    return replace(
        settings,
        api=replace(settings.api, api_key=API_KEY),
        storage=replace(
            settings.storage,
            backend="s3",
            bucket=s3_store.bucket,
            endpoint_url=moto_endpoint,
            region="us-east-1",
        ),
    )


@pytest.fixture
def keyed_client(
    keyed_settings: Settings, session_factory: sessionmaker[Session]
) -> Iterator[TestClient]:
    app = create_app(keyed_settings, session_factory=session_factory)
    with TestClient(app=app) as test_client:
        yield test_client


#: (method, path, request arguments) of every public endpoint, with a valid request.
PUBLIC: list[tuple[str, str, dict[str, Any]]] = [
    ("GET", "/tasks", {}),
    ("POST", "/tasks", {"json": {"type": "audio_processing", "payload": GOOD}}),
    ("GET", "/tasks/{task}", {}),
    ("GET", "/tasks/{task}/workflows", {}),
    ("POST", "/tasks/{task}/cancel", {}),
    ("POST", "/tasks/{task}/retry", {}),
    ("GET", "/workflows/{workflow}", {}),
    ("POST", "/uploads", {"params": {"filename": "a.wav"}, "content": tone_wav_bytes()}),
    ("POST", "/uploads/presign", {"json": {"filename": "a.mp3", "size": 1000}}),
    ("POST", "/reprocess", {"json": {"dryRun": True}}),
]
WRONG_KEYS = {
    "missing": {},
    "empty": {"X-API-Key": ""},
    "wrong": {"X-API-Key": "not-the-key"},
    "prefix": {"X-API-Key": API_KEY[:-1]},
    "longer": {"X-API-Key": API_KEY + "x"},
    "other case": {"X-API-Key": API_KEY.upper()},
    "internal token": {"X-API-Key": INTERNAL},
    "key as bearer": {"Authorization": f"Bearer {API_KEY}"},
}


def _request(
    client: TestClient,
    method: str,
    path: str,
    ids: dict[str, str],
    headers: dict[str, str],
    **kwargs: Any,
) -> httpx.Response:
    return client.request(method, path.format(**ids), headers=headers, **kwargs)


def test_public_endpoints_refuse_a_missing_or_wrong_key(
    keyed_client: TestClient, session_factory: sessionmaker[Session], s3_store: S3Store
) -> None:
    ids = {"task": str(uuid.uuid4()), "workflow": str(uuid.uuid4())}
    for credentials, headers in WRONG_KEYS.items():
        for method, path, kwargs in PUBLIC:
            response = _request(keyed_client, method, path, ids, headers, **kwargs)
            assert response.status_code == 401, (credentials, method, path, response.text)
            assert "API" in response.json()["detail"]
            _assert_no_secret(response)
    assert count_rows(session_factory) == 0  # no task was created
    assert s3_store.list_keys("uploads/") == []  # nothing was uploaded


def test_public_endpoints_answer_with_the_right_key(
    keyed_client: TestClient, s3_store: S3Store
) -> None:
    """Each public endpoint, in an order where each succeeds: 2xx with the key."""
    created = keyed_client.post(
        "/tasks", json={"type": "audio_processing", "payload": GOOD}, headers=KEYED
    )
    assert created.status_code == 201, created.text
    ids = {"task": created.json()["id"], "workflow": created.json()["workflowId"]}
    for method, path, kwargs in PUBLIC:
        if path == "/tasks" and method == "POST":
            continue
        response = _request(keyed_client, method, path, ids, KEYED, **kwargs)
        assert 200 <= response.status_code < 300, (method, path, response.text)
        _assert_no_secret(response)
    assert keyed_client.get(f"/tasks/{ids['task']}", headers=KEYED).json()["attempts"] == 2
    assert len(s3_store.list_keys("uploads/")) == 1
    # Health stays open for load balancers; the key changes nothing there.
    assert keyed_client.get("/health").status_code == 200


#: Credentials the internal endpoint must refuse.
NOT_THE_INTERNAL_TOKEN = {
    "none": {},
    "api key": KEYED,
    "api key as bearer": {"Authorization": f"Bearer {API_KEY}"},
    "longer": {"Authorization": f"Bearer {INTERNAL}x"},
    "prefix": {"Authorization": f"Bearer {INTERNAL[:-1]}"},
    "no scheme": {"Authorization": INTERNAL},
    "basic": {"Authorization": f"Basic {INTERNAL}"},
    "empty bearer": {"Authorization": "Bearer "},
    "other header": {"X-Internal-Token": INTERNAL},
}


def test_the_internal_endpoint_takes_only_its_own_token(keyed_client: TestClient) -> None:
    created = keyed_client.post(
        "/tasks", json={"type": "audio_processing", "payload": GOOD}, headers=KEYED
    ).json()
    body = {"taskId": created["id"], "workflowId": created["workflowId"], "progress": 40}
    for credentials, headers in NOT_THE_INTERNAL_TOKEN.items():
        response = keyed_client.post("/internal/workflow-progress", json=body, headers=headers)
        assert response.status_code == 401, (credentials, response.text)
        _assert_no_secret(response)
    assert keyed_client.get(f"/tasks/{created['id']}", headers=KEYED).json()["progress"] == 0

    accepted = keyed_client.post("/internal/workflow-progress", json=body, headers=BEARER)
    assert accepted.status_code == 200, accepted.text
    assert accepted.json()["task"]["progress"] == 40
    _assert_no_secret(accepted)


def test_no_secret_in_error_bodies_with_the_right_credentials(keyed_client: TestClient) -> None:
    """Errors past the guards (404, 422, 400, 409) do not echo the credentials either."""
    responses = [
        keyed_client.get(f"/tasks/{uuid.uuid4()}", headers=KEYED),
        keyed_client.post(
            "/tasks",
            json={"type": "audio_processing", "payload": GOOD | {"audioKey": "../x"}},
            headers=KEYED,
        ),
        keyed_client.post(
            "/tasks", content=b"{", headers=KEYED | {"Content-Type": "application/json"}
        ),
        keyed_client.post(
            "/internal/workflow-progress",
            json={"taskId": str(uuid.uuid4()), "workflowId": str(uuid.uuid4())},
            headers=BEARER,
        ),
    ]
    assert [r.status_code for r in responses] == [404, 422, 400, 404]
    for response in responses:
        _assert_no_secret(response)


def test_no_secret_in_the_logs_of_failing_auth(
    keyed_client: TestClient, caplog: pytest.LogCaptureFixture
) -> None:
    """Debug mode on: Litestar logs every exception (with traceback) of these requests."""
    app = keyed_client.app
    app.debug = True
    litestar_logger = logging.getLogger("litestar")  # does not propagate to the root
    litestar_logger.addHandler(caplog.handler)
    try:
        with caplog.at_level(logging.DEBUG):
            ids = {"task": str(uuid.uuid4()), "workflow": str(uuid.uuid4())}
            for credentials in WRONG_KEYS.values():
                for method, path, kwargs in PUBLIC:
                    response = _request(keyed_client, method, path, ids, credentials, **kwargs)
                    assert response.status_code == 401
            for headers in NOT_THE_INTERNAL_TOKEN.values():
                body = {"taskId": ids["task"], "workflowId": ids["workflow"]}
                response = keyed_client.post(
                    "/internal/workflow-progress", json=body, headers=headers
                )
                assert response.status_code == 401
    finally:
        litestar_logger.removeHandler(caplog.handler)
        app.debug = False
    logged = caplog.text + "".join(str(r.args) for r in caplog.records)
    # The capture works: the refusals were logged, with their reasons.
    assert "invalid API key" in logged and "missing X-API-Key header" in logged, logged[-2000:]
    assert "invalid internal token" in logged and "missing bearer token" in logged
    for secret in (API_KEY, INTERNAL):
        assert secret not in logged


# --- production mode ---------------------------------------------------------------------


@pytest.mark.parametrize(
    ("internal_token", "api_key", "variable"),
    [
        ("", API_KEY, "AUDIOFLOW_INTERNAL_TOKEN"),
        (INTERNAL, "", "AUDIOFLOW_API_KEY"),
        ("", "", "AUDIOFLOW_INTERNAL_TOKEN"),
    ],
)
def test_production_refuses_to_build_without_secrets(
    base_settings: Settings,
    session_factory: sessionmaker[Session],
    internal_token: str,
    api_key: str,
    variable: str,
) -> None:
    settings = replace(
        base_settings,
        env="production",
        api=replace(base_settings.api, internal_token=internal_token, api_key=api_key),
    )
    with pytest.raises(SettingsError) as raised:
        create_app(settings, session_factory=session_factory)
    message = str(raised.value)
    assert variable in message
    for secret in (API_KEY, INTERNAL):
        assert secret not in message


def test_production_builds_with_both_secrets(
    base_settings: Settings, session_factory: sessionmaker[Session]
) -> None:
    settings = replace(
        base_settings,
        env="production",
        api=replace(base_settings.api, internal_token=INTERNAL, api_key=API_KEY),
    )
    app = create_app(settings, session_factory=session_factory)
    with TestClient(app=app) as client:
        assert client.get("/tasks").status_code == 401
        assert client.get("/tasks", headers=KEYED).status_code == 200


def test_production_settings_from_the_environment_are_checked(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv("AUDIOFLOW_ENV", "production")
    monkeypatch.delenv("AUDIOFLOW_INTERNAL_TOKEN", raising=False)
    monkeypatch.setenv("AUDIOFLOW_API_KEY", API_KEY)
    settings = Settings.from_env()
    with pytest.raises(SettingsError, match="AUDIOFLOW_INTERNAL_TOKEN"):
        settings.validate()
    with pytest.raises(SettingsError, match="AUDIOFLOW_INTERNAL_TOKEN"):
        _ = settings.internal_token  # never falls back to the development token


def test_the_openapi_document_says_which_credential_each_endpoint_needs(
    client: TestClient,
) -> None:
    """Swagger's "Authorize" and generated clients rely on these declarations."""
    doc = client.get("/schema/openapi.json").json()
    schemes = doc["components"]["securitySchemes"]
    assert schemes["apiKey"] == {
        **schemes["apiKey"],
        "type": "apiKey",
        "in": "header",
        "name": "X-API-Key",
    }
    assert schemes["internalToken"]["scheme"] == "bearer"
    for path, operations in doc["paths"].items():
        for method, operation in operations.items():
            if method not in {"get", "post", "put", "patch", "delete"}:
                continue
            if path == "/health":  # probes need no credentials
                assert not operation.get("security"), path
                continue
            expected: list[dict[str, list[str]]] = (
                [{"internalToken": []}] if path.startswith("/internal") else [{"apiKey": []}]
            )
            assert operation.get("security") == expected, (method, path)
            responses = operation["responses"]
            assert "401" in responses, (method, path)
            for code, response in responses.items():
                if code.startswith(("4", "5")):
                    schema = response["content"]["application/json"]["schema"]
                    assert schema == {"$ref": "#/components/schemas/ErrorOut"}, (method, path, code)
