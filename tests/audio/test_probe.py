"""Probing sources and verifying outputs with the real ffprobe/ffmpeg."""

from __future__ import annotations

import random
import shutil
import subprocess
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import pytest

from core.formats import get_format
from media.encode import encode
from media.probe import (
    AudioInfo,
    BadAudioError,
    OutputCheckError,
    UnsupportedContainerError,
    check_decodes,
    probe,
    probe_source,
    verify_output,
)


def test_probe_standard_mp3(stereo_mp3: Path) -> None:
    info = probe(stereo_mp3)
    assert info.codec == "mp3"
    assert info.channels == 2
    assert info.sample_rate == 44100
    assert info.bitrate_kbps == pytest.approx(128, abs=1)
    assert info.duration_s == pytest.approx(20, abs=0.1)
    assert info.container == "mp3"


def test_probe_takes_the_audio_stream_of_a_video(video_mp4: Path) -> None:
    info = probe(video_mp4)
    assert info.codec == "aac"
    assert info.duration_s == pytest.approx(5, abs=0.1)
    assert "mp4" in info.container
    assert info.bitrate_kbps is not None and info.bitrate_kbps < 200  # not the video's


def test_zero_byte_file(empty_mp3: Path) -> None:
    with pytest.raises(BadAudioError, match=r"empty\.mp3 is empty \(0 bytes\)"):
        probe(empty_mp3)


def test_text_file_named_mp3(text_mp3: Path) -> None:
    with pytest.raises(BadAudioError) as caught:
        probe(text_mp3)
    message = str(caught.value)
    assert message.startswith("notes.mp3 is not an audio or video file ffmpeg can read")
    assert str(text_mp3.parent) not in message, "no internal paths in user-facing messages"


def test_random_bytes(corrupt_mp3: Path) -> None:
    with pytest.raises(BadAudioError, match=r"corrupt\.mp3"):
        probe(corrupt_mp3)
    with pytest.raises(BadAudioError):
        probe_source(corrupt_mp3)


def test_no_audio_stream(make_audio: Callable[..., Path]) -> None:
    silent_video = make_audio(
        "video-only.mp4", "-f", "lavfi", "-i", "testsrc=size=64x64:rate=5:duration=1",
        "-c:v", "libx264", "-pix_fmt", "yuv420p",
    )  # fmt: skip
    with pytest.raises(BadAudioError, match=r"no audio stream \(it has video only\)"):
        probe(silent_video)


def test_an_image_is_refused_as_an_image(image_png: Path) -> None:
    """A still image is opened by an image demuxer, which is not on the allow-list."""
    with pytest.raises(UnsupportedContainerError, match=r"picture\.png is an image"):
        probe(image_png)


def test_missing_file_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        probe(tmp_path / "nope.mp3")


def test_odd_file_names(stereo_mp3: Path, tmp_path: Path) -> None:
    """A leading '-' is not an option and 'take:2' is not a protocol."""
    odd = tmp_path / "-take:2 (final).mp3"
    shutil.copy(stereo_mp3, odd)
    assert probe(odd).codec == "mp3"
    assert check_decodes(odd).decoded_s == pytest.approx(20, abs=0.1)


def test_check_decodes_clean_file(stereo_mp3: Path) -> None:
    report = check_decodes(stereo_mp3)
    assert report.decoded_s == pytest.approx(20, abs=0.1)
    assert report.error_lines == 0


def test_truncated_mp3_passes_probe_but_not_probe_source(truncated_mp3: Path) -> None:
    """The Xing header still says 20 s and ffmpeg exits 0 after decoding 10 s: only a full
    decode compared with the header notices. Such an upload is refused, not published cut."""
    assert probe(truncated_mp3).duration_s == pytest.approx(20, abs=0.1)
    assert check_decodes(truncated_mp3).decoded_s == pytest.approx(10, abs=0.5)
    with pytest.raises(BadAudioError, match=r"looks truncated.*20\.0 s but only 10\.\d s"):
        probe_source(truncated_mp3)


