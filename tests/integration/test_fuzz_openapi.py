"""Schema-driven fuzzing of every endpoint (schemathesis) against the real app.

The OpenAPI document is read from the real app, built on the run's PostgreSQL database and
Prefect server. For every operation schemathesis generates valid and invalid requests
(positive and negative modes), they go through the real app, and each response is checked:

* no 5xx at all: bad input is a 4xx, and with PostgreSQL and Prefect up nothing may be
  "unavailable" either (a 503 would mean Prefect refused something a request got past us);
* no hang: every call has a read timeout;
* where the document describes a response (200/201/400), the body conforms to it.

Schemathesis alone rarely gets past the first validation layer (ids are random UUIDs, the
task payload is a free-form object, the upload body is not in the document), so half the
cases are steered: ids are swapped for those of a real pending task and its workflow,
`POST /tasks` gets task payloads built from near-valid parts, string parameters get hostile
values (NUL, separators, path tricks, long or non-ASCII text), and `POST /uploads` gets
real audio, damaged audio, text and random bytes (`POST /uploads/images` real, cut, too
wide and junk images). The internal endpoint gets the valid bearer token.

Why not `schemathesis.pytest.from_fixture`: with pytest 9.2 it fails before running
anything (`'Function' object has no attribute '_nodeid'`, schemathesis 4.32.5), so each
operation is driven through its public Hypothesis strategy (`APIOperation.as_strategy`).
"""

from __future__ import annotations

import asyncio
import struct
import zlib
from typing import Any

import hypothesis
import pytest
import schemathesis
from hypothesis import HealthCheck, given
from hypothesis import strategies as st
from litestar import Litestar
from litestar.testing import TestClient
from schemathesis import GenerationMode
from schemathesis.checks import not_a_server_error
from schemathesis.specs.openapi.checks import response_schema_conformance
from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from api.app import create_app
from core.formats import FORMATS
from core.settings import Settings
from db.models import Task
from db.repositories import TaskRepository
from tests.db_fixtures import TEST_HOST
from tests.integration.conftest import AUTH
from tests.support.audio_files import tone_wav_bytes

#: Generated cases per operation (both modes and the steered ones together).
MAX_EXAMPLES = 40
#: Seconds any one call may take before it counts as a hang.
CALL_TIMEOUT_S = 15.0

OPERATIONS = [
    ("GET", "/health"),
    ("GET", "/tasks"),
    ("POST", "/tasks"),
    ("GET", "/tasks/{task_id}"),
    ("GET", "/tasks/{task_id}/workflows"),
    ("GET", "/tasks/{task_id}/deliveries"),
    ("POST", "/deliveries/{delivery_id}/redeliver"),
    ("POST", "/tasks/{task_id}/cancel"),
    ("POST", "/tasks/{task_id}/retry"),
    ("GET", "/workflows/{workflow_id}"),
    ("POST", "/uploads"),
    ("POST", "/uploads/presign"),
    ("POST", "/uploads/images"),
    ("POST", "/reprocess"),
    ("POST", "/internal/workflow-progress"),
]
#: Event streams stay open while their task lives (`GET /events` always): a generated
#: request on a live task would hold the in-process test client until the call timeout.
#: tests/integration/test_event_stream.py sends them bad input against a real server.
STREAMS = [
    ("GET", "/tasks/{task_id}/events"),
    ("GET", "/events"),
]
#: Fewer cases where more say nothing new: health has no input; each accepted reprocessing
#: request starts a Prefect flow run.
FEW_EXAMPLES = {("GET", "/health"): 3, ("POST", "/reprocess"): 20}

#: Request bodies that refuse unknown fields (msgspec `forbid_unknown_fields`), although
#: the document does not say so (no `additionalProperties: false`).
CLOSED_REQUEST_BODIES = (
    "CreateTaskRequest",
    "PresignRequest",
    "ProgressRequest",
    "ReprocessRequest",
)

