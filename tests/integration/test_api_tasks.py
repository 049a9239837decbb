"""The task endpoints through Litestar's test client, on PostgreSQL and a real Prefect server."""

from __future__ import annotations

import json
import re
import uuid
from dataclasses import replace

from litestar.testing import TestClient
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.formats import FORMATS
from core.settings import Settings
from db.models import Task, Workflow
from domain import prefect_gateway
from domain.task_types import TASK_TYPES
from tests.integration.conftest import create_task
from tests.support.waiting import wait_for

PAYLOAD = {
    "episodeId": "episode-123",
    "audioKey": "uploads/episode-123.mp3",
    "encodingFormats": ["mp3_128", "mp3_320"],
    "transcribe": True,
}


def _counts(session_factory: sessionmaker[Session]) -> tuple[int, int]:
    with session_factory() as session:
        return (
            session.scalar(select(func.count()).select_from(Task)) or 0,
            session.scalar(select(func.count()).select_from(Workflow)) or 0,
        )


def test_create_task_starts_a_flow_run_with_the_ids(client: TestClient, settings: Settings) -> None:
    response = client.post("/tasks", json={"type": "audio_processing", "payload": PAYLOAD})
    assert response.status_code == 201, response.text
    created = response.json()
    assert created["status"] == "pending"
    assert created["episodeId"] == "episode-123"
    assert created["attempts"] == 1
    assert created["workflowId"]

    task = create_task(client, PAYLOAD)  # and once the dispatcher has its flow run:
    assert task["workflowInstanceId"] and task["status"] == "pending"

    run = prefect_gateway.read_flow_run(settings.prefect.api_url, task["workflowInstanceId"])
    assert run.parameters["params"]["task_id"] == task["id"]
    assert run.parameters["params"]["workflow_id"] == task["workflowId"]
    assert run.parameters["params"]["audio_key"] == "uploads/episode-123.mp3"
    assert run.parameters["params"]["encoding_formats"] == ["mp3_128", "mp3_320"]
    assert "episode:episode-123" in run.tags

    workflow = client.get(f"/workflows/{task['workflowId']}").json()
    assert workflow["instanceId"] == task["workflowInstanceId"]
    assert workflow["status"] == "queued"
    assert workflow["taskId"] == task["id"]
    assert workflow["deploymentName"] == "audio-processing/audio-processing"

    attempts = client.get(f"/tasks/{task['id']}/workflows").json()
    assert [w["id"] for w in attempts] == [task["workflowId"]]


def test_audio_r2_key_is_accepted_as_an_alias(client: TestClient) -> None:
    payload = {k: v for k, v in PAYLOAD.items() if k != "audioKey"} | {"audioR2Key": "r2/ep.mp3"}
    response = client.post("/tasks", json={"type": "audio_processing", "payload": payload})
    assert response.status_code == 201, response.text
    assert response.json()["payload"]["audioKey"] == "r2/ep.mp3"


def test_idempotency_key_returns_the_same_task(
    client: TestClient,
    session_factory: sessionmaker[Session],
) -> None:
    body = {"type": "audio_processing", "payload": PAYLOAD}
    headers = {"Idempotency-Key": "client-req-1"}
    first = client.post("/tasks", json=body, headers=headers)
    second = client.post("/tasks", json=body, headers=headers)
    assert first.status_code == 201 and second.status_code == 200
    assert first.json()["id"] == second.json()["id"]
    assert _counts(session_factory) == (1, 1)

    other = {"type": "audio_processing", "payload": PAYLOAD | {"episodeId": "other"}}
    conflict = client.post("/tasks", json=other, headers=headers)
    assert conflict.status_code == 409
    assert "Idempotency-Key" in conflict.json()["detail"]
    assert _counts(session_factory) == (1, 1)


def test_list_filters_and_paginates(client: TestClient) -> None:
    for n in range(3):
        payload = PAYLOAD | {"episodeId": f"ep-{n % 2}"}
        assert (
            client.post("/tasks", json={"type": "audio_processing", "payload": payload}).status_code
            == 201
        )
    page = client.get("/tasks", params={"episodeId": "ep-0", "limit": 1}).json()
    assert page["total"] == 2 and len(page["items"]) == 1 and page["limit"] == 1
    assert page["items"][0]["episodeId"] == "ep-0"
    second = client.get("/tasks", params={"episodeId": "ep-0", "limit": 1, "offset": 1}).json()
    assert second["items"][0]["id"] != page["items"][0]["id"]
    assert client.get("/tasks", params={"status": "pending"}).json()["total"] == 3
    assert client.get("/tasks", params={"status": "done"}).json()["total"] == 0
    assert client.get("/tasks", params={"type": "audio_processing"}).json()["total"] == 3


