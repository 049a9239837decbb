"""Issue 12 through the real stack: loudness normalisation, tags with cover art, chapters and
the waveform file, made by the worker's flow runs and read back from moto's S3 with tools
the flow does not use: ffmpeg's ebur128 filter and pyloudnorm for loudness, ffprobe for
tags, chapters and cover, ffmpeg + numpy for the waveform.

Until the API takes the payload's `loudness`, `metadata`, `chapters` and `waveform`, a task
with them is queued the way the API would queue it: its task and workflow rows written
with the flow parameters (`AudioProcessingParameters`), which the API's dispatcher then
starts as usual (`queue_task`). Everything after that is the normal path: the dispatcher,
Prefect, the worker, the progress and result reports, the API's task view.
"""

from __future__ import annotations

import json
import subprocess
import uuid
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from cli.stack import Stack
from core.formats import FORMATS
from core.storage.s3 import S3Store
from domain.contracts import AudioProcessingParameters
from tests.e2e.conftest import dispatched, follow
from tests.support.audio_files import ffmpeg
from tests.support.loudness_meters import ebur128_direct, loudness_sources, pyloudnorm_integrated
from tests.support.tag_readers import all_tags, ffprobe_json

pytestmark = pytest.mark.slow

ALL_FORMATS = list(FORMATS)
#: The podcast norm (the defaults): -16 LUFS stereo, -19 mono, true peak at most -1 dBTP.
STEREO_LUFS, MONO_LUFS, PEAK_LIMIT = -16.0, -19.0, -1.0
DEPLOYMENT = "audio-processing/audio-processing"


def queue_task(
    stack: Stack,
    episode_id: str,
    audio_key: str,
    formats: list[str],
    **fields: Any,
) -> dict[str, Any]:
    """A pending task whose first workflow carries these flow parameters, dispatched by
    the API's own dispatcher (it polls for queued workflows); the task as the API shows
    it once its flow run exists."""
    from sqlalchemy import create_engine
    from sqlalchemy.orm import sessionmaker

    from db.models import Task, TaskStatus, Workflow, WorkflowStatus

    task_id, workflow_id = uuid.uuid4(), uuid.uuid4()
    params = AudioProcessingParameters(
        task_id=task_id,
        workflow_id=workflow_id,
        episode_id=episode_id,
        audio_key=audio_key,
        encoding_formats=formats,
        transcribe=False,
        attempt=1,
        **fields,
    )
    engine = create_engine(stack.env["DATABASE_URL"])
    try:
        with sessionmaker(engine).begin() as session:
            task = Task(
                id=task_id,
                type="audio_processing",
                status=TaskStatus.PENDING,
                episode_id=episode_id,
                payload={
                    "episodeId": episode_id,
                    "audioKey": audio_key,
                    "encodingFormats": formats,
                    "transcribe": False,
                    "language": None,
                },
                attempts=1,
            )
            session.add(task)
            session.flush()
            session.add(
                Workflow(
                    id=workflow_id,
                    name="audio-processing",
                    deployment_name=DEPLOYMENT,
                    task_id=task_id,
                    attempt=1,
                    status=WorkflowStatus.QUEUED,
                    progress=0,
                    parameters=params.stored(),
                    corrections=[],
                )
            )
            session.flush()
            task.workflow_id = workflow_id
    finally:
        engine.dispose()
    return dispatched(stack, str(task_id))


