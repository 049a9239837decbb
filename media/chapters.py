"""Reading a source's chapters with ffprobe, for episodes whose payload names none.

ffprobe's `-show_chapters` surfaces every chapter kind a podcast source carries, each
decoded by ffmpeg's own demuxer: ID3v2 CHAP frames (MP3, and WAV/AIFF `id3 ` chunks), MP4
chapters (the QuickTime chapter track and Nero `chpl`), Vorbis comments
`CHAPTERxxx=HH:MM:SS.mmm` / `CHAPTERxxxNAME` (Ogg Vorbis/Opus, FLAC) and Matroska
chapters. Only the start time and the title are kept: that is all these formats agree on.

The source is a client's upload, so ffprobe opens it under the container allow-list
(`media.containers`) and a timeout, exactly like `media.probe`; a refused or unreadable
file raises the same errors (UnsupportedContainerError, BadAudioError).

What comes out is normalised, because sources are messy and an episode must not fail on
its upload's chapter list: chapters are sorted by start, a chapter at a start time already
taken is dropped (the first one wins), negative starts and starts at or past the end of
the audio are dropped, and an untitled chapter is called `Chapter N`. The result passes
`core.episode_metadata.validate_chapters` for the source's duration.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from core.episode_metadata import MAX_CHAPTERS, MAX_TEXT_CHARS, Chapter, validate_chapters
from media.limits import PROBE_TIMEOUT_S
from media.probe import ffprobe_json

__all__ = ["read_chapters"]

log = logging.getLogger(__name__)


def _title(tags: Any, number: int) -> str:
    """The chapter's title, one line, within the length limit; `Chapter N` when untitled."""
    raw = tags.get("title") if isinstance(tags, dict) else None
    text = " ".join(str(raw or "").split())[:MAX_TEXT_CHARS]
    printable = "".join(ch for ch in text if ch.isprintable())
    return printable or f"Chapter {number}"


def read_chapters(source: Path, *, duration_s: float | None = None) -> list[Chapter]:
    """The chapters in `source`, sorted and cleaned up (see the module docstring).

    `duration_s` (the decoded length from `probe_source`) drops chapters that start at or
    after the end of the audio; without it ffprobe's container duration is used. Returns
    [] for a file without chapters. Raises BadAudioError (or its subclass
    UnsupportedContainerError) when ffprobe cannot or may not read the file.
    """
    source = Path(source)
    data, _stderr = ffprobe_json(
        source,
        ["-show_chapters", "-show_entries", "format=duration"],
        level="error",
        too_slow=f"{source.name}: reading its chapters took longer than {PROBE_TIMEOUT_S:.0f} s",
        failed=f"the chapters of {source.name} could not be read",
        no_result=f"the chapters of {source.name} could not be read",
    )
    if duration_s is None:
        try:
            duration_s = float(str((data.get("format") or {}).get("duration")))
        except ValueError:  # "None", "N/A": unknown, nothing is dropped for being late
            duration_s = None

    found: dict[float, Chapter] = {}
    raw_chapters = data.get("chapters") or []
    for number, raw in enumerate(raw_chapters, start=1):
        try:
            start = round(float(raw.get("start_time")), 3)
        except (TypeError, ValueError):
            continue
        if start < 0 or (duration_s is not None and start >= duration_s) or start in found:
            continue
        found[start] = Chapter(start_s=start, title=_title(raw.get("tags"), number))
    chapters = [found[start] for start in sorted(found)][:MAX_CHAPTERS]
    if len(chapters) != len(raw_chapters):
        log.info(
            "%s: kept %d of its %d chapters (duplicates or out of range dropped)",
            source.name,
            len(chapters),
            len(raw_chapters),
        )
    return validate_chapters(chapters, duration_s)