HOSTILE_TEXT = st.one_of(
    st.sampled_from(
        [
            "\x00",
            "a\x00b",
            "\n",
            " padded ",
            "../../etc/passwd",
            "/absolute",
            "a\\b",
            "%00",
            "'; DROP TABLE tasks; --",
            "épisode-ü",
            "\u202e\u0301",
            "x" * 300,
        ]
    ),
    st.text(max_size=24),
)
VALID_PAYLOADS = st.fixed_dictionaries(
    {
        "episodeId": st.sampled_from(["ep-1", "EP_2.b", "e" * 128]),
        "audioKey": st.sampled_from(["uploads/a.mp3", "uploads/x/y.wav", "k" * 1024]),
        "encodingFormats": st.lists(
            st.sampled_from(list(FORMATS)), min_size=1, max_size=3, unique=True
        ),
    },
    optional={
        "transcribe": st.booleans(),
        "language": st.sampled_from(["en", "deu"]),
        "loudness": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "targetLufs": st.floats(-40, -5),
                    "truePeakDbtp": st.floats(-9, 0),
                    "targetLufsMono": st.floats(-43, -5),
                },
            ),
        ),
        "metadata": st.one_of(
            st.none(),
            st.fixed_dictionaries(
                {},
                optional={
                    "title": st.sampled_from(["Pilot", "épisode ü", "x" * 1000]),
                    "date": st.dates().map(str),
                    "episodeNumber": st.integers(0, 999_999),
                    "description": st.sampled_from(["notes\nline two\tand a tab"]),
                    "coverKey": st.sampled_from(["covers/a.jpg"]),
                },
            ),
        ),
        "chapters": st.one_of(
            st.none(),
            st.lists(st.floats(0, 86_400), max_size=4, unique=True).map(
                lambda starts: [
                    {"startTime": start, "title": f"chapter {n}"}
                    for n, start in enumerate(sorted(starts))
                ]
            ),
        ),
        "waveform": st.booleans(),
    },
)
#: One way to break each field (hostile text may also happen to be valid: fine).
BROKEN_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "episodeId": st.one_of(st.sampled_from(["..", ".hidden", "a" * 129]), HOSTILE_TEXT),
    "audioKey": st.one_of(
        st.sampled_from(["a/../b.mp3", "./a.mp3", "a//b.mp3", "uploads/", "a\tb", "k" * 1025]),
        HOSTILE_TEXT,
    ),
    "audioR2Key": HOSTILE_TEXT,
    "encodingFormats": st.one_of(
        st.lists(st.sampled_from([*FORMATS, "mp3_999", "", "MP3_128"]), max_size=4),
        HOSTILE_TEXT,
    ),
    "transcribe": st.one_of(st.integers(0, 1), st.none(), HOSTILE_TEXT),
    "language": st.one_of(st.sampled_from(["EN", "en\n", "english"]), HOSTILE_TEXT),
    "colour": st.just("blue"),
    "loudness": st.one_of(
        st.fixed_dictionaries({"targetLufs": st.floats(allow_nan=False)}),
        st.fixed_dictionaries({"truePeakDbtp": st.sampled_from([0.1, "loud", None])}),
        st.just({"targetLufs": -16, "extra": 1}),
        HOSTILE_TEXT,
    ),
    "metadata": st.one_of(
        st.fixed_dictionaries(
            {},
            optional={
                "title": HOSTILE_TEXT,
                "date": HOSTILE_TEXT,
                "episodeNumber": st.integers(),
                "coverKey": HOSTILE_TEXT,
            },
        ),
        HOSTILE_TEXT,
    ),
    "chapters": st.one_of(
        st.lists(
            st.fixed_dictionaries(
                {
                    "startTime": st.floats(allow_nan=False, allow_infinity=False),
                    "title": HOSTILE_TEXT,
                },
                optional={"url": HOSTILE_TEXT, "imageKey": HOSTILE_TEXT},
            ),
            max_size=4,
        ),
        HOSTILE_TEXT,
    ),
    "waveform": st.one_of(st.none(), st.integers(0, 1), HOSTILE_TEXT),
}


