"""ffmpeg reads exactly one file, of an allowed container, for a bounded time and length.

Hostile files (`tests.support.hostile_media`) name a real 10 s MP3 next to them. Before the
demuxer allow-list, `probe_source` accepted the HLS playlists as 10 s of MP3 and `encode`
published the neighbour's audio; a repeated playlist promised 50 minutes of it. Outputs are
checked with ffprobe run here, not with the code under test.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.formats import get_format
from core.settings import get_settings
from media import limits
from media.containers import ALLOWED_DEMUXERS
from media.encode import EncodeError, build_command, encode
from media.limits import decode_timeout_s, encode_timeout_s
from media.probe import (
    BadAudioError,
    SourceTooLongError,
    UnsupportedContainerError,
    check_decodes,
    probe,
    probe_source,
)
from tests.support.audio_files import ffmpeg
from tests.support.hostile_media import HOSTILE, lying_mp3
from transcription.audio import stream_windows
from transcription.errors import TranscriptionInputError


def _ffprobe(path: Path) -> dict[str, str]:
    """format_name and duration, read by ffprobe directly."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-print_format", "json", "-show_format", str(path)],
        check=True,
        capture_output=True,
        timeout=60,
    )
    fmt: dict[str, str] = json.loads(done.stdout)["format"]
    return fmt


def _decoded_seconds(path: Path) -> float:
    """Seconds of audio ffmpeg decodes from `path` (0 when it cannot read it)."""
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-f", "null", "-",
         "-progress", "pipe:1"],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    lines = done.stdout.splitlines()
    times = [int(v[12:]) for v in lines if v[:12] == "out_time_us=" and v[12:].isdigit()]
    return max(times, default=0) / 1_000_000


@pytest.fixture(scope="module")
def hostile_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("hostile")
    ffmpeg("-f", "lavfi", "-i", "sine=frequency=550:duration=10", str(folder / "secret.mp3"))
    return folder


@pytest.fixture(params=sorted(HOSTILE))
def hostile(request: pytest.FixtureRequest, hostile_dir: Path) -> tuple[Path, str]:
    builder, phrase = HOSTILE[request.param]
    return builder(hostile_dir, hostile_dir / "secret.mp3"), phrase


def test_the_neighbour_is_real_audio(hostile_dir: Path) -> None:
    """The file the playlists name would be accepted on its own: only the indirection is
    refused."""
    assert probe_source(hostile_dir / "secret.mp3").duration_s == pytest.approx(10, abs=0.1)


def test_probe_refuses_and_says_what_it_is(hostile: tuple[Path, str]) -> None:
    path, phrase = hostile
    with pytest.raises(UnsupportedContainerError) as caught:
        probe_source(path)
    message = str(caught.value)
    assert phrase in message and message.startswith(path.name), message
    assert str(path.parent) not in message, "no internal paths in the message"
    with pytest.raises(UnsupportedContainerError):
        probe(path)


def test_decode_refuses_too(hostile: tuple[Path, str]) -> None:
    """check_decodes alone (no probe first) does not read the named file either. (The
    external reference only gets as far as "no decodable audio": at `-v error` ffmpeg
    does not print the warning that names it.)"""
    path, _ = hostile
    with pytest.raises(BadAudioError):
        check_decodes(path)


def test_encode_never_reads_the_other_file(hostile: tuple[Path, str], tmp_path: Path) -> None:
    """encode alone (no probe first): refused, or, for the external reference, an output
    without a single audio frame (its own samples are zeros and the other file is never
    opened); the flow's probe and `verify_output` refuse that one before and after."""
    path, _ = hostile
    dest = tmp_path / "out.mp3"
    if path.name == "external.m4a":
        encode(path, dest, get_format("mp3_64"), duration_s=10)
        assert _decoded_seconds(dest) < 0.1
        return
    with pytest.raises(EncodeError, match="not one of the accepted audio containers"):
        encode(path, dest, get_format("mp3_64"), duration_s=10)
    assert list(tmp_path.iterdir()) == []


def test_transcription_decode_refuses(hostile: tuple[Path, str]) -> None:
    path, _ = hostile
    with pytest.raises(TranscriptionInputError):
        list(stream_windows(path))


