"""Streaming decode and windowing: windows tile the audio and cut where it is quiet."""

from __future__ import annotations

import subprocess
from pathlib import Path

import numpy as np
import pytest

from transcription.audio import SAMPLE_RATE, find_cut, stream_windows
from transcription.errors import TranscriptionInputError


def ffmpeg_lavfi(path: Path, source: str, seconds: float) -> Path:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", source,
         "-t", str(seconds), "-ac", "1", "-ar", "44100", str(path)],
        check=True,
    )  # fmt: skip
    return path


def test_find_cut_picks_the_quiet_stretch() -> None:
    samples = np.full(20 * SAMPLE_RATE, 0.5, dtype=np.float32)
    quiet_at = 15 * SAMPLE_RATE
    samples[quiet_at : quiet_at + SAMPLE_RATE // 2] = 0.0
    cut = find_cut(samples, search_s=10.0)
    assert abs(cut - (quiet_at + SAMPLE_RATE // 4)) < SAMPLE_RATE // 20


def test_find_cut_ignores_quiet_before_the_search_region() -> None:
    samples = np.full(20 * SAMPLE_RATE, 0.5, dtype=np.float32)
    samples[: 5 * SAMPLE_RATE] = 0.0
    assert find_cut(samples, search_s=10.0) >= 10 * SAMPLE_RATE


def test_windows_tile_the_audio_and_stay_bounded(tmp_path: Path) -> None:
    # A tone that drops out for 0.3 s each second, like pauses between words.
    source = "sine=frequency=440:sample_rate=44100,volume='if(lt(mod(t,1),0.7),1,0)':eval=frame"
    path = ffmpeg_lavfi(tmp_path / "tone.flac", source, 30.0)
    windows = list(stream_windows(path, window_s=8.0))
    total = sum(len(w.samples) for w in windows)
    assert total == pytest.approx(30 * SAMPLE_RATE, abs=SAMPLE_RATE // 100)
    position = 0.0
    for window in windows:
        assert window.start_s == pytest.approx(position)
        assert window.duration_s <= 8.0
        assert window.samples.dtype == np.float32 and window.samples.flags.writeable
        position = window.end_s
    for window in windows[:-1]:
        # Each cut falls in a pause (0.7-1.0 s into a second), not in the tone.
        assert 0.7 <= window.end_s % 1.0 <= 1.0


def test_short_file_is_one_window(tmp_path: Path) -> None:
    path = ffmpeg_lavfi(tmp_path / "short.wav", "sine=frequency=300", 2.0)
    (window,) = stream_windows(path, window_s=8.0)
    assert window.start_s == 0.0 and window.duration_s == pytest.approx(2.0, abs=0.01)


def test_not_audio_is_an_input_error_with_ffmpeg_reason(tmp_path: Path) -> None:
    path = tmp_path / "notes.mp3"
    path.write_text("this is not audio at all\n" * 50)
    with pytest.raises(TranscriptionInputError, match=r"cannot decode notes\.mp3: \[mp3 @ .+"):
        list(stream_windows(path))


def test_missing_file_is_an_input_error(tmp_path: Path) -> None:
    with pytest.raises(TranscriptionInputError, match="does not exist"):
        list(stream_windows(tmp_path / "nope.wav"))


def test_audio_without_samples_is_an_input_error(tmp_path: Path) -> None:
    path = ffmpeg_lavfi(tmp_path / "nothing.wav", "anullsrc=r=16000:cl=mono", 0.0)
    with pytest.raises(TranscriptionInputError, match="no audio samples"):
        list(stream_windows(path))


def test_file_without_audio_stream_is_an_input_error(tmp_path: Path) -> None:
    path = tmp_path / "picture.png"
    subprocess.run(
        ["ffmpeg", "-nostdin", "-loglevel", "error", "-f", "lavfi", "-i", "color=red:s=8x8",
         "-frames:v", "1", str(path)],
        check=True,
    )  # fmt: skip
    with pytest.raises(TranscriptionInputError):
        list(stream_windows(path))


def test_stopping_early_stops_ffmpeg(tmp_path: Path) -> None:
    path = ffmpeg_lavfi(tmp_path / "tone.wav", "sine=frequency=300", 20.0)
    windows = stream_windows(path, window_s=4.0)
    next(windows)
    windows.close()  # must not hang or leave ffmpeg running