@st.composite
def task_payloads(draw: st.DrawFn) -> dict[str, Any]:
    """A valid payload, or one with exactly one field broken (so the 4xx is about it)."""
    payload: dict[str, Any] = draw(VALID_PAYLOADS)
    broken = draw(st.sampled_from([None, None, *BROKEN_FIELDS]))
    if broken is not None:
        payload[broken] = draw(BROKEN_FIELDS[broken])
    return payload


WAV = tone_wav_bytes()
UPLOAD_BODIES = st.one_of(
    st.just(b""),
    st.just(WAV),
    st.just(WAV[: len(WAV) // 2]),  # cut short: the header promises more than there is
    st.just(b"this is not audio\n"),
    st.binary(min_size=1, max_size=2048),
    st.binary(min_size=1, max_size=512).map(lambda tail: WAV[:44] + tail),  # header + junk
)


def _tiny_png(width: int = 2, height: int = 2) -> bytes:
    """A real, decodable grey PNG made in memory (no ffmpeg), for image upload bodies."""

    def chunk(kind: bytes, payload: bytes) -> bytes:
        crc = zlib.crc32(kind + payload)
        return struct.pack(">I", len(payload)) + kind + payload + struct.pack(">I", crc)

    header = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)
    pixels = zlib.compress(b"".join(b"\x00" + b"\x80" * width for _ in range(height)))
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", pixels)
        + chunk(b"IEND", b"")
    )


PNG = _tiny_png()
IMAGE_BODIES = st.one_of(
    st.just(b""),
    st.just(PNG),
    st.just(_tiny_png(4000, 1)),  # too wide
    st.just(PNG[:20]),  # cut inside the header
    st.just(b"\xff\xd8\xff\xe0"),  # a JPEG that ends at once
    st.just(b"GIF89a\x01\x00\x01\x00"),
    st.binary(min_size=1, max_size=2048),
    st.binary(min_size=1, max_size=512).map(lambda tail: PNG[:33] + tail),  # header + junk
)


@pytest.fixture
def fuzz_app(settings: Settings, session_factory: sessionmaker[Session]) -> Litestar:
    return create_app(settings, session_factory=session_factory)


@pytest.fixture
def document(fuzz_app: Litestar) -> dict[str, Any]:
    with TestClient(app=fuzz_app) as client:
        response = client.get("/schema/openapi.json")
    assert response.status_code == 200
    body: dict[str, Any] = response.json()
    return body


@pytest.fixture
def api_schema(fuzz_app: Litestar, document: dict[str, Any]) -> Any:
    schema = schemathesis.openapi.from_dict(document)
    schema.app = fuzz_app  # what `from_asgi` does: calls go to the app in-process
    return schema


def _known_ids(app: Litestar, *, cancelled: bool) -> dict[str, str]:
    """A real task (its flow run in Prefect) whose ids the fuzzer may use: pending, or
    cancelled so that a retry can succeed."""
    service = app.state.services.tasks
    task = service.create_task(
        "audio_processing",
        {"episodeId": "ep-fuzz", "audioKey": "uploads/fuzz.mp3", "encodingFormats": ["mp3_64"]},
    ).task
    task = service.dispatcher.dispatch(task.workflow_id)  # what the app's dispatcher does
    assert task.workflow_instance_id, "the seed task has no flow run"
    if cancelled:
        task = asyncio.run(service.cancel(task.id))
    return {"task_id": str(task.id), "workflow_id": str(task.workflow_id)}


def test_the_document_lists_exactly_these_operations(api_schema: Any) -> None:
    """A new endpoint must be added to OPERATIONS, so that it is fuzzed too."""
    found = sorted(
        (result.ok().method.upper(), result.ok().path) for result in api_schema.get_all_operations()
    )
    assert found == sorted(OPERATIONS + STREAMS)