#: One valid 3 s file per allowed container family: ffmpeg arguments after the input.
CONTAINERS = {
    "mp3": ["-c:a", "libmp3lame"],
    "aac": ["-c:a", "aac", "-f", "adts"],
    "wav": ["-c:a", "pcm_s16le"],
    "w64": ["-c:a", "pcm_s16le"],
    "aiff": ["-c:a", "pcm_s16be"],
    "caf": ["-c:a", "alac"],
    "flac": ["-c:a", "flac"],
    "ogg": ["-c:a", "libvorbis"],
    "opus": ["-c:a", "libopus"],
    "m4a": ["-c:a", "aac"],
    "mov": ["-c:a", "alac"],
    "mka": ["-c:a", "libopus"],
    "webm": ["-c:a", "libopus"],
    "wma": ["-c:a", "wmav2"],
    "au": ["-c:a", "pcm_s16be"],
    "wv": ["-c:a", "wavpack"],
    "ac3": ["-c:a", "ac3"],
    "eac3": ["-c:a", "eac3"],
    "ts": ["-c:a", "mp2"],
    "flv": ["-c:a", "libmp3lame", "-ar", "44100"],
    "avi": ["-c:a", "libmp3lame"],
}


@pytest.mark.parametrize("extension", sorted(CONTAINERS))
def test_every_allowed_container_is_accepted_and_encodes(extension: str, tmp_path: Path) -> None:
    source = tmp_path / f"tone.{extension}"
    ffmpeg(
        "-f", "lavfi", "-i", "sine=frequency=440:duration=3:sample_rate=48000",
        "-ac", "2", *CONTAINERS[extension], str(source),
    )  # fmt: skip
    reported = _ffprobe(source)["format_name"].split(",")
    assert any(name in reported for name in ALLOWED_DEMUXERS), reported

    info = probe_source(source)
    assert info.duration_s == pytest.approx(3, abs=0.2)
    dest = tmp_path / "out.mp3"
    encode(source, dest, get_format("mp3_64"), duration_s=info.duration_s)
    out = _ffprobe(dest)
    assert out["format_name"] == "mp3"
    assert float(out["duration"]) == pytest.approx(3, abs=0.2)


def test_a_video_with_a_soundtrack_is_still_accepted(video_mp4: Path) -> None:
    assert probe_source(video_mp4).duration_s == pytest.approx(5, abs=0.1)


# --- length limit ---------------------------------------------------------------------------


