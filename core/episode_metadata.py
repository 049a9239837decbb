"""Episode metadata and chapters as plain, validated values (no I/O, no ffmpeg, no mutagen).

These are what a task's payload says about the episode (`"metadata"` and `"chapters"`, issue
12) once the cover has been fetched from the store: `media.tags` writes them into every
output that can carry them, `media.chapters` reads chapters from a source into the same
`Chapter` values, and `chapters_document` renders the Podcasting 2.0 chapters file.

Why the checks live here: the API can refuse a bad payload (chapters out of order, a title
with a newline) with the same words the flow would use, without importing the tagging code.
A newline or other control character is refused in every single-line field because ID3,
MP4 and Vorbis comments all store them verbatim and players show them as garbage; the
description alone may hold newlines and tabs.

Times are seconds (float), as Podcasting 2.0 `startTime` is.
"""

from __future__ import annotations

import datetime as dt
import math
import unicodedata
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

__all__ = [
    "CHAPTERS_CONTENT_TYPE",
    "CHAPTERS_VERSION",
    "MAX_CHAPTERS",
    "MAX_DESCRIPTION_CHARS",
    "MAX_TEXT_CHARS",
    "Chapter",
    "ChapterError",
    "CoverArt",
    "EpisodeMetadata",
    "MetadataError",
    "chapters_document",
    "validate_chapters",
]

#: Podcasting 2.0 chapters file: `<podcast:chapters type="application/json+chapters">`.
CHAPTERS_CONTENT_TYPE = "application/json+chapters"
#: The version of the chapters format written (podcast-namespace jsonChapters.md).
CHAPTERS_VERSION = "1.2.0"
#: Longest title, artist, album, chapter title or URL accepted.
MAX_TEXT_CHARS = 1000
#: Longest description accepted (show notes can be long; ID3 and Vorbis have no real limit).
MAX_DESCRIPTION_CHARS = 20_000
#: Most chapters accepted: an episode with more is a mistake, and ID3 CTOC lists them all.
MAX_CHAPTERS = 1000


class MetadataError(ValueError):
    """Episode metadata is not acceptable; the message names the field and why."""


class ChapterError(ValueError):
    """A chapter list is not acceptable; the message names the chapter and why."""


def _check_text(value: object, what: str, *, limit: int, multiline: bool = False) -> str:
    """`value` stripped, if it is non-empty text without control characters, else an error."""
    if not isinstance(value, str):
        raise MetadataError(f"{what} must be text, got {type(value).__name__}")
    text = value.strip()
    if not text:
        raise MetadataError(f"{what} is empty")
    if len(text) > limit:
        raise MetadataError(f"{what} is longer than {limit} characters")
    allowed = "\n\t" if multiline else ""
    for char in text:
        if char not in allowed and unicodedata.category(char) in ("Cc", "Cs"):
            raise MetadataError(f"{what} contains a control character ({char!r})")
    return text


@dataclass(frozen=True)
class CoverArt:
    """Cover image bytes whose type and size `media.cover.check_cover` has established."""

    data: bytes
    #: `image/jpeg` or `image/png`, as found in the bytes (not as claimed by a client).
    mime: str
    width: int
    height: int


@dataclass(frozen=True)
class EpisodeMetadata:
    """What the payload's `"metadata"` says about the episode; every field optional.

    Construct through `EpisodeMetadata.checked(...)` (or the constructor, then `check()`),
    so text is stripped and refused with a reason when it cannot be written as a tag.
    """

    title: str | None = None
    artist: str | None = None
    album: str | None = None
    date: dt.date | None = None
    episode_number: int | None = None
    description: str | None = None
    cover: CoverArt | None = None

    @classmethod
    def checked(cls, **fields: Any) -> EpisodeMetadata:
        """Build and validate in one go; `date` may be an ISO `YYYY-MM-DD` string."""
        date = fields.get("date")
        if isinstance(date, str):
            try:
                fields["date"] = dt.date.fromisoformat(date)
            except ValueError as exc:
                raise MetadataError(f"date {date!r} is not a YYYY-MM-DD date") from exc
        return cls(**fields).check()

    def check(self) -> EpisodeMetadata:
        """A copy with stripped text; MetadataError naming the first bad field."""
        text: dict[str, str | None] = {}
        for name in ("title", "artist", "album"):
            value = getattr(self, name)
            text[name] = None if value is None else _check_text(value, name, limit=MAX_TEXT_CHARS)
        description = (
            None
            if self.description is None
            else _check_text(
                self.description, "description", limit=MAX_DESCRIPTION_CHARS, multiline=True
            )
        )
        if self.date is not None and not isinstance(self.date, dt.date):
            raise MetadataError("date must be a date")
        number = self.episode_number
        if number is not None and (
            isinstance(number, bool) or not isinstance(number, int) or not 0 <= number < 10**6
        ):
            raise MetadataError(f"episodeNumber {number!r} must be a whole number 0-999999")
        if self.cover is not None and not isinstance(self.cover, CoverArt):
            raise MetadataError("cover must be checked CoverArt (media.cover.check_cover)")
        return EpisodeMetadata(
            title=text["title"],
            artist=text["artist"],
            album=text["album"],
            date=self.date,
            episode_number=number,
            description=description,
            cover=self.cover,
        )

    def is_empty(self) -> bool:
        """True when there is nothing to write."""
        return all(
            getattr(self, name) is None
            for name in (
                "title", "artist", "album", "date", "episode_number", "description", "cover",
            )
        )  # fmt: skip