def test_published_request_schemas_say_what_is_enforced(document: dict[str, Any]) -> None:
    """Litestar leaves out `forbid_unknown_fields` and `ge=0`; `api.openapi_doc` adds them back.

    Without them, schemathesis's "valid" cases were mostly refused with 400 before they
    reached any service code.
    """
    schemas = document["components"]["schemas"]
    for name in CLOSED_REQUEST_BODIES:
        assert schemas[name]["additionalProperties"] is False, name
    assert schemas["ProgressRequest"]["properties"]["progress"]["minimum"] == 0
    assert schemas["ProgressRequest"]["properties"]["progress"]["maximum"] == 100
    assert "additionalProperties" not in schemas["TaskOut"]  # responses stay open


def _steer(data: st.DataObject, case: schemathesis.Case, known: dict[str, str]) -> None:
    """Push the case past the first validation layer, or at it with hostile values."""
    for name in ("task_id", "workflow_id"):
        if case.path_parameters and name in case.path_parameters:
            case.path_parameters[name] = known[name]
    if case.method == "GET" and case.path == "/tasks":
        case.query = dict(case.query or {})
        case.query[data.draw(st.sampled_from(["type", "episodeId"]))] = data.draw(HOSTILE_TEXT)
    elif case.method == "POST" and case.path == "/tasks":
        payload: dict[str, Any] = data.draw(task_payloads())
        case.body = {"type": "audio_processing", "payload": payload}
    elif case.path == "/internal/workflow-progress" and isinstance(case.body, dict):
        case.body["taskId"] = known["task_id"]
        case.body["workflowId"] = known["workflow_id"]
        for name in ("step", "message", "error"):
            if data.draw(st.booleans()):
                case.body[name] = data.draw(HOSTILE_TEXT)
    elif case.path in ("/uploads", "/uploads/presign", "/uploads/images"):
        if case.path in ("/uploads", "/uploads/images"):
            case.query = {"filename": data.draw(HOSTILE_TEXT.filter(bool))}
        elif isinstance(case.body, dict):
            case.body["filename"] = data.draw(HOSTILE_TEXT)


@pytest.mark.parametrize(("method", "path"), OPERATIONS, ids=[f"{m} {p}" for m, p in OPERATIONS])
def test_fuzz_operation(api_schema: Any, fuzz_app: Litestar, method: str, path: str) -> None:
    needs_ids = "{" in path or path.startswith("/internal/")
    known_ids = _known_ids(fuzz_app, cancelled=path.endswith("/retry")) if needs_ids else {}
    operation = api_schema[path][method]
    cases = st.one_of(
        operation.as_strategy(generation_mode=GenerationMode.POSITIVE),
        operation.as_strategy(generation_mode=GenerationMode.NEGATIVE),
    )
    headers: dict[str, str] = dict(AUTH) if path.startswith("/internal/") else {}
    # A host the test settings allow: without it every case was the Host allow-list's 400
    # and nothing behind it was fuzzed.
    headers["Host"] = TEST_HOST
    seen: dict[int, int] = {}

    @given(case=cases, steered=st.booleans(), data=st.data())
    @hypothesis.settings(
        max_examples=FEW_EXAMPLES.get((method, path), MAX_EXAMPLES),
        deadline=None,
        database=None,
        derandomize=True,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much],
    )
    def run(case: schemathesis.Case, steered: bool, data: st.DataObject) -> None:
        if steered:
            _steer(data, case, known_ids)
        extra: dict[str, Any] = {}
        if path == "/uploads":
            extra["data"] = data.draw(UPLOAD_BODIES)
        elif path == "/uploads/images" and steered:
            extra["data"] = data.draw(IMAGE_BODIES)
        response = case.call(headers=headers, timeout=CALL_TIMEOUT_S, **extra)
        seen[response.status_code] = seen.get(response.status_code, 0) + 1
        case.validate_response(
            response, checks=[not_a_server_error, response_schema_conformance], headers=headers
        )

    run()
    print(f"{method} {path}: status codes {dict(sorted(seen.items()))}")
    assert seen, "no request was made"
    assert set(seen) - {400}, "every case was a 400: nothing got past the request checks"


# --- what the fuzzing found, pinned down ---------------------------------------------------


