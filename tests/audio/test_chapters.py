"""Chapters: read from sources that ffmpeg made, validated, and published as Podcasting 2.0 JSON.

The sources are written by ffmpeg from an FFMETADATA chapters file (MP3: ID3 CHAP/CTOC;
M4A: QuickTime chapter track and Nero chpl; Opus in Ogg: Vorbis CHAPTERxxx comments;
Matroska chapters), and, because ffmpeg 5.1 writes no FLAC chapters, a FLAC whose Vorbis
comments are set with mutagen directly: what `media.chapters.read_chapters` returns must be
exactly what was put in. The JSON is checked against a JSON Schema of the Podcasting 2.0
chapters format written here from its specification, with jsonschema.
"""

from __future__ import annotations

import json
from pathlib import Path

import jsonschema
import pytest
from mutagen.flac import FLAC, VCFLACDict

from core.episode_metadata import (
    CHAPTERS_CONTENT_TYPE,
    Chapter,
    ChapterError,
    chapters_document,
    validate_chapters,
)
from media.chapters import read_chapters
from media.probe import BadAudioError, UnsupportedContainerError
from tests.audio.conftest import MakeAudio

#: What goes into every source: titles with the characters FFMETADATA escapes, and Unicode.
#: Every start's fraction of a second is below one half: ffmpeg 5.1's Ogg muxer rounds the
#: seconds of a Vorbis CHAPTERxxx time to the nearest and then adds the milliseconds
#: (2.5 s is written `00:00:03.500`, measured), so later times would test ffmpeg's bug.
EXPECTED = [
    Chapter(0.0, "Welcome"),
    Chapter(2.25, "News = views; #1 \\ with backslash"),
    Chapter(5.125, "Interview with Zoë"),
    Chapter(7.4, "Goodbye"),
]
DURATION_S = 10.0


def ffmetadata(chapters: list[tuple[int, int, str | None]]) -> str:
    """An FFMETADATA1 file with these (start ms, end ms, title) chapters, escaped as
    ffmpeg's documentation says (`=`, `;`, `#`, `\\` and newline take a backslash)."""
    lines = [";FFMETADATA1"]
    for start, end, title in chapters:
        lines += ["[CHAPTER]", "TIMEBASE=1/1000", f"START={start}", f"END={end}"]
        if title is not None:
            escaped = "".join("\\" + ch if ch in "=;#\\\n" else ch for ch in title)
            lines.append(f"title={escaped}")
    return "\n".join(lines) + "\n"


def expected_ffmetadata() -> str:
    ends = [*(round(c.start_s * 1000) for c in EXPECTED[1:]), round(DURATION_S * 1000)]
    return ffmetadata(
        [(round(c.start_s * 1000), end, c.title) for c, end in zip(EXPECTED, ends, strict=True)]
    )


@pytest.fixture(scope="module")
def chapters_file(audio_dir: Path) -> Path:
    path = audio_dir / "chapters.ffmeta"
    path.write_text(expected_ffmetadata(), encoding="utf-8")
    return path


def with_chapters(make_audio: MakeAudio, name: str, meta: Path, *codec: str) -> Path:
    return make_audio(
        name, "-f", "lavfi", "-i", f"sine=frequency=330:duration={DURATION_S}",
        "-f", "ffmetadata", "-i", str(meta), "-map", "0:a", "-map_metadata", "1",
        "-map_chapters", "1", *codec,
    )  # fmt: skip


@pytest.mark.parametrize(
    ("name", "codec"),
    [
        ("chapters.mp3", ("-c:a", "libmp3lame")),
        ("chapters.m4a", ("-c:a", "aac")),
        ("chapters.opus", ("-c:a", "libopus")),
        ("chapters-opus.ogg", ("-c:a", "libopus", "-f", "ogg")),
        ("chapters.mka", ("-c:a", "libopus")),
    ],
    ids=["mp3-id3-chap", "m4a", "opus", "ogg-opus", "matroska"],
)
def test_chapters_read_from_sources_ffmpeg_wrote(
    name: str, codec: tuple[str, ...], make_audio: MakeAudio, chapters_file: Path
) -> None:
    source = with_chapters(make_audio, name, chapters_file, *codec)
    assert read_chapters(source) == EXPECTED