def test_prefect_unreachable_fails_the_task_clearly(
    settings: Settings,
    session_factory: sessionmaker[Session],
) -> None:
    dead = replace(
        settings,
        prefect=replace(
            settings.prefect,
            api_url="http://127.0.0.1:9/api",
            trigger_timeout_s=2,
            dispatch_deadline_s=3,
        ),
    )
    with TestClient(app=create_app(dead, session_factory=session_factory)) as client:
        response = client.post("/tasks", json={"type": "audio_processing", "payload": PAYLOAD})
        assert response.status_code == 201, response.text  # stored; the run comes behind
        task_id = response.json()["id"]
        workflow_id = response.json()["workflowId"]
        # While it waits, the workflow says why.
        waiting = wait_for(
            "the dispatcher's first try",
            lambda: (w := client.get(f"/workflows/{workflow_id}").json())["message"] and w,
            10,
        )
        assert waiting["status"] == "queued" and "waiting for Prefect" in waiting["message"]
        task = wait_for(
            "the task to fail",
            lambda: (t := client.get(f"/tasks/{task_id}").json())["status"] == "failed" and t,
            30,
        )
    # Never a row that claims work with no flow run behind it.
    assert task["errorKind"] == "transient"
    assert task["workflowInstanceId"] is None
    assert "could not start the flow run" in task["error"] and "Prefect" in task["error"]


def test_unknown_ids_are_404(client: TestClient) -> None:
    assert client.get(f"/tasks/{uuid.uuid4()}").status_code == 404
    assert client.get(f"/tasks/{uuid.uuid4()}/workflows").status_code == 404
    assert client.get(f"/workflows/{uuid.uuid4()}").status_code == 404
    assert client.get("/tasks/not-a-uuid").status_code in (400, 404)


def test_health_reports_database_and_prefect(client: TestClient) -> None:
    """Anonymous callers get up or down only (details need the API key: test_safe_defaults)."""
    response = client.get("/health")
    assert response.status_code == 200, response.text
    assert response.json() == {"status": "ok"}


def test_openapi_document_is_served(client: TestClient) -> None:
    spec = client.get("/schema/openapi.json").json()
    assert "/tasks" in spec["paths"] and "/internal/workflow-progress" in spec["paths"]
    # The reprocess body is derived from `domain.contracts.ReprocessParameters`: camelCase,
    # closed, the model's bounds, and without the worker-only fields.
    schemas = spec["components"]["schemas"]
    reprocess = schemas["ReprocessRequest"]
    assert reprocess["additionalProperties"] is False
    assert "addFormats" in reprocess["properties"] and "sweepTemp" not in reprocess["properties"]
    limit = reprocess["properties"]["limit"]
    assert (limit["minimum"], limit["maximum"]) == (1, 100_000)
    assert "transient" in json.dumps(schemas["ProgressRequest"]["properties"]["errorKind"]) or (
        "transient" in json.dumps(schemas.get("ErrorKind", {}))
    )


def test_the_openapi_document_types_each_task_types_payload(client: TestClient) -> None:
    """`payload` is no open object: each task type's model, from the model that decodes it."""
    schemas = client.get("/schema/openapi.json").json()["components"]["schemas"]
    request = schemas["CreateTaskRequest"]
    assert request["properties"]["type"]["enum"] == list(TASK_TYPES)
    assert request["properties"]["payload"]["oneOf"] == [
        {"$ref": "#/components/schemas/AudioProcessingPayload"}
    ]
    payload = schemas["AudioProcessingPayload"]
    fields = payload["properties"]
    assert set(fields) == {
        "episodeId",
        "audioKey",
        "audioR2Key",
        "encodingFormats",
        "transcribe",
        "language",
        "loudness",
        "metadata",
        "chapters",
        "waveform",
    }
    assert payload["additionalProperties"] is False
    assert sorted(payload["required"]) == ["encodingFormats", "episodeId"]
    assert "audioKey" in fields["audioR2Key"]["description"]  # the alias says what it is
    assert sorted(fields["encodingFormats"]["items"]["enum"]) == sorted(FORMATS)
    assert fields["transcribe"] == {**fields["transcribe"], "type": "boolean", "default": True}
    # The published pattern is the one enforced: "en\n" matches neither.
    pattern = next(s["pattern"] for s in fields["language"]["anyOf"] if "pattern" in s)
    assert re.search(pattern, "en") and re.search(pattern, "deu")
    assert not any(re.search(pattern, v) for v in ("en\n", "EN", "e", "engl"))


