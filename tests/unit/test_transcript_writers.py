"""Transcript writers: timestamps, caption line rules, numbering and the JSON shape."""

from __future__ import annotations

import json
import re

import pytest

from core.formats import TRANSCRIPT_FORMATS
from transcription.errors import UnknownWriterError
from transcription.types import Segment, Transcript
from transcription.writers import (
    MAX_LINE_CHARS,
    MAX_LINES,
    WRITERS,
    cues,
    format_timestamp,
    get_writer,
)

LONG_TEXT = (
    "Long before mechanical clocks people watched the sky, and farmers used the patterns of "
    "the sun, the moon and the stars to decide when to plant and when to harvest their crops "
    "in the fields."
)
VTT_TIME = r"\d{2,}:\d{2}:\d{2}\.\d{3}"
SRT_TIME = r"\d{2,}:\d{2}:\d{2},\d{3}"


def transcript(*segments: tuple[float, float, str]) -> Transcript:
    return Transcript("en", 100.0, [Segment(*s) for s in segments])


def seconds(stamp: str) -> float:
    hours, minutes, rest = stamp.replace(",", ".").split(":")
    return int(hours) * 3600 + int(minutes) * 60 + float(rest)


@pytest.mark.parametrize(
    ("value", "vtt", "srt"),
    [
        (3661.5, "01:01:01.500", "01:01:01,500"),
        (0.0, "00:00:00.000", "00:00:00,000"),
        (59.9996, "00:01:00.000", "00:01:00,000"),
        (-2.0, "00:00:00.000", "00:00:00,000"),
        (4 * 3600 + 0.001, "04:00:00.001", "04:00:00,001"),
        (100 * 3600, "100:00:00.000", "100:00:00,000"),
    ],
)
def test_format_timestamp(value: float, vtt: str, srt: str) -> None:
    assert format_timestamp(value) == vtt
    assert format_timestamp(value, ",") == srt


def test_registry_names_extensions_and_types() -> None:
    assert {name: (w.extension, w.content_type) for name, w in WRITERS.items()} == {
        "json": ("json", "application/json"),
        "vtt": ("vtt", "text/vtt"),
        "srt": ("srt", "application/x-subrip"),
        "txt": ("txt", "text/plain"),
    }
    assert get_writer("vtt") is WRITERS["vtt"]
    # One writer per registered transcript format, and each renders its own entry: what the
    # domain expects an attempt to store (from `core.formats`) is what the flow writes.
    assert list(WRITERS) == list(TRANSCRIPT_FORMATS)
    assert all(w.format is TRANSCRIPT_FORMATS[name] for name, w in WRITERS.items())


def test_unknown_format_lists_known_ones() -> None:
    with pytest.raises(UnknownWriterError, match="json, vtt, srt, txt"):
        get_writer("docx")


def test_vtt_document() -> None:
    text = get_writer("vtt").render(
        transcript((0.0, 2.5, " Hello there. "), (3661.5, 3662.0, "Bye."))
    )
    assert text == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "01:01:01.500 --> 01:01:02.000\nBye.\n"
    )


def test_srt_document_numbers_cues_from_one() -> None:
    text = get_writer("srt").render(transcript((0.0, 2.5, "Hello there."), (3.0, 4.0, "Bye.")))
    assert text == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:03,000 --> 00:00:04,000\nBye.\n"
    )


@pytest.mark.parametrize("name", ["vtt", "srt"])
def test_long_segment_is_wrapped_and_split_into_cues(name: str) -> None:
    rendered = get_writer(name).render(transcript((10.0, 20.0, LONG_TEXT)))
    blocks = [b for b in rendered.split("\n\n") if "-->" in b]
    assert len(blocks) > 1
    stamp = VTT_TIME if name == "vtt" else SRT_TIME
    words: list[str] = []
    previous_end = 10.0
    for number, block in enumerate(blocks, start=1):
        lines = block.strip("\n").split("\n")
        if name == "srt":
            assert lines.pop(0) == str(number)
        if lines[0] == "WEBVTT":
            lines = lines[1:]
        match = re.fullmatch(rf"({stamp}) --> ({stamp})", lines[0])
        assert match, lines[0]
        start, end = seconds(match.group(1)), seconds(match.group(2))
        assert start == pytest.approx(previous_end, abs=0.001)
        assert end >= start
        previous_end = end
        text_lines = lines[1:]
        assert 1 <= len(text_lines) <= MAX_LINES
        assert all(len(line) <= MAX_LINE_CHARS for line in text_lines)
        words += " ".join(text_lines).split()
    assert previous_end == pytest.approx(20.0)
    assert words == LONG_TEXT.split()


def test_cue_times_are_shared_in_proportion_to_text() -> None:
    parts = cues(transcript((0.0, 12.0, LONG_TEXT)))
    lengths = [sum(len(line) for line in cue.lines) for cue in parts]
    for cue, length in zip(parts, lengths, strict=True):
        assert cue.end - cue.start == pytest.approx(12.0 * length / sum(lengths))


def test_word_longer_than_a_line_is_broken() -> None:
    (cue,) = cues(transcript((0.0, 1.0, "x" * 60)))
    assert cue.lines == ["x" * 42, "x" * 18]


def test_times_are_never_negative_and_never_go_back() -> None:
    messy = transcript(
        (-1.0, 2.0, "one"), (1.5, 1.0, "two"), (5.0, 6.0, "   "), (4.0, 7.0, "three")
    )
    doc = json.loads(get_writer("json").render(messy))
    times = [(s["startTime"], s["endTime"]) for s in doc["segments"]]
    assert times == [(0.0, 2.0), (2.0, 2.0), (4.0, 7.0)]
    for name in ("vtt", "srt"):
        stamps = re.findall(r"(\S+) --> (\S+)", get_writer(name).render(messy))
        flat = [seconds(t) for pair in stamps for t in pair]
        assert flat == sorted(flat) and flat[0] >= 0


def test_vtt_escapes_markup_and_srt_keeps_arrows_out() -> None:
    text = transcript((0.0, 1.0, "a <b> & c --> d"))
    assert "a &lt;b&gt; &amp; c --&gt; d" in get_writer("vtt").render(text)
    srt = get_writer("srt").render(text)
    assert srt.count("-->") == 1 and "a <b> & c -> d" in srt


def test_json_shape() -> None:
    doc = json.loads(
        get_writer("json").render(transcript((0, 1.23456, " Hi. "), (2.0, 3.5, "Bye.")))
    )
    assert doc == {
        "version": "1.0.0",
        "segments": [
            {"startTime": 0.0, "endTime": 1.235, "body": "Hi."},
            {"startTime": 2.0, "endTime": 3.5, "body": "Bye."},
        ],
    }
    assert all(isinstance(s["startTime"], float) for s in doc["segments"])


def test_text_paragraphs_break_at_pauses() -> None:
    text = get_writer("txt").render(
        transcript((0.0, 1.0, "One."), (1.2, 2.0, "Two."), (5.0, 6.0, "Three."))
    )
    assert text == "One. Two.\n\nThree.\n"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("vtt", "WEBVTT\n"),
        ("srt", ""),
        ("txt", ""),
        ("json", '{\n  "version": "1.0.0",\n  "segments": []\n}\n'),
    ],
)
def test_empty_transcript(name: str, expected: str) -> None:
    assert get_writer(name).render(Transcript("en", 0.0, [])) == expected
