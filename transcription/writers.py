"""Transcript file formats for podcast apps: Podcasting 2.0 JSON, WebVTT, SRT and plain text.

Apps read these through `<podcast:transcript url=... type=...>`. Each writer renders one
entry of `core.formats.TRANSCRIPT_FORMATS`, which holds its name, file extension and the MIME
type to put in that `type` attribute (and on the stored object). Output is UTF-8 text.

Timing is normalised once for every format: never negative, each segment starting no earlier
than the previous one ended, end never before start. Caption formats (VTT, SRT) also keep cues
readable on a phone: at most `MAX_LINES` lines of about `MAX_LINE_CHARS` characters; a longer
segment becomes several cues, its time shared out in proportion to their text.
"""

from __future__ import annotations

import json
import textwrap
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from core.formats import TRANSCRIPT_FORMATS, TranscriptFormat
from transcription.errors import UnknownWriterError
from transcription.types import Segment, Transcript

#: Caption line length: the common broadcast guideline, readable on small screens.
MAX_LINE_CHARS = 42
#: Lines per caption cue.
MAX_LINES = 2
#: Plain text starts a new paragraph after a pause this long...
PARAGRAPH_PAUSE_S = 2.0
#: ...or once a paragraph is this long and a sentence ends.
PARAGRAPH_MAX_CHARS = 600
#: Version of the Podcasting 2.0 JSON transcript format written.
PODCAST_JSON_VERSION = "1.0.0"


def format_timestamp(seconds: float, decimal_marker: str = ".") -> str:
    """`HH:MM:SS.mmm` (`,` for SRT); hours grow past 99 rather than wrap; negatives clamp to 0."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def timeline(transcript: Transcript) -> list[Segment]:
    """The transcript's segments with text, in order, with sane, non-overlapping times."""
    segments: list[Segment] = []
    previous_end = 0.0
    for segment in transcript.segments:
        text = " ".join(segment.text.split())
        if not text:
            continue
        start = float(max(segment.start, previous_end, 0.0))
        end = float(max(segment.end, start))
        segments.append(Segment(start, end, text))
        previous_end = end
    return segments


@dataclass(frozen=True)
class Cue:
    """One caption on screen: its time and its (at most `MAX_LINES`) lines."""

    start: float
    end: float
    lines: list[str]


def cues(transcript: Transcript) -> list[Cue]:
    """Caption cues: segments wrapped into lines, split into cues of at most `MAX_LINES`."""
    result: list[Cue] = []
    for segment in timeline(transcript):
        lines = textwrap.wrap(
            segment.text, MAX_LINE_CHARS, break_long_words=True, break_on_hyphens=False
        )
        groups = [lines[i : i + MAX_LINES] for i in range(0, len(lines), MAX_LINES)]
        weights = [sum(len(line) for line in group) for group in groups]
        total = sum(weights)
        duration = segment.end - segment.start
        done = 0
        for group, weight in zip(groups, weights, strict=True):
            start = segment.start + duration * done / total
            done += weight
            end = segment.end if done == total else segment.start + duration * done / total
            result.append(Cue(start, end, group))
    return result


class TranscriptWriter(ABC):
    """Renders one transcript format (`core.formats.TranscriptFormat`)."""

    #: The format this writer renders: its name, extension and MIME type.
    format: ClassVar[TranscriptFormat]

    @property
    def name(self) -> str:
        """Registry key (the format's name)."""
        return self.format.name

    @property
    def extension(self) -> str:
        """File extension without the dot."""
        return self.format.extension

    @property
    def content_type(self) -> str:
        """MIME type, as Podcasting 2.0's `<podcast:transcript type=...>` expects it."""
        return self.format.content_type

    @abstractmethod
    def render(self, transcript: Transcript) -> str:
        """The whole file's text."""


class PodcastJsonWriter(TranscriptWriter):
    """Podcasting 2.0 JSON: `{"version", "segments": [{"startTime", "endTime", "body"}]}`."""

    format = TRANSCRIPT_FORMATS["json"]

    def render(self, transcript: Transcript) -> str:
        document = {
            "version": PODCAST_JSON_VERSION,
            "segments": [
                {"startTime": round(s.start, 3), "endTime": round(s.end, 3), "body": s.text}
                for s in timeline(transcript)
            ],
        }
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _escape_vtt(text: str) -> str:
    # WebVTT cue text is markup: these three would start tags or entities (or form "-->").
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WebVttWriter(TranscriptWriter):
    """WebVTT: what Apple Podcasts ingests and browsers play natively."""

    format = TRANSCRIPT_FORMATS["vtt"]

    def render(self, transcript: Transcript) -> str:
        blocks = [
            f"{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n"
            + "\n".join(_escape_vtt(line) for line in c.lines)
            + "\n"
            for c in cues(transcript)
        ]
        return "WEBVTT\n\n" + "\n".join(blocks) if blocks else "WEBVTT\n"


class SrtWriter(TranscriptWriter):
    """SubRip: numbered cues with comma-decimal timestamps (a `-->` in text would read as one)."""

    format = TRANSCRIPT_FORMATS["srt"]

    def render(self, transcript: Transcript) -> str:
        return "\n".join(
            f"{number}\n{format_timestamp(c.start, ',')} --> {format_timestamp(c.end, ',')}\n"
            + "\n".join(line.replace("-->", "->") for line in c.lines)
            + "\n"
            for number, c in enumerate(cues(transcript), start=1)
        )


class PlainTextWriter(TranscriptWriter):
    """Readable text without times: paragraphs break at pauses or after long runs."""

    format = TRANSCRIPT_FORMATS["txt"]

    def render(self, transcript: Transcript) -> str:
        paragraphs: list[list[str]] = []
        length = 0
        previous: Segment | None = None
        for segment in timeline(transcript):
            pause = previous is not None and segment.start - previous.end >= PARAGRAPH_PAUSE_S
            long_enough = (
                previous is not None
                and length >= PARAGRAPH_MAX_CHARS
                and previous.text.endswith((".", "?", "!"))
            )
            if not paragraphs or pause or long_enough:
                paragraphs.append([])
                length = 0
            paragraphs[-1].append(segment.text)
            length += len(segment.text) + 1
            previous = segment
        return "\n\n".join(" ".join(p) for p in paragraphs) + "\n" if paragraphs else ""


WRITERS: dict[str, TranscriptWriter] = {
    writer.name: writer
    for writer in (PodcastJsonWriter(), WebVttWriter(), SrtWriter(), PlainTextWriter())
}


def get_writer(name: str) -> TranscriptWriter:
    """The writer registered as `name`, or `UnknownWriterError` listing the known ones."""
    try:
        return WRITERS[name]
    except KeyError:
        raise UnknownWriterError(
            f"unknown transcript format {name!r}; known formats: {', '.join(WRITERS)}"
        ) from None