def test_an_offset_past_any_integer_is_a_clear_400_and_a_large_one_an_empty_page(
    client: TestClient,
) -> None:
    """Was a 500: PostgreSQL's OFFSET is a bigint and the query parameter was unbounded.

    The parameter now has an upper bound, so a huge offset is refused with a message naming it,
    and any offset inside the bound past the last row is simply an empty page.
    """
    response = client.get("/tasks", params={"offset": 10**22})
    assert response.status_code == 400, response.text
    assert "offset" in response.text
    inside = client.get("/tasks", params={"offset": 100_000_000})
    assert inside.status_code == 200, inside.text
    assert inside.json()["items"] == []
    assert inside.json()["offset"] == 100_000_000


def test_nul_in_a_filter_matches_nothing(
    client: TestClient, fuzz_app: Litestar, session_factory: sessionmaker[Session]
) -> None:
    """Was a 500: PostgreSQL text cannot hold NUL, and the filters went to it as they came.
    No stored value can contain NUL, so such a filter simply matches no task."""
    _known_ids(fuzz_app, cancelled=False)  # episode "ep-fuzz"
    assert client.get("/tasks", params={"episodeId": "ep-fuzz"}).json()["total"] == 1
    for params in ({"episodeId": "ep-fuzz\x00"}, {"type": "audio_processing\x00"}):
        response = client.get("/tasks", params=params)
        assert response.status_code == 200, response.text
        assert (response.json()["items"], response.json()["total"]) == ([], 0)
    # The reprocessing flow's selection by episode ids: the NUL one is dropped, not fatal.
    with session_factory() as session:
        found, total = TaskRepository(session).find(episode_ids=["ep-fuzz", "ep-fuzz\x00"])
        assert [t.episode_id for t in found] == ["ep-fuzz"] and total == 1
        assert TaskRepository(session).find(episode_ids=["\x00"]) == ([], 0)


def test_nul_in_the_idempotency_key_is_a_400(
    client: TestClient, session_factory: sessionmaker[Session]
) -> None:
    response = client.post(
        "/tasks",
        json={
            "type": "audio_processing",
            "payload": {"episodeId": "ep-1", "audioKey": "a.mp3", "encodingFormats": ["mp3_64"]},
        },
        headers={"Idempotency-Key": "key\x00"},
    )
    assert response.status_code == 400, response.text
    with session_factory() as session:
        assert session.scalar(select(func.count()).select_from(Task)) == 0


def test_nul_in_a_progress_report_is_stored_as_a_replacement_character(
    client: TestClient, fuzz_app: Litestar
) -> None:
    """Was a 500 (so a flow's final report, carrying ffmpeg's words, could be lost)."""
    ids = _known_ids(fuzz_app, cancelled=False)
    body = {"taskId": ids["task_id"], "workflowId": ids["workflow_id"]}
    running = client.post(
        "/internal/workflow-progress",
        json=body | {"status": "running", "step": "enc\x00ode", "message": "frame\x00"},
        headers=AUTH,
    )
    assert running.status_code == 200, running.text
    assert running.json()["workflow"]["message"] == "frame\ufffd"
    assert running.json()["task"]["currentStep"] == "enc\ufffdode"
    failed = client.post(
        "/internal/workflow-progress",
        json=body | {"status": "failed", "error": "bad\x00 input", "errorKind": "permanent"},
        headers=AUTH,
    )
    assert failed.status_code == 200, failed.text
    task = client.get(f"/tasks/{ids['task_id']}").json()
    assert (task["status"], task["error"]) == ("failed", "bad\ufffd input")


def test_a_language_with_a_trailing_newline_is_refused(client: TestClient) -> None:
    """Was accepted: the pattern `^[a-z]{2,3}$` matches "en\\n" with `re.match`."""
    payload = {
        "episodeId": "ep-1",
        "audioKey": "uploads/a.mp3",
        "encodingFormats": ["mp3_64"],
        "language": "en\n",
    }
    response = client.post("/tasks", json={"type": "audio_processing", "payload": payload})
    assert response.status_code == 422, response.text
    assert "language" in response.json()["detail"]