def test_the_openapi_document_describes_loudness_tags_chapters_and_waveform(
    client: TestClient,
) -> None:
    """Every new field has a description, and the bounds enforced are the ones shown."""
    schemas = client.get("/schema/openapi.json").json()["components"]["schemas"]
    fields = schemas["AudioProcessingPayload"]["properties"]
    for name in ("loudness", "metadata", "chapters", "waveform"):
        assert fields[name]["description"], name
    assert "null" in fields["loudness"]["description"]
    assert "-16 LUFS" in fields["loudness"]["description"]
    assert "[]" in fields["chapters"]["description"]
    assert fields["waveform"]["type"] == "boolean" and fields["waveform"]["default"] is True
    refs = {
        name: next(s["$ref"] for s in fields[name]["anyOf"] if "$ref" in s)
        for name in ("loudness", "metadata")
    }
    assert refs == {
        "loudness": "#/components/schemas/LoudnessPayload",
        "metadata": "#/components/schemas/EpisodeMetadataPayload",
    }
    chapters = next(s for s in fields["chapters"]["anyOf"] if s.get("type") == "array")
    assert chapters["items"] == {"$ref": "#/components/schemas/ChapterPayload"}
    assert chapters["maxItems"] == 1000

    loudness = schemas["LoudnessPayload"]
    assert loudness["additionalProperties"] is False
    target = loudness["properties"]["targetLufs"]
    assert (target["minimum"], target["maximum"], target["default"]) == (-40, -5, -16)
    peak = loudness["properties"]["truePeakDbtp"]
    assert (peak["minimum"], peak["maximum"], peak["default"]) == (-9, 0, -1)
    mono = next(s for s in loudness["properties"]["targetLufsMono"]["anyOf"] if "minimum" in s)
    assert (mono["minimum"], mono["maximum"]) == (-43, -5)

    metadata = schemas["EpisodeMetadataPayload"]
    assert set(metadata["properties"]) == {
        "title", "artist", "album", "date", "episodeNumber", "description", "coverKey",
    }  # fmt: skip
    assert metadata["required"] == [] and metadata["additionalProperties"] is False
    number = next(s for s in metadata["properties"]["episodeNumber"]["anyOf"] if "type" in s)
    assert (number["minimum"], number["maximum"]) == (0, 999_999)
    date = next(s for s in metadata["properties"]["date"]["anyOf"] if s.get("type") == "string")
    assert date["format"] == "date"

    chapter = schemas["ChapterPayload"]
    assert sorted(chapter["required"]) == ["startTime", "title"]
    assert chapter["properties"]["startTime"]["minimum"] == 0
    for schema in (loudness, metadata, chapter):
        assert all(prop["description"] for prop in schema["properties"].values()), schema


def test_loudness_tags_chapters_and_waveform_are_stored_resolved_and_reach_the_run(
    client: TestClient, settings: Settings
) -> None:
    payload = PAYLOAD | {
        "loudness": {"targetLufs": -18},
        "metadata": {"title": "Pilot", "album": "The Show", "date": "2026-11-29"},
        "chapters": [
            {"startTime": 0, "title": "Intro"},
            {"startTime": 95.25, "title": "News", "url": "https://example.com/news"},
        ],
        "waveform": False,
    }
    task = create_task(client, payload)
    assert task["payload"]["loudness"] == {
        "targetLufs": -18.0,
        "truePeakDbtp": -1.0,
        "targetLufsMono": -21.0,
    }
    assert task["payload"]["metadata"] == {
        "title": "Pilot",
        "artist": None,
        "album": "The Show",
        "date": "2026-11-29",
        "episodeNumber": None,
        "description": None,
        "coverKey": None,
    }
    assert task["payload"]["chapters"] == [
        {"startTime": 0.0, "title": "Intro", "url": None, "imageKey": None},
        {"startTime": 95.25, "title": "News", "url": "https://example.com/news", "imageKey": None},
    ]
    assert task["payload"]["waveform"] is False

    run = prefect_gateway.read_flow_run(settings.prefect.api_url, task["workflowInstanceId"])
    params = run.parameters["params"]
    assert params["loudness"] == {
        "target_lufs": -18.0,
        "true_peak_dbtp": -1.0,
        "target_lufs_mono": -21.0,
    }
    assert params["metadata"]["album"] == "The Show" and params["metadata"]["date"] == "2026-11-29"
    assert [(c["start_time"], c["title"]) for c in params["chapters"]] == [
        (0.0, "Intro"),
        (95.25, "News"),
    ]
    assert params["waveform"] is False


