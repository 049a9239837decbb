"""Bad and odd audio through the whole flow (API, Prefect worker, moto S3, PostgreSQL).

Every case is submitted at once, then followed:

* damaged sources (a valid MP3 start followed by random bytes, with and without a Xing
  header; an MP3 cut in half; a zero-byte file; a text file named `.mp3`), an HLS
  playlist naming an MP3 on the worker's own disk (published as the episode before the
  demuxer allow-list) and an MP3 whose header claims more than AUDIOFLOW_MAX_DURATION_S
  end `failed` with a reason a person can read, `errorKind: "permanent"`, and nothing
  stored under the episode's keys;
* odd but valid sources work: a video with a soundtrack, half a second of audio, and
  ten seconds of digital silence (whose transcript has no segments);
* none of it takes the worker down: it is still running afterwards and a good episode
  submitted then completes.
"""

from __future__ import annotations

import json
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest

from cli.stack import Stack
from core.storage.s3 import S3Store
from media.probe import probe
from tests.e2e.conftest import create_task, follow
from tests.support.audio_files import ffmpeg
from tests.support.hostile_media import hls_absolute, lying_mp3

pytestmark = pytest.mark.slow


@dataclass(frozen=True)
class Case:
    file: str
    transcribe: bool
    #: A phrase the failure's `error` must contain; None: the task must end `done`.
    error_phrase: str | None


CASES = {
    "corrupt": Case("corrupt.mp3", False, "damaged"),
    "corrupt-noxing": Case("corrupt-noxing.mp3", False, "damaged"),
    "truncated": Case("truncated.mp3", False, "truncated"),
    "empty": Case("empty.mp3", False, "empty"),
    "text": Case("text.mp3", False, "not an audio or video file"),
    "playlist": Case("episode.m3u8", False, "playlists and file lists are not accepted"),
    "too-long": Case("too-long.mp3", False, "the limit is 21600 s (AUDIOFLOW_MAX_DURATION_S)"),
    "video": Case("video.mp4", False, None),
    "short": Case("short.mp3", True, None),
    "silent": Case("silent.mp3", True, None),
}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("bad-audio")
    tone = ["-f", "lavfi", "-i", "sine=frequency=330:duration=20", "-ac", "1", "-b:a", "128k"]
    ffmpeg(*tone, str(folder / "good20.mp3"))  # libmp3lame writes a Xing header: 20 s
    ffmpeg(*tone, "-write_xing", "0", str(folder / "noxing20.mp3"))
    junk = random.Random(7).randbytes(120_000)
    with_xing = (folder / "good20.mp3").read_bytes()
    without_xing = (folder / "noxing20.mp3").read_bytes()
    (folder / "corrupt.mp3").write_bytes(with_xing[:4096] + junk)
    (folder / "corrupt-noxing.mp3").write_bytes(without_xing[:4096] + junk)
    (folder / "truncated.mp3").write_bytes(with_xing[: len(with_xing) // 2])
    (folder / "empty.mp3").write_bytes(b"")
    (folder / "text.mp3").write_text("Show notes: this episode is about audio.\n" * 20)
    hls_absolute(folder, folder / "good20.mp3")  # a file on the worker's disk
    lying_mp3(folder, seconds=10, claimed_s=30_000).rename(folder / "too-long.mp3")
    ffmpeg(
        "-f", "lavfi", "-i", "testsrc=duration=5:size=320x240:rate=10",
        "-f", "lavfi", "-i", "sine=duration=5",
        "-c:v", "libx264", "-preset", "ultrafast", "-c:a", "aac", "-shortest",
        str(folder / "video.mp4"),
    )  # fmt: skip
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=440:duration=0.5", str(folder / "short.mp3"))
    ffmpeg(
        "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "10", "-b:a", "128k",
        str(folder / "silent.mp3"),
    )  # fmt: skip
    return {name: folder / case.file for name, case in CASES.items()}


def test_bad_audio_fails_cleanly_and_never_takes_the_worker_down(
    stack: Stack,
    e2e_store: S3Store,
    sources: dict[str, Path],
    speech_mp3: Path,
    tmp_path: Path,
) -> None:
    run = uuid.uuid4().hex[:8]
    episodes = {name: f"bad-{name}-{run}" for name in CASES}
    tasks = {}
    for name, case in CASES.items():
        key = f"uploads/{run}/{case.file}"
        e2e_store.put_file(key, sources[name])
        tasks[name] = create_task(
            stack,
            {
                "episodeId": episodes[name],
                "audioKey": key,
                "encodingFormats": ["mp3_64"],
                "transcribe": case.transcribe,
            },
        )
    with ThreadPoolExecutor(max_workers=len(tasks)) as pool:
        finals = dict(
            zip(
                tasks,
                pool.map(lambda t: follow(stack, t["id"], timeout_s=300)[-1], tasks.values()),
                strict=True,
            )
        )

    problems = []
    for name, case in CASES.items():
        final = finals[name]
        if case.error_phrase is None:
            if final["status"] != "done":
                problems.append(f"{name}: expected done, got {final['status']}: {final['error']}")
            continue
        error = final["error"] or ""
        if (final["status"], final["errorKind"]) != ("failed", "permanent"):
            problems.append(f"{name}: expected failed/permanent, got {final}")
        if case.error_phrase not in error or "Traceback" in error or len(error) > 500:
            problems.append(f"{name}: error should say {case.error_phrase!r}: {error!r}")
        if e2e_store.list_keys(f"episodes/{episodes[name]}/"):
            problems.append(f"{name}: outputs were stored for a failed source")
    assert not problems, "\n".join(problems)

    # The video's soundtrack, encoded: a real MP3 of the same 5 seconds.
    video_out = tmp_path / "video.mp3"
    e2e_store.get_file(finals["video"]["result"]["outputs"]["mp3_64"]["key"], video_out)
    info = probe(video_out)
    assert info.codec == "mp3" and info.channels == 1
    assert abs(info.duration_s - 5.0) <= 0.5, info

    short = finals["short"]["result"]
    assert abs(short["outputs"]["mp3_64"]["durationS"] - 0.5) <= 0.5, short
    assert e2e_store.exists(short["transcript"]["keys"]["json"])

    # Silence: a transcript with no segments, not hallucinated words.
    silent = finals["silent"]["result"]
    assert silent["transcript"]["segments"] == 0, silent["transcript"]
    transcript_path = tmp_path / "transcript.json"
    e2e_store.get_file(silent["transcript"]["keys"]["json"], transcript_path)
    transcript = json.loads(transcript_path.read_text())
    assert transcript["segments"] == [], transcript

    # None of it took the worker down: it is alive, and a good episode still completes.
    worker = stack.process("worker-1")
    assert worker.alive(), worker.log_tail()
    e2e_store.put_file(f"uploads/{run}/good.mp3", speech_mp3)
    good = create_task(
        stack,
        {
            "episodeId": f"good-after-bad-{run}",
            "audioKey": f"uploads/{run}/good.mp3",
            "encodingFormats": ["mp3_64"],
            "transcribe": False,
        },
    )
    final = follow(stack, good["id"], timeout_s=120)[-1]
    assert final["status"] == "done", final
    assert e2e_store.exists(final["result"]["outputs"]["mp3_64"]["key"])
    assert worker.alive(), worker.log_tail()
