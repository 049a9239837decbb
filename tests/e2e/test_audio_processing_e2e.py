"""The whole path, for real: API under uvicorn, Prefect server and process worker,
PostgreSQL, moto's S3 server over HTTP, ffmpeg and Whisper."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from api import prefect_gateway
from cli.stack import Stack
from core.storage.s3 import S3Store
from flows.audio.probe import probe
from flows.transcription.wer import wer
from tests.e2e.conftest import SPOKEN, api_get, create_task, follow

pytestmark = pytest.mark.slow


def test_episode_is_encoded_transcribed_and_stored(
    stack: Stack, e2e_store: S3Store, speech_mp3: Path, tmp_path: Path
) -> None:
    e2e_store.put_file("uploads/ep-e2e.mp3", speech_mp3)
    task = create_task(
        stack,
        {
            "episodeId": "ep-e2e",
            "audioR2Key": "uploads/ep-e2e.mp3",
            "encodingFormats": ["mp3_128", "mp3_320"],
            "transcribe": True,
        },
    )
    assert task["status"] == "pending"

    # The flow run exists in Prefect with the ids of both rows.
    run = prefect_gateway.read_flow_run(stack.env["PREFECT_API_URL"], task["workflowInstanceId"])
    assert run.parameters["task_id"] == task["id"]
    assert run.parameters["workflow_id"] == task["workflowId"]

    states = follow(stack, task["id"])
    statuses = [s["status"] for s in states]
    assert statuses[-1] == "done", states[-1]
    assert "processing" in statuses
    progress = [s["progress"] for s in states]
    assert progress == sorted(progress), "progress went backwards"
    assert any(0 < p < 100 for p in progress), "no intermediate progress was seen"

    done = states[-1]
    result = done["result"]
    source_duration = result["source"]["durationS"]
    for name, expected_kbps in (("mp3_128", 128), ("mp3_320", 320)):
        out = result["outputs"][name]
        assert out["key"] == f"episodes/ep-e2e/audio/{name}.mp3"
        local = tmp_path / f"{name}.mp3"
        e2e_store.get_file(out["key"], local)
        info = probe(local)
        assert info.codec == "mp3"
        assert abs(info.duration_s - source_duration) <= 0.5
        assert info.bitrate_kbps is not None and abs(info.bitrate_kbps - expected_kbps) <= 8
        assert out["size"] == local.stat().st_size

    transcript = result["transcript"]
    assert transcript["language"] == "en"
    for key in transcript["keys"].values():
        assert e2e_store.exists(key)
    text_path = tmp_path / "transcript.txt"
    e2e_store.get_file(transcript["keys"]["txt"], text_path)
    assert wer(SPOKEN, text_path.read_text()) <= 0.35

    workflow = api_get(stack, f"/workflows/{done['workflowId']}")
    assert workflow["status"] == "completed" and workflow["progress"] == 100
    assert workflow["instanceId"] == done["workflowInstanceId"]


def test_bad_sources_fail_clearly_while_a_good_one_completes(
    stack: Stack, e2e_store: S3Store, speech_mp3: Path, tmp_path: Path
) -> None:
    corrupt = tmp_path / "corrupt.mp3"
    corrupt.write_bytes(b"ID3" + bytes(range(256)) * 64)
    empty = tmp_path / "empty.mp3"
    empty.write_bytes(b"")
    e2e_store.put_file("uploads/corrupt.mp3", corrupt)
    e2e_store.put_file("uploads/empty.mp3", empty)
    e2e_store.put_file("uploads/good.mp3", speech_mp3)

    def payload(episode: str, key: str) -> dict[str, object]:
        return {
            "episodeId": episode,
            "audioKey": key,
            "encodingFormats": ["mp3_64"],
            "transcribe": False,
        }

    tasks = {
        "corrupt": create_task(stack, payload("ep-corrupt", "uploads/corrupt.mp3")),
        "missing": create_task(stack, payload("ep-missing", "uploads/nowhere.mp3")),
        "empty": create_task(stack, payload("ep-empty", "uploads/empty.mp3")),
        "good": create_task(stack, payload("ep-good", "uploads/good.mp3")),
    }
    with ThreadPoolExecutor(max_workers=4) as pool:
        finals = dict(
            zip(tasks, pool.map(lambda t: follow(stack, t["id"])[-1], tasks.values()), strict=True)
        )

    assert finals["good"]["status"] == "done", finals["good"]
    assert e2e_store.exists("episodes/ep-good/audio/mp3_64.mp3")
    expectations = {"corrupt": "not usable", "missing": "not found", "empty": "empty"}
    for name, needle in expectations.items():
        final = finals[name]
        assert final["status"] == "failed", final
        assert needle in final["error"], final["error"]
        assert final["errorKind"] == "permanent"
        assert e2e_store.list_keys(f"episodes/ep-{name}/") == []