def test_flac_vorbis_chapter_comments(make_audio: MakeAudio) -> None:
    source = make_audio(
        "chapters.flac", "-f", "lavfi", "-i", f"sine=duration={DURATION_S}", "-c:a", "flac"
    )
    flac = FLAC(source)
    assert isinstance(flac.tags, VCFLACDict)
    flac.tags.extend(
        [
            ("CHAPTER001", "00:00:00.000"), ("CHAPTER001NAME", "Welcome"),
            ("CHAPTER002", "00:00:02.250"), ("CHAPTER002NAME", EXPECTED[1].title),
            ("CHAPTER003", "00:00:05.125"), ("CHAPTER003NAME", "Interview with Zoë"),
            ("CHAPTER004", "00:00:07.400"), ("CHAPTER004NAME", "Goodbye"),
        ]
    )  # fmt: skip
    flac.save()
    assert read_chapters(source) == EXPECTED


def test_messy_source_chapters_are_cleaned_up(make_audio: MakeAudio, audio_dir: Path) -> None:
    """Untitled chapters get a name; a chapter past the end of the audio is dropped."""
    meta = audio_dir / "messy.ffmeta"
    meta.write_text(
        ffmetadata([(0, 4000, None), (4000, 9000, "  Spaced   out  "), (12_000, 13_000, "Gone")])
    )
    source = with_chapters(make_audio, "messy.mka", meta, "-c:a", "libopus")
    assert read_chapters(source, duration_s=DURATION_S) == [
        Chapter(0.0, "Chapter 1"),
        Chapter(4.0, "Spaced out"),
    ]


def test_source_without_chapters(make_audio: MakeAudio) -> None:
    plain = make_audio("no-chapters.mp3", "-f", "lavfi", "-i", "sine=duration=1")
    assert read_chapters(plain) == []


def test_refused_and_unreadable_sources(audio_dir: Path) -> None:
    playlist = audio_dir / "list.mp3"
    playlist.write_text("#EXTM3U\n#EXT-X-TARGETDURATION:10\n#EXTINF:10,\n/etc/hostname\n")
    with pytest.raises(UnsupportedContainerError, match="HLS playlist"):
        read_chapters(playlist)
    notes = audio_dir / "chapter-notes.mp3"
    notes.write_text("not audio\n" * 50)
    with pytest.raises(BadAudioError, match=r"chapters of chapter-notes\.mp3 could not be read"):
        read_chapters(notes)


# --- validation -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("chapters", "reason"),
    [
        ([Chapter(0, "a"), Chapter(0, "b")], r"chapter 2: startTime 0 is the same as"),
        ([Chapter(5, "a"), Chapter(1, "b")], r"chapter 2: startTime 1 is before .* sorted"),
        ([Chapter(-0.5, "a")], "chapter 1: startTime -0.5 is negative"),
        ([Chapter(0, "a"), Chapter(10.0, "b")], r"chapter 2: startTime 10\.0 is not within"),
        ([Chapter(float("nan"), "a")], "is not a number of seconds"),
        ([Chapter(True, "a")], "is not a number of seconds"),
        ([Chapter(0, "  ")], "chapter 1 title is empty"),
        ([Chapter(0, "two\nlines")], "chapter 1 title contains a control character"),
        ([Chapter(0, "a", url="")], "chapter 1 url is empty"),
        ([Chapter(i, "c") for i in range(1001)], "at most 1000"),
    ],
    ids=["duplicate", "unsorted", "negative", "past-end", "nan", "bool", "untitled",
         "newline", "empty-url", "too-many"],
)  # fmt: skip
def test_invalid_chapters(chapters: list[Chapter], reason: str) -> None:
    with pytest.raises(ChapterError, match=reason):
        validate_chapters(chapters, duration_s=10.0 if len(chapters) < 1000 else None)


