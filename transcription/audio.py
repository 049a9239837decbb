"""Decode any audio file into bounded windows of 16 kHz mono samples, for long episodes.

Podcasts run for hours, and both engines build features for all the audio they are given at
once (unbatched faster-whisper peaks at 3.4 GB on a 60-minute file). So ffmpeg decodes to raw
float32 PCM on a pipe, and we hand the engine one window at a time: memory is bounded by the
window length, whatever the episode's length.

A window that ends mid-word would lose that word, so each window (except the last) is cut at
the quietest half second near its end and the rest is carried into the next window.
"""

from __future__ import annotations

import io
import subprocess
import tempfile
import threading
from collections.abc import Generator
from dataclasses import dataclass
from pathlib import Path
from typing import IO, cast

import numpy as np

from media import limits
from media.containers import input_args
from media.tools import ffmpeg, media_url
from transcription.errors import TranscriptionInputError

#: What both engines expect.
SAMPLE_RATE = 16_000
#: Default window length: ~38 MB of samples, a few hundred MB of features at most.
DEFAULT_WINDOW_S = 600.0
#: How far back from a window's end we look for a quiet place to cut.
CUT_SEARCH_S = 10.0
#: Length of the quiet stretch we look for; the cut is at its middle.
CUT_FRAME_S = 0.5
#: Hop between candidate frames.
CUT_HOP_S = 0.05
#: How much of ffmpeg's error output goes into an error message.
STDERR_TAIL_CHARS = 600

_BYTES_PER_SAMPLE = 4


@dataclass(frozen=True)
class AudioWindow:
    """A stretch of the episode's samples and where it starts, in seconds."""

    start_s: float
    samples: np.ndarray

    @property
    def duration_s(self) -> float:
        return len(self.samples) / SAMPLE_RATE

    @property
    def end_s(self) -> float:
        return self.start_s + self.duration_s


def find_cut(samples: np.ndarray, search_s: float = CUT_SEARCH_S) -> int:
    """Index at the middle of the quietest `CUT_FRAME_S` within the last `search_s` seconds.

    RMS over sliding frames, computed from a running sum of squares so that it stays cheap.
    Ties go to the latest frame, which keeps windows as long as possible.
    """
    frame = int(CUT_FRAME_S * SAMPLE_RATE)
    hop = max(1, int(CUT_HOP_S * SAMPLE_RATE))
    region_start = max(0, len(samples) - int(search_s * SAMPLE_RATE))
    region = samples[region_start:].astype(np.float64)
    if len(region) <= frame:
        return len(samples)
    energy = np.concatenate(([0.0], np.cumsum(region * region)))
    starts = np.arange(0, len(region) - frame + 1, hop)
    frame_energy = energy[starts + frame] - energy[starts]
    quietest = starts[len(starts) - 1 - int(np.argmin(frame_energy[::-1]))]
    return region_start + int(quietest) + frame // 2


def _stderr_tail(stderr_file: IO[bytes]) -> str:
    stderr_file.seek(0)
    text = stderr_file.read().decode("utf-8", errors="replace").strip()
    return text[-STDERR_TAIL_CHARS:] or "no error output"


def _read_samples(stream: io.BufferedReader, count: int) -> np.ndarray:
    """Read up to `count` float32 samples; fewer only at the end of the stream."""
    buffer = bytearray(count * _BYTES_PER_SAMPLE)
    view = memoryview(buffer)
    filled = 0
    while filled < len(buffer):
        got = stream.readinto(view[filled:])
        if not got:
            break
        filled += got
    filled -= filled % _BYTES_PER_SAMPLE
    return np.frombuffer(buffer, dtype=np.float32, count=filled // _BYTES_PER_SAMPLE)


def ffmpeg_command(path: Path, max_duration_s: float) -> list[str]:
    """ffmpeg decoding any allowed input to raw 16 kHz mono float32 on stdout, stopping just
    past `max_duration_s`."""
    return [
        ffmpeg(),
        "-nostdin",
        "-hide_banner",
        "-loglevel",
        "error",
        *input_args(),
        "-i",
        media_url(path),
        "-vn",
        "-f",
        "f32le",
        "-ac",
        "1",
        "-ar",
        str(SAMPLE_RATE),
        *limits.duration_cap_args(max_duration_s),
        "-",
    ]


def stream_windows(
    path: Path, window_s: float = DEFAULT_WINDOW_S
) -> Generator[AudioWindow, None, None]:
    """Yield the file's audio as consecutive windows of at most `window_s` seconds.

    Windows tile the audio exactly: each starts where the previous one was cut. Raises
    `TranscriptionInputError` when the file is missing, ffmpeg cannot decode it, it holds
    no samples or more than `AUDIOFLOW_MAX_DURATION_S` of them, or ffmpeg takes longer than
    `limits.decode_timeout_s(window_s)` to deliver one window (the engine's own time
    between windows is not counted: ffmpeg just waits on the pipe then). ffmpeg is killed
    if the consumer stops early.
    """
    if not path.exists():  # not is_file(): a FIFO is how the stall test feeds it
        raise TranscriptionInputError(f"audio file {path} does not exist")
    window = int(window_s * SAMPLE_RATE)
    if window < 2 * int(CUT_FRAME_S * SAMPLE_RATE):
        raise ValueError(f"window of {window_s} s is too short")
    search_s = min(CUT_SEARCH_S, window_s / 4)
    max_duration_s = limits.max_duration_s()
    read_timeout_s = limits.decode_timeout_s(window_s)
    timed_out = threading.Event()
    # stderr goes to a file, not a pipe, so that a chatty ffmpeg can never block on it.
    with tempfile.TemporaryFile() as stderr_file:
        process = subprocess.Popen(
            ffmpeg_command(path, max_duration_s),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=stderr_file,
        )
        stdout = cast(io.BufferedReader, process.stdout)

        def kill_stalled() -> None:
            timed_out.set()
            process.kill()

        def read_window(count: int) -> np.ndarray:
            watchdog = threading.Timer(read_timeout_s, kill_stalled)
            watchdog.daemon = True
            watchdog.start()
            try:
                return _read_samples(stdout, count)
            finally:
                watchdog.cancel()

        try:
            carry = np.zeros(0, dtype=np.float32)
            offset = 0
            while True:
                fresh = read_window(window - len(carry))
                samples = np.concatenate((carry, fresh)) if len(carry) else fresh
                if len(samples) < window:  # the stream ended: this is the last window
                    break
                cut = find_cut(samples, search_s)
                yield AudioWindow(offset / SAMPLE_RATE, samples[:cut])
                carry, offset = samples[cut:], offset + cut
            returncode = process.wait()
            if timed_out.is_set():
                raise TranscriptionInputError(
                    f"decoding {path.name} stalled: ffmpeg delivered no {window_s:.0f} s "
                    f"of audio within {read_timeout_s:.0f} s and was stopped"
                )
            if returncode != 0:
                raise TranscriptionInputError(
                    f"cannot decode {path.name}: {_stderr_tail(stderr_file)}"
                )
            if offset == 0 and len(samples) == 0:
                raise TranscriptionInputError(f"{path.name} contains no audio samples")
            if (offset + len(samples)) / SAMPLE_RATE > max_duration_s:
                raise TranscriptionInputError(
                    f"{path.name} is longer than the limit of {max_duration_s:.0f} s of "
                    "audio (AUDIOFLOW_MAX_DURATION_S)"
                )
            if len(samples):
                yield AudioWindow(offset / SAMPLE_RATE, samples)
        finally:
            if process.poll() is None:
                process.kill()
            process.wait()
            stdout.close()