def finish_all(stack: Stack, tasks: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each task's final state, followed side by side."""
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        return list(pool.map(lambda t: follow(stack, t["id"])[-1], tasks))


def fetch(store: S3Store, key: str, folder: Path) -> Path:
    path = folder / key.replace("/", "_")
    store.get_file(key, path)
    return path



def assert_on_target(path: Path, channels: int, what: str) -> tuple[float, float]:
    """The output's loudness by ebur128 run here: within 1 LU of the target for its
    channel count, true peak at most the limit + 0.1 dB."""
    integrated, peak = ebur128_direct(path)
    target = MONO_LUFS if channels == 1 else STEREO_LUFS
    assert abs(integrated - target) <= 1.0, f"{what}: {integrated} LUFS, target {target}"
    assert peak <= PEAK_LIMIT + 0.1, f"{what}: true peak {peak} dBTP"
    return integrated, peak


def waveform_pixels_of(path: Path, samples_per_pixel: int) -> np.ndarray[Any, Any]:
    """audiowaveform's 8-bit (min, max) pairs of a published file, computed here: ffmpeg
    decodes it to 16 kHz float, numpy averages the channels and takes the extrema."""
    channels = int(ffprobe_json(path)["streams"][0]["channels"])
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
         "-af", "aresample=16000", "-f", "f32le", "-c:a", "pcm_f32le", "-"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    mono = np.frombuffer(done.stdout, dtype="<f4").reshape(-1, channels).mean(axis=1)
    whole = mono.size - mono.size % samples_per_pixel
    frames = np.clip(mono[:whole] * 32768, -32768, 32767).reshape(-1, samples_per_pixel)
    return np.floor(np.stack([frames.min(axis=1), frames.max(axis=1)], axis=1) / 256)


# -- fixtures -------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def media_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("finishing")


@pytest.fixture(scope="module")
def cover_jpeg(media_dir: Path) -> Path:
    path = media_dir / "cover.jpg"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=160x120", "-frames:v", "1", str(path))
    return path


@pytest.fixture(scope="module")
def chapter_png(media_dir: Path) -> Path:
    path = media_dir / "chapter.png"
    ffmpeg("-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1", str(path))
    return path


# -- the whole thing, every format -----------------------------------------------------------

DESCRIPTION = "Show notes.\nSecond line: loudness, tags & chapters."


def test_metadata_cover_chapters_loudness_and_waveform_in_every_format(
    stack: Stack,
    e2e_store: S3Store,
    speech_mp3: Path,
    cover_jpeg: Path,
    chapter_png: Path,
    tmp_path: Path,
) -> None:
    e2e_store.put_file("uploads/finishing.mp3", speech_mp3)
    e2e_store.put_file("art/finishing-cover.jpg", cover_jpeg)
    e2e_store.put_file("art/chapter-2.png", chapter_png)
    task = queue_task(
        stack,
        "ep-finishing",
        "uploads/finishing.mp3",
        ALL_FORMATS,
        metadata={
            "title": "Épisode 12: Finishing",
            "artist": "Ada Host",
            "album": "The Audioflow Show",
            "date": "2026-11-29",
            "episode_number": 12,
            "description": DESCRIPTION,
            "cover_key": "art/finishing-cover.jpg",
        },
        chapters=[
            {"start_time": 0.0, "title": "Welcome", "url": "https://example.com/welcome"},
            {"start_time": 3.0, "title": "Encoding", "image_key": "art/chapter-2.png"},
        ],
    )
    final = follow(stack, task["id"])[-1]
    assert final["status"] == "done", final
    result = final["result"]
    prefix = f"episodes/ep-finishing/tasks/{task['id']}/a1/"
    duration = result["source"]["durationS"]

    # The source's loudness, measured in its decode check, by mix, as pyloudnorm has it.
    source_loudness = result["source"]["loudness"]
    assert set(source_loudness) == {"stereo", "mono"}
    assert source_loudness["stereo"]["integratedLufs"] == pytest.approx(
        pyloudnorm_integrated(speech_mp3), abs=0.5
    )
    assert "chapters" not in result["source"]  # the payload's chapters were used

    cover = cover_jpeg.read_bytes()
    for name, fmt in FORMATS.items():
        out = result["outputs"][name]
        assert out["key"] == f"{prefix}audio/{name}.{fmt.extension}"
        local = fetch(e2e_store, out["key"], tmp_path)
        probed = ffprobe_json(local)
        audio = next(s for s in probed["streams"] if s["codec_type"] == "audio")
        channels = int(audio["channels"])

        integrated, peak = assert_on_target(local, channels, name)
        assert out["loudness"]["integratedLufs"] == pytest.approx(integrated, abs=0.3)
        assert out["loudness"]["truePeakDbtp"] == pytest.approx(peak, abs=0.3)

        tags = all_tags(probed)
        assert tags["title"] == "Épisode 12: Finishing", name
        assert tags["artist"] == "Ada Host"
        assert tags["album"] == "The Audioflow Show"
        assert tags["date"] == "2026-11-29"
        assert tags["track"].split("/")[0] == "12"
        assert tags["description" if fmt.extension == "m4a" else "comment"] == DESCRIPTION
        assert out["tags"] == [
            "title", "artist", "album", "date", "episode_number", "description", "cover",
        ]  # fmt: skip

        assert [c["tags"]["title"] for c in probed["chapters"]] == ["Welcome", "Encoding"], name
        starts = [float(c["start_time"]) for c in probed["chapters"]]
        assert starts == pytest.approx([0.0, 3.0], abs=0.001)
        assert out["chapters"] == 2

        pictures = [s for s in probed["streams"] if s["disposition"].get("attached_pic") == 1]
        assert [(p["width"], p["height"]) for p in pictures] == [(160, 120)], name
        assert abs(float(probed["format"]["duration"]) - duration) <= 0.5
    # The embedded cover is the stored one, byte for byte (read with ffmpeg).
    mp3 = fetch(e2e_store, result["outputs"]["mp3_128"]["key"], tmp_path)
    embedded = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(mp3), "-map", "0:v", "-c", "copy", "-f", "mjpeg", "-"],
        check=True, capture_output=True, timeout=30,
    ).stdout  # fmt: skip
    assert embedded == cover

    # The Podcasting 2.0 chapters file.
    assert result["chapters"] == {
        "key": f"{prefix}chapters/chapters.json",
        "count": 2,
        "origin": "payload",
    }
    head = e2e_store.client.head_object(Bucket=e2e_store.bucket, Key=result["chapters"]["key"])
    assert head["ContentType"] == "application/json+chapters"
    document = json.loads(fetch(e2e_store, result["chapters"]["key"], tmp_path).read_text())
    assert document == {
        "version": "1.2.0",
        "chapters": [
            {"startTime": 0.0, "title": "Welcome", "url": "https://example.com/welcome"},
            # No AUDIOFLOW_PUBLIC_BASE_URL on this stack: the image is named by its key.
            {"startTime": 3.0, "title": "Encoding", "img": "art/chapter-2.png"},
        ],
    }

    # The waveform: audiowaveform JSON, one pixel per 256 samples of 16 kHz audio.
    waveform = result["waveform"]
    assert waveform["key"] == f"{prefix}waveform/waveform.json"
    wave = json.loads(fetch(e2e_store, waveform["key"], tmp_path).read_text())
    assert (wave["version"], wave["channels"], wave["bits"]) == (2, 1, 8)
    assert (wave["sample_rate"], wave["samples_per_pixel"]) == (16000, 256)
    assert wave["length"] == waveform["length"] == len(wave["data"]) // 2
    assert wave["length"] == pytest.approx(duration * 16000 / 256, abs=1)
    assert (waveform["sampleRate"], waveform["samplesPerPixel"]) == (16000, 256)