def test_valid_chapters_are_returned_stripped() -> None:
    assert validate_chapters([Chapter(0, " Intro "), Chapter(9.999, "End")], 10.0) == [
        Chapter(0.0, "Intro"),
        Chapter(9.999, "End"),
    ]
    assert validate_chapters([]) == []


# --- Podcasting 2.0 chapters JSON ------------------------------------------------------------

#: The Podcasting 2.0 JSON chapters format (podcast namespace, jsonChapters.md), as a schema:
#: `version` and `chapters` required; each chapter needs `startTime` (seconds, >= 0); `title`,
#: `img`, `url`, `toc`, `endTime`, `location` are optional; other keys are allowed.
PODCASTING_2_CHAPTERS_SCHEMA = {
    "$schema": "https://json-schema.org/draft/2020-12/schema",
    "type": "object",
    "required": ["version", "chapters"],
    "properties": {
        "version": {"type": "string", "pattern": r"^\d+\.\d+\.\d+$"},
        "author": {"type": "string"},
        "title": {"type": "string"},
        "podcastName": {"type": "string"},
        "description": {"type": "string"},
        "fileName": {"type": "string"},
        "waypoints": {"type": "boolean"},
        "chapters": {
            "type": "array",
            "items": {
                "type": "object",
                "required": ["startTime"],
                "properties": {
                    "startTime": {"type": "number", "minimum": 0},
                    "endTime": {"type": "number", "minimum": 0},
                    "title": {"type": "string"},
                    "img": {"type": "string"},
                    "url": {"type": "string", "format": "uri"},
                    "toc": {"type": "boolean"},
                    "location": {"type": "object"},
                },
            },
        },
    },
}


def test_chapters_json_has_the_podcasting_2_shape() -> None:
    chapters = [
        Chapter(0, "Welcome", image="https://cdn.example.org/ep12/welcome.jpg"),
        Chapter(2.5, "News", url="https://example.org/news"),
        Chapter(5.1254, "Goodbye"),
    ]
    document = json.loads(json.dumps(chapters_document(chapters)))  # as it is stored
    jsonschema.validate(
        document,
        PODCASTING_2_CHAPTERS_SCHEMA,
        format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER,
    )
    assert document == {
        "version": "1.2.0",
        "chapters": [
            {
                "startTime": 0.0,
                "title": "Welcome",
                "img": "https://cdn.example.org/ep12/welcome.jpg",
            },
            {"startTime": 2.5, "title": "News", "url": "https://example.org/news"},
            {"startTime": 5.125, "title": "Goodbye"},
        ],
    }
    # Start times are ascending, as players expect.
    starts = [c["startTime"] for c in document["chapters"]]
    assert starts == sorted(starts)
    assert CHAPTERS_CONTENT_TYPE == "application/json+chapters"


def test_chapters_json_refuses_what_the_audio_files_would_refuse() -> None:
    with pytest.raises(ChapterError, match="sorted"):
        chapters_document([Chapter(3, "b"), Chapter(1, "a")])
    # No chapters is still a valid document.
    assert chapters_document([]) == {"version": "1.2.0", "chapters": []}


def test_schema_catches_a_wrong_document() -> None:
    """The schema is not vacuous: a document in the wrong shape fails it."""
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate(
            {"version": "1.2.0", "chapters": [{"startTime": "0:00", "title": "x"}]},
            PODCASTING_2_CHAPTERS_SCHEMA,
        )
    with pytest.raises(jsonschema.ValidationError):
        jsonschema.validate({"chapters": []}, PODCASTING_2_CHAPTERS_SCHEMA)
