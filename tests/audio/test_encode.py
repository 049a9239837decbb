"""Encoding with the real ffmpeg: every format, progress, failures, cancellation."""

from __future__ import annotations

import json
import os
import subprocess
import threading
from pathlib import Path

import pytest

from core.formats import FORMATS, AudioFormat, get_format
from media.encode import EncodeError, _Progress, encode
from media.probe import (
    AudioInfo,
    OutputCheckError,
    check_decodes,
    probe,
    probe_source,
    verify_output,
)
from tests.support.processes import children_named


def leftovers(folder: Path) -> list[str]:
    """Temporary files an encode may have left in its output folder."""
    return sorted(p.name for p in folder.iterdir() if p.name.startswith(".") or "part" in p.name)


def ffmpeg_children() -> list[int]:
    """PIDs of ffmpeg processes that are children of this test process."""
    return children_named(os.getpid(), "ffmpeg")


def stream_types(path: Path) -> list[str]:
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_streams", "-of", "json", str(path)],
        capture_output=True,
        check=True,
    )
    return [s["codec_type"] for s in json.loads(out.stdout)["streams"]]


@pytest.fixture(scope="module")
def stereo_source(stereo_mp3: Path) -> AudioInfo:
    return probe_source(stereo_mp3)


@pytest.mark.parametrize("fmt", FORMATS.values(), ids=list(FORMATS))
def test_every_format(
    fmt: AudioFormat, stereo_mp3: Path, stereo_source: AudioInfo, tmp_path: Path
) -> None:
    dest = tmp_path / f"{fmt.name}.{fmt.extension}"
    seen: list[float] = []
    encode(stereo_mp3, dest, fmt, duration_s=stereo_source.duration_s, on_progress=seen.append)

    info = verify_output(dest, fmt, stereo_source)
    # The same facts, asserted directly rather than only through verify_output.
    assert info.codec == fmt.codec
    assert abs(info.duration_s - stereo_source.duration_s) <= 0.5
    assert info.channels == (fmt.channels or 2)
    assert info.sample_rate == (fmt.sample_rate or 44100)
    if fmt.constant_bitrate:
        assert info.bitrate_kbps == pytest.approx(fmt.bitrate_kbps, rel=0.05)
    # And it really decodes, start to end, without errors.
    report = check_decodes(dest)
    assert report.decoded_s == pytest.approx(stereo_source.duration_s, abs=0.5)
    assert report.error_lines == 0

    assert seen and seen[-1] == 1.0
    assert all(0 < f <= 1 for f in seen)
    assert seen == sorted(seen)
    assert stream_types(dest) == ["audio"]
    assert leftovers(tmp_path) == []


def test_progress_rises_during_a_longer_encode(long_mp3: Path, tmp_path: Path) -> None:
    seen: list[float] = []
    # Without duration_s the source is probed for it.
    encode(long_mp3, tmp_path / "out.m4a", get_format("aac_128"), on_progress=seen.append)
    assert len(seen) >= 2, seen
    assert seen == sorted(set(seen)), "strictly rising"
    assert 0 < seen[0] < 1
    assert seen[-1] == 1.0


def test_progress_parser() -> None:
    seen: list[float] = []
    progress = _Progress(10.0, seen.append)
    for line in [
        "out_time_us=N/A",
        "out_time_ms=N/A",
        "progress=continue",
        "out_time_us=2500000",
        "out_time_ms=2500000",  # same value again: not reported twice
        "out_time_us=1000000",  # going backwards: ignored
        "out_time_ms=5000000",  # microseconds despite the name
        "out_time_us=12000000",  # past the end: capped
        "garbage",
    ]:
        progress.feed(line + "\n")
    progress.finish()
    assert seen == [0.25, 0.5, 1.0]

    silent: list[float] = []
    no_duration = _Progress(None, silent.append)
    no_duration.feed("out_time_us=1000000")
    no_duration.finish()
    assert silent == [1.0]


def test_video_upload_keeps_only_its_audio(video_mp4: Path, tmp_path: Path) -> None:
    source = probe_source(video_mp4)
    for name in ("mp3_128", "aac_128"):
        fmt = get_format(name)
        dest = tmp_path / f"v.{fmt.extension}"
        encode(video_mp4, dest, fmt, duration_s=source.duration_s)
        verify_output(dest, fmt, source)
        assert stream_types(dest) == ["audio"]


# The lossy encoders are the ones with priming/padding that a 0.5 s clip could trip up.
@pytest.mark.parametrize("name", ["mp3_64", "aac_128", "opus_64"])
def test_very_short_source(name: str, short_mp3: Path, tmp_path: Path) -> None:
    fmt = get_format(name)
    source = probe_source(short_mp3)
    dest = tmp_path / f"short.{fmt.extension}"
    encode(short_mp3, dest, fmt, duration_s=source.duration_s)
    verify_output(dest, fmt, source)