def test_damaged_mp3_without_xing_header_is_refused(
    make_audio: Callable[..., Path], tmp_path: Path
) -> None:
    """Without a Xing header the length is only estimated, so shortness alone proves
    nothing; but a valid start followed by junk decodes a fraction of a second among
    decoding errors, and must not be published as a 0.3 s episode."""
    clean = make_audio(
        "cbr-noxing.mp3",
        "-f", "lavfi", "-i", "sine=duration=20", "-b:a", "128k", "-write_xing", "0",
    )  # fmt: skip
    damaged = tmp_path / "damaged.mp3"
    damaged.write_bytes(clean.read_bytes()[:4096] + random.Random(7).randbytes(120_000))
    with pytest.raises(BadAudioError, match=r"looks damaged.*decoding errors"):
        probe_source(damaged)
    # Cut short but clean (an interrupted upload without Xing header): nothing says it
    # was longer, so it is accepted with its decoded length.
    half = tmp_path / "half.mp3"
    data = clean.read_bytes()
    half.write_bytes(data[: len(data) // 2])
    assert probe_source(half).duration_s == pytest.approx(10, abs=0.5)


def test_probe_source_returns_the_decoded_duration(stereo_mp3: Path) -> None:
    info = probe_source(stereo_mp3)
    assert info.duration_s == pytest.approx(20, abs=0.1)
    assert info.codec == "mp3" and info.channels == 2


def test_estimated_duration_is_replaced_by_the_decoded_one(vbr_noxing_mp3: Path) -> None:
    """Without a Xing header ffprobe guesses the length from the first (silent, tiny)
    frames; the guess is far off. It proves nothing about truncation, so the file is
    accepted with its real, decoded length."""
    guessed = probe(vbr_noxing_mp3).duration_s
    real = probe_source(vbr_noxing_mp3).duration_s
    assert real == pytest.approx(10, abs=0.1)
    assert abs(guessed - real) > 2


def test_unknown_duration(live_mka: Path) -> None:
    with pytest.raises(BadAudioError, match="length of the audio is unknown"):
        probe(live_mka)
    # A full decode knows the length: live recordings are accepted by probe_source.
    assert probe_source(live_mka).duration_s == pytest.approx(3, abs=0.1)


def test_verify_output_accepts_a_good_encode(stereo_mp3: Path, tmp_path: Path) -> None:
    source = probe_source(stereo_mp3)
    out = tmp_path / "o.mp3"
    encode(stereo_mp3, out, get_format("mp3_64"))
    info = verify_output(out, get_format("mp3_64"), source)
    assert (info.codec, info.channels, info.sample_rate) == ("mp3", 1, 44100)
    assert info.bitrate_kbps == pytest.approx(64, rel=0.05)


def test_verify_output_lists_every_difference(stereo_mp3: Path, tmp_path: Path) -> None:
    source = probe_source(stereo_mp3)
    out = tmp_path / "o.mp3"
    encode(stereo_mp3, out, get_format("mp3_128"))
    with pytest.raises(OutputCheckError) as caught:
        verify_output(out, get_format("aac_128"), replace(source, duration_s=30.0))
    message = str(caught.value)
    assert "codec is 'mp3', expected 'aac'" in message
    assert "duration 20.0" in message and "source is 30.00 s" in message
    with pytest.raises(OutputCheckError, match="2 channels, expected 1"):
        verify_output(out, get_format("mp3_64"), source)
    with pytest.raises(OutputCheckError, match=r"bitrate 128\.0 kbit/s, expected 320"):
        verify_output(out, get_format("mp3_320"), source)


def test_verify_output_keeps_mono_and_caps_channels_at_two(tmp_path: Path) -> None:
    """With `channels=None` a stereo output is wrong for a mono source, right for 5.1."""
    stereo_out = tmp_path / "stereo.flac"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "sine=d=1",
         "-ac", "2", "-c:a", "flac", "-sample_fmt", "s16", str(stereo_out)],
        check=True,
    )  # fmt: skip
    fmt = get_format("flac")
    mono_source = AudioInfo(1.0, "mp3", 128.0, 1, 44100, "mp3")
    with pytest.raises(OutputCheckError, match="2 channels, expected 1"):
        verify_output(stereo_out, fmt, mono_source)
    verify_output(stereo_out, fmt, replace(mono_source, channels=6))


def test_unreadable_output_is_an_output_check_error(text_mp3: Path, stereo_mp3: Path) -> None:
    with pytest.raises(OutputCheckError, match="not readable audio"):
        verify_output(text_mp3, get_format("mp3_128"), probe(stereo_mp3))
