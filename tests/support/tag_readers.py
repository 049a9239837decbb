"""Independent readers of what an output file carries: ffprobe's JSON and its tags, for the
tag tests (tests/audio) and the podcast e2e tests alike."""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any


def ffprobe_json(path: Path) -> dict[str, Any]:
    """Everything ffprobe says about `path` (format, chapters, streams)."""
    done = subprocess.run(
        ["ffprobe", "-v", "error", "-of", "json", "-show_format", "-show_chapters",
         "-show_streams", str(path)],
        capture_output=True, check=True, timeout=30,
    )  # fmt: skip
    data: dict[str, Any] = json.loads(done.stdout)
    return data


def all_tags(probed: dict[str, Any]) -> dict[str, str]:
    """Container tags plus the audio stream's (Ogg keeps Vorbis comments on the stream),
    with lower-case keys (FLAC reports `TITLE`, MP3 `title`)."""
    tags: dict[str, str] = {}
    audio = next(s for s in probed["streams"] if s["codec_type"] == "audio")
    for source in (probed["format"].get("tags") or {}, audio.get("tags") or {}):
        tags.update({key.lower(): value for key, value in source.items()})
    return tags
