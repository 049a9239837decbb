"""Locating and running the ffmpeg/ffprobe binaries the audio package shells out to.

ffmpeg is used as a separate process, never as a library, so that a crash or a pathological
file cannot take the Python worker down with it and so that memory stays in the child.
"""

from __future__ import annotations

import os
import shutil
from functools import cache
from pathlib import Path
from typing import IO

__all__ = ["ToolMissingError", "ffmpeg", "ffprobe", "media_url", "read_tail"]


class ToolMissingError(RuntimeError):
    """ffmpeg or ffprobe is not installed; a deployment problem, not a bad file."""


@cache
def _which(name: str) -> str:
    found = shutil.which(name)
    if found is None:
        raise ToolMissingError(
            f"{name} is not on PATH; install ffmpeg (Debian: apt-get install ffmpeg)"
        )
    return found


def ffmpeg() -> str:
    """Absolute path of the ffmpeg binary (looked up once per process)."""
    return _which("ffmpeg")


def ffprobe() -> str:
    """Absolute path of the ffprobe binary (looked up once per process)."""
    return _which("ffprobe")


def media_url(path: Path) -> str:
    """`path` as an unambiguous ffmpeg argument.

    An absolute `file:` URL, so a name beginning with `-` is not read as an option and a
    name containing `:` (`take:2.mp3`) is not read as a protocol.
    """
    return "file:" + os.fspath(Path(path).absolute())


def read_tail(log: IO[bytes], max_bytes: int = 8192, max_lines: int = 20) -> str:
    """The last lines of a log file object (an ffmpeg stderr capture), decoded leniently."""
    log.flush()
    log.seek(0, os.SEEK_END)
    log.seek(max(0, log.tell() - max_bytes))
    data = log.read()
    lines = data.decode("utf-8", "replace").strip().splitlines()
    return "\n".join(line.rstrip() for line in lines[-max_lines:])
