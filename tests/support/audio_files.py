"""Test audio made with ffmpeg's lavfi sources: one helper, so tests say what they need
(source, length, channels, bitrate) rather than spelling out ffmpeg's command line."""

from __future__ import annotations

import subprocess
from pathlib import Path

__all__ = ["ffmpeg", "lavfi_mp3"]


def ffmpeg(*args: str) -> None:
    """Run ffmpeg quietly to make a test file (not the code under test)."""
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args],
        check=True,
        capture_output=True,
        timeout=120,
    )


def lavfi_mp3(path: Path, source: str, *, channels: int = 1, bitrate: str = "128k") -> Path:
    """A CBR MP3 of the lavfi `source` (e.g. `sine=frequency=330:duration=3`) at `path`."""
    ffmpeg(
        "-f",
        "lavfi",
        "-i",
        source,
        "-ac",
        str(channels),
        "-c:a",
        "libmp3lame",
        "-b:a",
        bitrate,
        str(path),
    )
    return path