@dataclass(frozen=True)
class Chapter:
    """One chapter: where it starts (seconds from the beginning) and what it is called.

    `url` is a web page about the chapter; `image` the URL of its picture (Podcasting 2.0
    `img`; the payload's `imageKey` becomes a URL once published). Neither is written into
    the audio files (no player reads them there); both go into the chapters JSON.
    """

    start_s: float
    title: str
    url: str | None = None
    image: str | None = None


def validate_chapters(
    chapters: Sequence[Chapter], duration_s: float | None = None
) -> list[Chapter]:
    """The chapters with stripped titles, if they can be written as they are; else an error.

    Refused (ChapterError, naming the chapter): a start time that is not a finite number,
    negative, or not before `duration_s` (when given: a chapter must have some audio);
    start times not strictly increasing (unsorted or two chapters at the same time: every
    format orders chapters by start, and ID3 CHAP end times come from the next start); an
    empty title; more than `MAX_CHAPTERS`. An empty list is fine (no chapters).
    """
    if len(chapters) > MAX_CHAPTERS:
        raise ChapterError(f"{len(chapters)} chapters; at most {MAX_CHAPTERS} are accepted")
    checked: list[Chapter] = []
    previous: float | None = None
    for number, chapter in enumerate(chapters, start=1):
        where = f"chapter {number}"
        start = chapter.start_s
        if (
            isinstance(start, bool)
            or not isinstance(start, int | float)
            or not math.isfinite(start)
        ):
            raise ChapterError(f"{where}: startTime {start!r} is not a number of seconds")
        if start < 0:
            raise ChapterError(f"{where}: startTime {start} is negative")
        if duration_s is not None and start >= duration_s:
            raise ChapterError(
                f"{where}: startTime {start} is not within the audio ({duration_s:.3f} s)"
            )
        if previous is not None and start <= previous:
            problem = "is the same as" if start == previous else "is before"
            raise ChapterError(
                f"{where}: startTime {start} {problem} the previous chapter's ({previous}); "
                "chapters must be sorted by start time, one per start time"
            )
        try:
            title = _check_text(chapter.title, f"{where} title", limit=MAX_TEXT_CHARS)
            url = (
                None
                if chapter.url is None
                else _check_text(chapter.url, f"{where} url", limit=MAX_TEXT_CHARS)
            )
            image = (
                None
                if chapter.image is None
                else _check_text(chapter.image, f"{where} image", limit=MAX_TEXT_CHARS)
            )
        except MetadataError as exc:
            raise ChapterError(str(exc)) from None
        checked.append(Chapter(start_s=float(start), title=title, url=url, image=image))
        previous = start
    return checked


def chapters_document(chapters: Sequence[Chapter]) -> dict[str, Any]:
    """The Podcasting 2.0 chapters file (`application/json+chapters`) for `chapters`:
    `{"version": "1.2.0", "chapters": [{"startTime", "title", "url"?, "img"?}]}`.

    Optional keys are left out rather than written as null, as the format describes them;
    start times are rounded to milliseconds (what ID3 CHAP and Vorbis CHAPTERxx keep).
    """
    items: list[dict[str, Any]] = []
    for chapter in validate_chapters(chapters):
        item: dict[str, Any] = {"startTime": round(chapter.start_s, 3), "title": chapter.title}
        if chapter.url is not None:
            item["url"] = chapter.url
        if chapter.image is not None:
            item["img"] = chapter.image
        items.append(item)
    return {"version": CHAPTERS_VERSION, "chapters": items}
