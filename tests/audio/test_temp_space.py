"""A full temp disk in a flow: checked before the work, and transient wherever it is hit.

The disks are real tmpfs mounts of a few MiB (tests/support/small_disk.py): the kernel
answers ENOSPC, nothing is mocked. Sizes are checked with ffprobe and `os.stat`.
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from core.formats import FORMATS, get_format
from core.settings import get_settings
from core.storage import reset_store
from core.storage.errors import StorageFullError
from core.storage.local import LocalStore
from flows.errors import ProcessingError, classify
from flows.progress import ProgressPlan, WorkflowProgressReporter
from flows.steps.source import fetch_source
from flows.workspace import create_run_dir, ensure_room_for_outputs, outputs_estimate
from media.encode import EncodeError, encode
from media.probe import probe_source
from tests.audio.conftest import MakeAudio
from tests.support.audio_files import lavfi_mp3
from tests.support.small_disk import free_bytes, small_disk

MiB = 1024 * 1024
_RUN_ID = "0b5f3c1e-8d2a-4c55-9a57-3f1e2d4c5b6a"
_PREFECT = "http://127.0.0.1:4200/api"


@pytest.fixture
def small_temp(tmp_path: Path) -> Iterator[Path]:
    """A 2 MiB temp root, unmounted after the test."""
    with small_disk(tmp_path / "temp", 2 * MiB) as mounted:
        yield mounted


@pytest.fixture(scope="module")
def noisy_stereo_mp3(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """60 s of pink noise, stereo 44.1 kHz, 128 kbit/s CBR: 960 kB; its WAV would be 10.6 MB."""
    path = tmp_path_factory.mktemp("noisy") / "noise.mp3"
    source = "anoisesrc=duration=60:color=pink:sample_rate=44100:amplitude=0.3:seed=3"
    return lavfi_mp3(path, source, channels=2)


@pytest.fixture
def store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[LocalStore]:
    """The process's store (what the steps use), in a roomy folder of this test."""
    monkeypatch.setenv("AUDIOFLOW_STORAGE", "local")
    monkeypatch.setenv("AUDIOFLOW_STORAGE_DIR", str(tmp_path / "store"))
    get_settings.cache_clear()
    reset_store()
    yield LocalStore(tmp_path / "store")
    get_settings.cache_clear()
    reset_store()


def _reporter() -> WorkflowProgressReporter:
    sent: list[dict[str, Any]] = []
    return WorkflowProgressReporter(
        "task", "workflow", ProgressPlan.for_run(["mp3_64"], False), sent.append
    )


