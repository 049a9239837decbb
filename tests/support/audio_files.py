"""Test audio made with ffmpeg's lavfi sources: one helper, so tests say what they need
(source, length, channels, bitrate) rather than spelling out ffmpeg's command line."""

from __future__ import annotations

import io
import math
import struct
import subprocess
import wave
from pathlib import Path

__all__ = ["ffmpeg", "lavfi", "lavfi_mp3", "tone_wav_bytes"]


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly to make a test file (not the code under test)."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args],
        check=True,
        capture_output=True,
        timeout=120,
    )


def lavfi(path: Path, source: str, *output_args: str) -> Path:
    """The lavfi `source` (e.g. `sine=frequency=440:duration=3`) written to `path`, with
    `output_args` (codec, channels, bitrate) before it; the format follows the extension."""
    ffmpeg("-f", "lavfi", "-i", source, *output_args, str(path))
    return path


def lavfi_mp3(path: Path, source: str, *, channels: int = 1, bitrate: str = "128k") -> Path:
    """A CBR MP3 of the lavfi `source` (e.g. `sine=frequency=330:duration=3`) at `path`."""
    return lavfi(path, source, "-ac", str(channels), "-c:a", "libmp3lame", "-b:a", bitrate)


def tone_wav_bytes(seconds: float = 0.3, rate: int = 8000) -> bytes:
    """A real, decodable mono 16-bit WAV of a 440 Hz tone, made in memory (no ffmpeg):
    for request bodies, where uploads are checked by decoding."""
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(
            b"".join(
                struct.pack("<h", int(8000 * math.sin(2 * math.pi * 440 * n / rate)))
                for n in range(int(seconds * rate))
            )
        )
    return buffer.getvalue()