def test_without_the_new_fields_a_task_gets_the_defaults(client: TestClient) -> None:
    response = client.post("/tasks", json={"type": "audio_processing", "payload": PAYLOAD})
    assert response.status_code == 201, response.text
    stored = response.json()["payload"]
    assert stored["loudness"] == {
        "targetLufs": -16.0,
        "truePeakDbtp": -1.0,
        "targetLufsMono": -19.0,
    }
    assert (stored["metadata"], stored["chapters"], stored["waveform"]) == (None, None, True)
    workflow = client.get(f"/workflows/{response.json()['workflowId']}").json()
    assert workflow["parameters"]["loudness"]["target_lufs"] == -16.0
    assert workflow["parameters"]["waveform"] is True

    # null keeps the source's loudness; [] asks for no chapters (not the source's).
    off = PAYLOAD | {"episodeId": "ep-off", "loudness": None, "chapters": []}
    response = client.post("/tasks", json={"type": "audio_processing", "payload": off})
    assert response.status_code == 201, response.text
    assert response.json()["payload"]["loudness"] is None
    assert response.json()["payload"]["chapters"] == []
    workflow = client.get(f"/workflows/{response.json()['workflowId']}").json()
    assert workflow["parameters"]["loudness"] is None
    assert workflow["parameters"]["chapters"] == []


def test_an_unknown_format_is_a_422_that_names_the_field_and_the_known_formats(
    client: TestClient,
) -> None:
    payload = PAYLOAD | {"encodingFormats": ["mp3_128", "mp3_999"]}
    response = client.post("/tasks", json={"type": "audio_processing", "payload": payload})
    assert response.status_code == 422, response.text
    detail = response.json()["detail"]
    assert detail.startswith("payload.encodingFormats[1]:") and "'mp3_999'" in detail
    assert all(name in detail for name in FORMATS)


def test_the_gateway_shares_one_prefect_client_across_threads(settings: Settings) -> None:
    """Request threads share one open client; each call still bounds Prefect's retries."""
    from concurrent.futures import ThreadPoolExecutor

    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    url = settings.prefect.api_url
    outside = PREFECT_CLIENT_MAX_RETRIES.value()

    def start(n: int) -> tuple[str, int]:
        run = prefect_gateway.start_flow_run(
            url,
            "audio-processing/audio-processing",
            {
                "task_id": f"shared-{n}",
                "workflow_id": f"shared-{n}",
                "episode_id": "shared-client",
                "audio_key": "uploads/shared.mp3",
                "encoding_formats": ["mp3_128"],
            },
            idempotency_key=f"shared-client-test:{n}",
            name=f"shared-{n}",
            tags=["test-shared-client"],
        )
        with prefect_gateway._client(url, 10.0) as client:
            return run.id, id(client)

    with ThreadPoolExecutor(max_workers=8) as pool:
        started = list(pool.map(start, range(16)))
    assert len({run_id for run_id, _ in started}) == 16  # sixteen distinct flow runs
    with prefect_gateway._client(url, 10.0) as client:
        assert PREFECT_CLIENT_MAX_RETRIES.value() == prefect_gateway.CLIENT_MAX_RETRIES
        assert {client_id for _, client_id in started} == {id(client)}
    assert PREFECT_CLIENT_MAX_RETRIES.value() == outside  # the bound stays inside the gateway
    for run_id, _ in started:
        assert prefect_gateway.read_flow_run(url, run_id).name.startswith("shared-")


def test_an_unreachable_database_is_503_not_500(settings: Settings) -> None:
    """PostgreSQL down (here: nothing listens on the port): a clear 503, nothing half-done."""
    dead = replace(
        settings,
        database=replace(settings.database, url="postgresql+psycopg2://postgres@127.0.0.1:9/x"),
    )
    with TestClient(app=create_app(dead)) as client:
        for response in (
            client.get(f"/tasks/{uuid.uuid4()}"),
            client.post("/tasks", json={"type": "audio_processing", "payload": PAYLOAD}),
        ):
            assert response.status_code == 503, response.text
            assert "database is unavailable" in response.json()["detail"]