@pytest.fixture
def five_second_limit(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    """AUDIOFLOW_MAX_DURATION_S=5 for the code that reads it from the settings."""
    monkeypatch.setenv("AUDIOFLOW_MAX_DURATION_S", "5")
    get_settings.cache_clear()
    yield
    monkeypatch.undo()
    get_settings.cache_clear()


def test_a_header_over_the_limit_is_refused_before_decoding(
    stereo_mp3: Path, tmp_path: Path
) -> None:
    """The header says 20 s; the data after it is garbage. Refused by the header's length
    (the decode, had it run, would have found damage instead)."""
    headed_junk = tmp_path / "headed-junk.mp3"
    headed_junk.write_bytes(stereo_mp3.read_bytes()[:8192] + b"\x00junk" * 20_000)
    with pytest.raises(SourceTooLongError, match=r"is 20 s long; the limit is 5 s"):
        probe_source(headed_junk, max_duration_s=5)
    with pytest.raises(SourceTooLongError, match="AUDIOFLOW_MAX_DURATION_S"):
        probe_source(stereo_mp3, max_duration_s=5)
    assert probe_source(stereo_mp3, max_duration_s=21).duration_s == pytest.approx(20, abs=0.1)


def test_a_header_that_under_reports_is_stopped_while_decoding(tmp_path: Path) -> None:
    lying = lying_mp3(tmp_path, seconds=12, claimed_s=2)
    assert float(_ffprobe(lying)["duration"]) < 3  # ffprobe believes the header
    with pytest.raises(SourceTooLongError, match="decoding was stopped there"):
        probe_source(lying, max_duration_s=5)
    with pytest.raises(SourceTooLongError):
        check_decodes(lying, max_duration_s=5)
    assert probe_source(lying, max_duration_s=60).duration_s == pytest.approx(12, abs=0.2)


def test_encode_and_transcription_stop_at_the_limit(
    tmp_path: Path, five_second_limit: None
) -> None:
    """The bound holds even where no check ran first: the encoded output stops just past
    the limit, and the transcription decode refuses the rest."""
    lying = lying_mp3(tmp_path, seconds=12, claimed_s=2)
    dest = tmp_path / "capped.mp3"
    subprocess.run(
        build_command(lying, dest, get_format("mp3_64")), check=True, capture_output=True
    )
    assert float(_ffprobe(dest)["duration"]) == pytest.approx(6, abs=0.2)
    with pytest.raises(TranscriptionInputError, match="longer than the limit of 5 s"):
        list(stream_windows(lying, window_s=4))


def test_timeouts_scale_with_the_length_and_stop_at_the_limit() -> None:
    assert decode_timeout_s(3600, 21600) > decode_timeout_s(60, 21600)
    assert encode_timeout_s(3600, 21600) > encode_timeout_s(60, 21600)
    # A lying or missing length never buys more time than the limit's.
    assert decode_timeout_s(10**9, 21600) == decode_timeout_s(None, 21600)
    assert encode_timeout_s(None, 5) < encode_timeout_s(None, 21600)


def test_the_external_reference_fixture_really_points_elsewhere(hostile_dir: Path) -> None:
    """Control: with `-enable_drefs 1` (which audioflow never passes) ffmpeg decodes the
    other file's audio from the crafted M4A, even under both whitelists; its own samples
    are zeros."""
    builder, _ = HOSTILE["mp4-external-reference"]
    path = builder(hostile_dir, hostile_dir / "secret.mp3")
    followed = subprocess.run(
        ["ffmpeg", "-hide_banner", "-nostdin", "-enable_drefs", "1", "-format_whitelist",
         "mov", "-protocol_whitelist", "file", "-i", f"file:{path}",
         "-af", "volumedetect", "-f", "null", "-"],
        capture_output=True, text=True, timeout=60, check=True,
    )  # fmt: skip
    mean = float(followed.stderr.split("mean_volume:")[1].split("dB")[0])
    assert mean > -40, "the referenced tone was decoded"


def test_an_estimated_length_over_the_limit_is_left_to_the_decode(vbr_noxing_mp3: Path) -> None:
    """Without a Xing header ffprobe estimates ~26 s for these 10 s: an estimate proves
    nothing, so a 15 s limit accepts the file (its decoded length), and a 5 s limit refuses
    it during the decode."""
    assert probe(vbr_noxing_mp3).duration_s > 15
    assert probe_source(vbr_noxing_mp3, max_duration_s=15).duration_s == pytest.approx(10, abs=0.1)
    with pytest.raises(SourceTooLongError, match="decoding was stopped there"):
        probe_source(vbr_noxing_mp3, max_duration_s=5)


@pytest.fixture
def stalled_source(stereo_mp3: Path, tmp_path: Path) -> Iterator[Path]:
    """A FIFO that delivers the start of an MP3 and then nothing, never closing: an
    ffmpeg reading it stalls for good, so a timeout is the only way out."""
    fifo = tmp_path / "stalled.mp3"
    os.mkfifo(fifo)
    release = threading.Event()

    def feed() -> None:
        with open(fifo, "wb") as writer:  # blocks until a reader opens it
            writer.write(stereo_mp3.read_bytes()[:4096])
            writer.flush()
            release.wait(120)

    feeder = threading.Thread(target=feed, daemon=True)
    feeder.start()
    yield fifo
    release.set()
    with contextlib.suppress(OSError):  # unblock the feeder if nothing ever opened it
        os.close(os.open(fifo, os.O_RDONLY | os.O_NONBLOCK))
    feeder.join(30)


def test_a_stalled_decode_is_killed_with_a_reason(stalled_source: Path) -> None:
    with pytest.raises(BadAudioError, match=r"stalled\.mp3 could not be decoded within 1 s"):
        check_decodes(stalled_source, timeout_s=1.0)


def test_a_stalled_transcription_decode_is_killed_with_a_reason(
    stalled_source: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Per window, ffmpeg gets `decode_timeout_s(window)`; here 1 s instead of 30+."""
    monkeypatch.setattr(limits, "DECODE_BASE_S", 1.0)
    monkeypatch.setattr(limits, "DECODE_S_PER_S", 0.0)
    with pytest.raises(TranscriptionInputError, match=r"stalled: ffmpeg delivered no 4 s"):
        list(stream_windows(stalled_source, window_s=4))