def _ffprobe_size_and_duration(path: Path) -> tuple[int, float]:
    out = subprocess.run(
        [
            "ffprobe",
            "-v",
            "error",
            "-show_entries",
            "format=size,duration",
            "-of",
            "json",
            str(path),
        ],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    fmt = json.loads(out)["format"]
    return int(fmt["size"]), float(fmt["duration"])


def test_source_bigger_than_the_temp_disk_fails_before_download_as_transient(
    tmp_path: Path, make_audio: MakeAudio, store: LocalStore
) -> None:
    big = make_audio(
        "big-for-temp.mp3",
        "-f",
        "lavfi",
        "-i",
        "sine=frequency=220:duration=200",
        "-c:a",
        "libmp3lame",
        "-b:a",
        "128k",
    )
    store.put_file("uploads/big.mp3", big)
    with small_disk(tmp_path / "temp", 1 * MiB) as temp:
        workdir = create_run_dir(temp, _RUN_ID, "ep-1", _PREFECT)
        with pytest.raises(ProcessingError) as raised:
            fetch_source.fn("uploads/big.mp3", workdir, _reporter())
        assert raised.value.kind == "transient", raised.value.reason
        reason = raised.value.reason
        assert f"{big.stat().st_size} bytes needed" in reason
        assert "bytes free" in reason
        assert list(workdir.iterdir()) == []  # nothing was downloaded


def test_room_for_the_requested_formats_is_checked_before_encoding(
    small_temp: Path, noisy_stereo_mp3: Path, store: LocalStore
) -> None:
    store.put_file("uploads/noise.mp3", noisy_stereo_mp3)
    workdir = create_run_dir(small_temp, _RUN_ID, "ep-1", _PREFECT)
    fetched = fetch_source.fn("uploads/noise.mp3", workdir, _reporter())
    source, info = fetched.path, fetched.info
    free = free_bytes(small_temp)

    # 60 s of 44.1 kHz stereo as WAV is 10.6 MB: refused, naming needed vs free bytes.
    with pytest.raises(ProcessingError) as raised:
        ensure_room_for_outputs(workdir, info, ["wav"], transcribe=False)
    assert raised.value.kind == "transient"
    needed = outputs_estimate(info, ["wav"], transcribe=False)
    assert needed >= 44100 * 2 * 2 * 60
    assert f"{needed} bytes needed, {free} bytes free" in raised.value.reason
    assert "wav" in raised.value.reason

    # mp3_64 (480 kB) fits, and the check's verdict holds: the encode really fits.
    ensure_room_for_outputs(workdir, info, ["mp3_64"], transcribe=False)
    dest = workdir / "mp3_64.mp3"
    encode(source, dest, get_format("mp3_64"), duration_s=info.duration_s)
    size, duration = _ffprobe_size_and_duration(dest)
    assert abs(duration - 60) < 0.5
    assert size <= get_format("mp3_64").estimated_bytes(60, 44100, 2)


@pytest.mark.parametrize("name", list(FORMATS))
def test_size_estimate_covers_a_real_encode(
    name: str, noisy_stereo_mp3: Path, tmp_path: Path
) -> None:
    """Noise is the worst case for FLAC and for VBR Opus; the estimate must still cover it."""
    fmt = get_format(name)
    dest = tmp_path / f"out.{fmt.extension}"
    encode(noisy_stereo_mp3, dest, fmt)
    size, duration = _ffprobe_size_and_duration(dest)
    estimate = fmt.estimated_bytes(duration, 44100, 2)
    assert size <= estimate
    assert estimate <= 3 * size + 512 * 1024  # an estimate, not a refusal of everything


def test_ffmpeg_running_out_of_temp_disk_is_transient(
    small_temp: Path, noisy_stereo_mp3: Path
) -> None:
    """The check can be beaten (another run fills the disk meanwhile): ffmpeg's ENOSPC
    is then retried, not reported as a damaged source."""
    dest = small_temp / "wav.wav"
    with pytest.raises(EncodeError) as raised:
        encode(noisy_stereo_mp3, dest, get_format("wav"))
    assert classify(raised.value) == "transient"
    assert list(small_temp.iterdir()) == []  # the partial output was removed


def test_local_store_full_is_transient_and_leaves_nothing(
    small_temp: Path, noisy_stereo_mp3: Path, tmp_path: Path
) -> None:
    store = LocalStore(small_temp / "storage")
    big = tmp_path / "big.bin"
    big.write_bytes(noisy_stereo_mp3.read_bytes() * 3)  # 2.9 MB on a 2 MiB disk
    with pytest.raises(StorageFullError) as raised:
        store.put_file("episodes/e1/audio/big.mp3", big)
    assert classify(raised.value) == "transient"
    assert [p for p in small_temp.rglob("*") if p.is_file()] == []

    # A download into a full temp disk: the same, and the message says where.
    roomy = LocalStore(tmp_path / "roomy")
    roomy.put_file("uploads/big.bin", big)
    with pytest.raises(StorageFullError) as download:
        roomy.get_file("uploads/big.bin", small_temp / "source.bin")
    assert classify(download.value) == "transient"
    assert str(small_temp / "source.bin") in str(download.value)
    assert [p for p in small_temp.rglob("*") if p.is_file()] == []
    assert probe_source(noisy_stereo_mp3).channels == 2  # the source itself is untouched