# -- quiet, loud and clipping sources ---------------------------------------------------------


def test_quiet_loud_and_clipping_sources_come_out_on_target_in_every_format(
    stack: Stack, e2e_store: S3Store, media_dir: Path, tmp_path: Path
) -> None:
    tasks = {}
    for name, args in loudness_sources(4, 44100).items():
        path = media_dir / f"{name}.wav"
        ffmpeg(*args, "-c:a", "pcm_s16le", str(path))
        e2e_store.put_file(f"uploads/level-{name}.wav", path)
        tasks[name] = queue_task(
            stack, f"ep-level-{name}", f"uploads/level-{name}.wav", ALL_FORMATS
        )
    finals = dict(zip(tasks, finish_all(stack, list(tasks.values())), strict=True))

    quiet_source = ebur128_direct(media_dir / "quiet.wav")[0]
    assert quiet_source == pytest.approx(-35, abs=1.5)  # the premise: -35 LUFS
    assert ebur128_direct(media_dir / "clipping.wav")[1] > 0.0  # and a true peak over 0 dBTP
    for name, final in finals.items():
        assert final["status"] == "done", (name, final)
        result = final["result"]
        for format_name, out in result["outputs"].items():
            local = fetch(e2e_store, out["key"], tmp_path)
            assert_on_target(local, out["channels"], f"{name} {format_name}")

    # The quiet source's waveform shows the audio as published (+19 dB), not the source:
    # its peaks match those of the first output, computed here from that file, within
    # 1 dB (the waveform caps peaks at the limiter's ceiling; the limiter itself also
    # lowers the samples around them for its attack and release, 0.6 dB here).
    quiet = finals["quiet"]["result"]
    wave = json.loads(fetch(e2e_store, quiet["waveform"]["key"], tmp_path).read_text())
    published = waveform_pixels_of(
        fetch(e2e_store, quiet["outputs"]["mp3_128"]["key"], tmp_path), 256
    )
    drawn = np.percentile(np.array(wave["data"]).reshape(-1, 2)[:, 1], 90)
    assert abs(20 * np.log10(drawn / np.percentile(published[:, 1], 90))) <= 1.0
    as_source = np.percentile(waveform_pixels_of(media_dir / "quiet.wav", 256)[:, 1], 90)
    assert drawn > 5 * as_source


# -- chapters from the source; loudness kept ----------------------------------------------------