@pytest.mark.parametrize("name", ["mp3_128", "opus_64"])
def test_silent_source(name: str, silent_wav: Path, tmp_path: Path) -> None:
    fmt = get_format(name)
    source = probe_source(silent_wav)
    dest = tmp_path / f"silent.{fmt.extension}"
    encode(silent_wav, dest, fmt, duration_s=source.duration_s)
    verify_output(dest, fmt, source)


def test_mono_stays_mono_and_surround_becomes_stereo(
    mono_wav: Path, surround_flac: Path, tmp_path: Path
) -> None:
    fmt = get_format("mp3_128")
    encode(mono_wav, tmp_path / "m.mp3", fmt)
    assert verify_output(tmp_path / "m.mp3", fmt, probe_source(mono_wav)).channels == 1
    encode(surround_flac, tmp_path / "s.mp3", fmt)
    assert verify_output(tmp_path / "s.mp3", fmt, probe_source(surround_flac)).channels == 2
    # Sample rates the format leaves open follow the source (48 kHz here).
    encode(mono_wav, tmp_path / "m.flac", get_format("flac"))
    assert probe(tmp_path / "m.flac").sample_rate == 48000


@pytest.mark.parametrize(
    ("fixture", "expected"),
    [
        ("corrupt_mp3", "corrupt.mp3 to mp3_128"),
        ("empty_mp3", "empty.mp3 to mp3_128"),
        ("text_mp3", "notes.mp3 to mp3_128"),
    ],
)
def test_bad_sources_fail_cleanly(
    fixture: str, expected: str, request: pytest.FixtureRequest, tmp_path: Path
) -> None:
    source: Path = request.getfixturevalue(fixture)
    dest = tmp_path / "out" / "x.mp3"
    with pytest.raises(EncodeError) as caught:
        encode(source, dest, get_format("mp3_128"), on_progress=lambda _f: None)
    message = str(caught.value)
    assert expected in message
    assert "\n" not in message, "one readable line; the details are in stderr_tail"
    assert str(tmp_path) not in message
    assert caught.value.returncode not in (0, None)
    assert caught.value.stderr_tail
    assert not dest.exists()
    assert leftovers(dest.parent) == []


def test_failed_encode_keeps_the_previous_output(corrupt_mp3: Path, tmp_path: Path) -> None:
    dest = tmp_path / "x.mp3"
    dest.write_bytes(b"previous good output")
    with pytest.raises(EncodeError):
        encode(corrupt_mp3, dest, get_format("mp3_128"))
    assert dest.read_bytes() == b"previous good output"
    assert leftovers(tmp_path) == []


def test_truncated_source(truncated_mp3: Path, tmp_path: Path) -> None:
    """ffmpeg encodes the half that is there and exits 0. probe_source refuses the file
    up front; a caller that only used probe() is caught by verify_output's duration check."""
    fmt = get_format("mp3_128")
    dest = tmp_path / "t.mp3"
    encode(truncated_mp3, dest, fmt)
    assert probe(dest).duration_s == pytest.approx(10, abs=0.5)
    with pytest.raises(OutputCheckError, match="duration"):
        verify_output(dest, fmt, probe(truncated_mp3))


class Stop(Exception):
    pass


@pytest.mark.parametrize("exc_type", [Stop, KeyboardInterrupt])
def test_cancel_mid_encode_kills_ffmpeg_and_cleans_up(
    exc_type: type[BaseException], ten_minute_mp3: Path, tmp_path: Path
) -> None:
    calls: list[float] = []

    def cancel(fraction: float) -> None:
        calls.append(fraction)
        raise exc_type()

    dest = tmp_path / "c.m4a"
    with pytest.raises(exc_type):
        encode(ten_minute_mp3, dest, get_format("aac_128"), duration_s=600.0, on_progress=cancel)
    assert calls and calls[0] < 1.0, "cancelled while running"
    assert not dest.exists()
    assert leftovers(tmp_path) == []
    assert ffmpeg_children() == []


def test_cancel_from_another_thread_via_timeout(ten_minute_mp3: Path, tmp_path: Path) -> None:
    dest = tmp_path / "slow.m4a"
    with pytest.raises(EncodeError, match=r"took longer than 0\.3 s"):
        encode(ten_minute_mp3, dest, get_format("aac_128"), timeout_s=0.3)
    assert not dest.exists()
    assert leftovers(tmp_path) == []
    assert ffmpeg_children() == []
    assert threading.active_count() < 50


def test_odd_names_and_missing_folders(stereo_mp3: Path, tmp_path: Path) -> None:
    odd = tmp_path / "-take:2.mp3"
    odd.write_bytes(stereo_mp3.read_bytes())
    dest = tmp_path / "new" / "folder" / "-out:1.opus"
    encode(odd, dest, get_format("opus_64"))
    assert probe(dest).codec == "opus"