def test_the_sources_own_chapters_are_carried_through(
    stack: Stack, e2e_store: S3Store, media_dir: Path, tmp_path: Path
) -> None:
    meta = media_dir / "chapters.ffmeta"
    meta.write_text(
        ";FFMETADATA1\ntitle=Private working title\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=0\nEND=2000\ntitle=Opening\n"
        "[CHAPTER]\nTIMEBASE=1/1000\nSTART=2000\nEND=4500\ntitle=The middle bit\n"
    )
    source = media_dir / "with-chapters.mp3"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=330:duration=5", "-i", str(meta),
        "-map", "0:a", "-map_metadata", "1", "-map_chapters", "1",
        "-c:a", "libmp3lame", "-b:a", "128k", str(source),
    )  # fmt: skip
    assert len(ffprobe_json(source)["chapters"]) == 2  # the premise
    e2e_store.put_file("uploads/with-chapters.mp3", source)
    task = queue_task(
        stack, "ep-source-chapters", "uploads/with-chapters.mp3", ["mp3_128", "aac_128", "flac"]
    )
    final = follow(stack, task["id"])[-1]
    assert final["status"] == "done", final
    result = final["result"]
    assert result["source"]["chapters"] == 2
    assert result["chapters"]["origin"] == "source" and result["chapters"]["count"] == 2
    for name, out in result["outputs"].items():
        probed = ffprobe_json(fetch(e2e_store, out["key"], tmp_path))
        titles = [c["tags"]["title"] for c in probed["chapters"]]
        assert titles == ["Opening", "The middle bit"], name
        starts = [float(c["start_time"]) for c in probed["chapters"]]
        assert starts == pytest.approx([0.0, 2.0], abs=0.001)
        # Only chapters: the source's other tags stay dropped.
        assert "title" not in all_tags(probed), name
        assert out["chapters"] == 2 and out["tags"] == []
    document = json.loads(fetch(e2e_store, result["chapters"]["key"], tmp_path).read_text())
    assert [c["title"] for c in document["chapters"]] == ["Opening", "The middle bit"]


def test_loudness_null_keeps_the_source_level(
    stack: Stack, e2e_store: S3Store, media_dir: Path, tmp_path: Path
) -> None:
    source = media_dir / "keep-level.wav"
    ffmpeg(
        "-f", "lavfi", "-i", "anoisesrc=d=4:c=pink:r=44100:a=0.05:seed=9",
        "-af", "lowpass=f=8000", "-ac", "2", "-c:a", "pcm_s16le", str(source),
    )  # fmt: skip
    source_lufs = ebur128_direct(source)[0]
    assert source_lufs < -22  # far from the -16 a normalised output would have
    e2e_store.put_file("uploads/keep-level.wav", source)
    task = queue_task(
        stack,
        "ep-keep-level",
        "uploads/keep-level.wav",
        ["mp3_128", "aac_128", "opus_64", "flac"],
        loudness=None,
        waveform=False,
    )
    final = follow(stack, task["id"])[-1]
    assert final["status"] == "done", final
    result = final["result"]
    assert "loudness" not in result["source"]
    assert "waveform" not in result and "chapters" not in result
    for name, out in result["outputs"].items():
        assert "loudness" not in out
        integrated, _ = ebur128_direct(fetch(e2e_store, out["key"], tmp_path))
        assert integrated == pytest.approx(source_lufs, abs=0.5), name


# -- refused artwork ------------------------------------------------------------------------------


def test_a_bad_cover_or_a_missing_chapter_image_fails_the_task_as_permanent(
    stack: Stack, e2e_store: S3Store, speech_mp3: Path, tmp_path: Path
) -> None:
    fake = tmp_path / "cover.jpg"
    fake.write_text("this is not a picture, just text named .jpg\n")
    e2e_store.put_file("art/not-a-cover.jpg", fake)
    e2e_store.put_file("uploads/art-checks.mp3", speech_mp3)
    bad_cover = queue_task(
        stack,
        "ep-bad-cover",
        "uploads/art-checks.mp3",
        ["mp3_64"],
        metadata={"title": "Bad cover", "cover_key": "art/not-a-cover.jpg"},
    )
    missing_image = queue_task(
        stack,
        "ep-missing-image",
        "uploads/art-checks.mp3",
        ["mp3_64"],
        chapters=[{"start_time": 0.0, "title": "Only", "image_key": "art/nowhere.png"}],
    )
    cover_final, image_final = finish_all(stack, [bad_cover, missing_image])

    assert cover_final["status"] == "failed", cover_final
    assert cover_final["errorKind"] == "permanent"
    assert cover_final["error"] == (
        "cover art 'art/not-a-cover.jpg' is not usable: the cover must be a JPEG or PNG "
        "image; it is text, not an image"
    )
    assert image_final["status"] == "failed", image_final
    assert image_final["errorKind"] == "permanent"
    assert (
        "chapter 1 ('Only'): image 'art/nowhere.png' (imageKey) not found" in image_final["error"]
    )
    for episode in ("ep-bad-cover", "ep-missing-image"):
        assert e2e_store.list_keys(f"episodes/{episode}/") == []
