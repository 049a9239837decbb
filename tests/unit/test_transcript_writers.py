"""Transcript writers: timestamps, captions cut at word times, the JSON shape, HTML."""

from __future__ import annotations

import json
import random
import re
from html.parser import HTMLParser
from pathlib import Path

import pytest

from core.formats import TRANSCRIPT_FORMATS
from core.settings import CaptionSettings
from transcription.diarization import apply_diarizer
from transcription.errors import UnknownWriterError
from transcription.types import Segment, Transcript, Word
from transcription.writers import (
    LONG_PAUSE_S,
    MIN_CUE_S,
    WRITERS,
    CaptionLayout,
    cues,
    format_timestamp,
    get_writer,
    timeline,
    wrap_lines,
)

#: The defaults: SRT 2 lines of 32 characters, WebVTT 2 of 42.
CAPTIONS = CaptionSettings()
LIMITS = {"srt": (32, 2), "vtt": (42, 2)}

LONG_TEXT = (
    "Long before mechanical clocks people watched the sky, and farmers used the patterns of "
    "the sun, the moon and the stars to decide when to plant and when to harvest their crops "
    "in the fields."
)
VTT_TIME = r"\d{2,}:\d{2}:\d{2}\.\d{3}"
SRT_TIME = r"\d{2,}:\d{2}:\d{2},\d{3}"


def transcript(*segments: tuple[float, float, str], duration: float = 100.0) -> Transcript:
    return Transcript("en", duration, [Segment(*s) for s in segments])


def render(name: str, text: Transcript, captions: CaptionSettings = CAPTIONS) -> str:
    return get_writer(name).render(text, captions)


def spoken(text: str, start: float = 0.0, *, word_s: float = 0.3, gap_s: float = 0.05) -> Segment:
    """A segment whose words are `word_s` long, `gap_s` apart, from `start`."""
    words = []
    for index, body in enumerate(text.split()):
        begin = start + index * (word_s + gap_s)
        words.append(Word(round(begin, 3), round(begin + word_s, 3), body, 0.9))
    return Segment(words[0].start, words[-1].end, text, tuple(words))


def parse_cues(rendered: str, name: str) -> list[tuple[float, float, list[str]]]:
    """(start, end, lines) of each cue of a rendered VTT or SRT file."""
    stamp = VTT_TIME if name == "vtt" else SRT_TIME
    result = []
    for number, block in enumerate((b for b in rendered.split("\n\n") if "-->" in b), start=1):
        lines = block.strip("\n").split("\n")
        if lines[0] == "WEBVTT":
            lines = lines[1:]
        if name == "srt":
            assert lines.pop(0) == str(number)
        match = re.fullmatch(rf"({stamp}) --> ({stamp})", lines[0])
        assert match, lines[0]
        result.append((seconds(match.group(1)), seconds(match.group(2)), lines[1:]))
    return result


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
        "html": ("html", "text/html"),
    }
    assert get_writer("vtt") is WRITERS["vtt"]
    # One writer per registered transcript format, and each renders its own entry: what the
    # domain expects an attempt to store (from `core.formats`) is what the flow writes.
    assert list(WRITERS) == list(TRANSCRIPT_FORMATS)
    assert all(w.format is TRANSCRIPT_FORMATS[name] for name, w in WRITERS.items())


def test_unknown_format_lists_known_ones() -> None:
    with pytest.raises(UnknownWriterError, match="json, vtt, srt, txt, html"):
        get_writer("docx")


def test_vtt_document() -> None:
    text = render(
        "vtt", transcript((0.0, 2.5, " Hello there. "), (3661.5, 3662.0, "Bye."), duration=4000)
    )
    # "Bye." is said in 0.5 s: its cue stays on screen for a second, into the silence after.
    assert text == (
        "WEBVTT\n\n"
        "00:00:00.000 --> 00:00:02.500\nHello there.\n\n"
        "01:01:01.500 --> 01:01:02.500\nBye.\n"
    )


def test_srt_document_numbers_cues_from_one() -> None:
    text = render("srt", transcript((0.0, 2.5, "Hello there."), (4.0, 5.0, "Bye.")))
    assert text == (
        "1\n00:00:00,000 --> 00:00:02,500\nHello there.\n\n2\n00:00:04,000 --> 00:00:05,000\nBye.\n"
    )


@pytest.mark.parametrize("name", ["vtt", "srt"])
def test_long_segment_without_word_times_is_wrapped_and_split_into_cues(name: str) -> None:
    rendered = render(name, transcript((10.0, 20.0, LONG_TEXT)))
    parsed = parse_cues(rendered, name)
    assert len(parsed) > 1
    max_chars, max_lines = LIMITS[name]
    words: list[str] = []
    previous_end = 10.0
    for start, end, lines in parsed:
        # The words' times share the segment out; cues follow one another without a gap.
        assert start == pytest.approx(previous_end, abs=0.001)
        assert end >= start
        previous_end = end
        assert 1 <= len(lines) <= max_lines
        assert all(len(line) <= max_chars for line in lines)
        words += " ".join(lines).split()
    assert previous_end == pytest.approx(20.0)
    assert words == LONG_TEXT.split()


def test_word_longer_than_a_line_is_broken() -> None:
    (cue,) = cues(transcript((0.0, 1.0, "x" * 60)), CaptionLayout(42, 2))
    assert cue.lines == ["x" * 42, "x" * 18]
    (cue,) = cues(transcript((0.0, 1.0, "x" * 60)), CaptionLayout(32, 2))
    assert cue.lines == ["x" * 32, "x" * 28]


def test_times_are_never_negative_and_never_go_back() -> None:
    messy = transcript(
        (-1.0, 2.0, "one"), (1.5, 1.0, "two"), (5.0, 6.0, "   "), (4.0, 7.0, "three")
    )
    doc = json.loads(get_writer("json").render(messy))
    times = [(s["startTime"], s["endTime"]) for s in doc["segments"]]
    assert times == [(0.0, 2.0), (2.0, 2.0), (4.0, 7.0)]
    for name in ("vtt", "srt"):
        stamps = re.findall(r"(\S+) --> (\S+)", render(name, messy))
        flat = [seconds(t) for pair in stamps for t in pair]
        assert flat == sorted(flat) and flat[0] >= 0


def test_vtt_escapes_markup_and_srt_keeps_arrows_out() -> None:
    text = transcript((0.0, 1.0, "a <b> & c --> d"))
    assert "a &lt;b&gt; &amp; c --&gt; d" in render("vtt", text)
    srt = render("srt", text)
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
    assert render(name, Transcript("en", 0.0, [])) == expected
    html_doc = render("html", Transcript("en", 0.0, []))
    assert "<body>\n</body>" in html_doc and "<p>" not in html_doc


# --- word times in the JSON ------------------------------------------------------------------


def test_json_keeps_segments_and_adds_their_words() -> None:
    first = Segment(
        0.5, 1.4, "Hi there.", (Word(0.5, 0.8, "Hi", 0.98765), Word(0.8, 1.4, "there.", None))
    )
    second = Segment(2.0, 3.0, "No words.")
    doc = json.loads(render("json", Transcript("en", 5.0, [first, second])))
    assert doc["segments"] == [
        {
            "startTime": 0.5,
            "endTime": 1.4,
            "body": "Hi there.",
            "words": [
                {"startTime": 0.5, "endTime": 0.8, "body": "Hi", "probability": 0.988},
                # No probability from the engine: no field, rather than a made-up one.
                {"startTime": 0.8, "endTime": 1.4, "body": "there."},
            ],
        },
        # Without word times there is no `words` list (invented times never reach players).
        {"startTime": 2.0, "endTime": 3.0, "body": "No words."},
    ]
    assert "speaker" not in json.dumps(doc)


def test_words_are_repaired_into_order_inside_their_segment() -> None:
    words = (
        Word(0.5, 1.0, "starts", 0.9),  # before the segment: moved to its start
        Word(0.9, 1.5, "overlaps", 0.9),  # before the previous word ended: moved after it
        Word(2.0, 1.8, "backwards", 0.9),  # ends before it starts: zero length
        Word(2.5, 9.0, "ends", 0.9),  # past the segment's end: clamped
        Word(3.0, 3.1, "   ", 0.9),  # no text: dropped
    )
    segment = Segment(1.0, 3.0, "starts overlaps backwards ends", words)
    (fixed,) = timeline(Transcript("en", 5.0, [segment]))
    assert [(w.start, w.end) for w in fixed.words] == [
        (1.0, 1.0),
        (1.0, 1.5),
        (2.0, 2.0),
        (2.5, 3.0),
    ]
    doc = json.loads(render("json", Transcript("en", 5.0, [segment])))
    times = [(w["startTime"], w["endTime"]) for w in doc["segments"][0]["words"]]
    flat = [t for pair in times for t in pair]
    assert flat == sorted(flat) and flat[0] >= 1.0 and flat[-1] <= 3.0


# --- captions cut at word times ----------------------------------------------------------------


def test_cues_start_and_end_with_their_words() -> None:
    segment = spoken(
        "Welcome back to the show. Today we are talking about the history of clocks.", 2.0
    )
    parsed = cues(Transcript("en", 60.0, [segment]), CaptionLayout(32, 2))
    assert [c.lines for c in parsed] == [
        ["Welcome back to the show."],
        ["Today we are talking about", "the history of clocks."],
    ]
    assert parsed[0].start == segment.words[0].start
    # Close to the next cue: shown until it appears, rather than blinking off for 50 ms.
    assert parsed[0].end == parsed[1].start == segment.words[5].start
    assert parsed[1].end == segment.words[-1].end


def test_a_cue_never_spans_a_long_pause() -> None:
    before = spoken("We will be right back after this.", 0.0)
    after = spoken("And we are back.", before.end + LONG_PAUSE_S + 0.2)
    for name in ("vtt", "srt"):
        parsed = parse_cues(render(name, Transcript("en", 30.0, [before, after])), name)
        texts = [" ".join(lines) for _, _, lines in parsed]
        assert " ".join(texts) == f"{before.text} {after.text}"
        # No cue mixes the two sides, and the first is gone before the second starts.
        assert any(t.endswith("this.") for t in texts), texts
        boundary = next(i for i, t in enumerate(texts) if t.endswith("this."))
        assert parsed[boundary][1] <= after.start


def test_no_orphan_words() -> None:
    # Nine seven-letter words: eight fill two 32-character lines, a greedy cut leaves one alone.
    segment = spoken(" ".join(["abcdefg"] * 8 + ["orphan."]), 0.0)
    parsed = cues(Transcript("en", 10.0, [segment]), CaptionLayout(32, 2))
    assert len(parsed) == 2
    assert all(len(" ".join(c.lines).split()) >= 2 for c in parsed)


def test_cues_break_after_sentences_when_they_can() -> None:
    segment = spoken("Farmers used these patterns. They decided when to plant and when to reap.")
    parsed = cues(Transcript("en", 30.0, [segment]), CaptionLayout(32, 2))
    assert " ".join(parsed[0].lines) == "Farmers used these patterns."


def test_lines_are_balanced_and_break_after_punctuation() -> None:
    def wrap(text: str, width: int) -> list[str]:
        return wrap_lines(text.split(), CaptionLayout(width, 2))

    # Greedy filling would give 36 + 15 characters.
    assert wrap("Long before mechanical clocks people watched the sky", 42) == [
        "Long before mechanical clocks",
        "people watched the sky",
    ]
    assert wrap("Welcome back to the show. Today we are talking about clocks.", 42) == [
        "Welcome back to the show.",
        "Today we are talking about clocks.",
    ]
    assert wrap("Short one.", 42) == ["Short one."]


def test_a_short_utterance_stays_up_for_a_second() -> None:
    yes = Segment(5.0, 5.3, "Yes.", (Word(5.0, 5.3, "Yes.", 0.9),))
    later = spoken("Then we moved on to other things.", 8.0)
    parsed = cues(Transcript("en", 30.0, [spoken("Was it worth it?", 1.0), yes, later]))
    (cue,) = [c for c in parsed if c.lines == ["Yes."]]
    assert cue.start == 5.0 and cue.end == pytest.approx(5.0 + MIN_CUE_S)


def test_a_short_cue_inside_fast_speech_starts_earlier_when_only_that_has_room() -> None:
    # One five-letter word per cue (the layout allows no more); "bbbbb" is 0.2 s long, 0.9 s
    # after "aaaaa" and 0.1 s before "ccccc": it takes the silence before it.
    words = (Word(0.0, 0.2, "aaaaa"), Word(1.1, 1.3, "bbbbb"), Word(1.4, 1.6, "ccccc"))
    text = Transcript("en", 10.0, [Segment(0.0, 1.6, "aaaaa bbbbb ccccc", words)])
    first, second, _ = cues(text, CaptionLayout(5, 1))
    assert (first.start, first.end) == (0.0, 1.0)
    assert (second.start, second.end) == (1.0, 1.4)


@pytest.mark.parametrize("name", ["vtt", "srt"])
def test_speech_with_pauses_gives_no_short_cues_and_keeps_the_limits(name: str) -> None:
    """Random sentences of random words at random speeds, with pauses of any length."""
    rng = random.Random(7)
    vocabulary = ["a", "the", "clock", "moon", "stars", "farmers", "sailors", "at", "sea,", "we"]
    segments, clock_s = [], 0.5
    for _ in range(60):
        text = " ".join(rng.choice(vocabulary) for _ in range(rng.randint(1, 14))) + "."
        segment = spoken(text, clock_s, word_s=rng.uniform(0.12, 0.5), gap_s=rng.uniform(0, 0.3))
        segments.append(segment)
        clock_s = segment.end + rng.choice([0.05, 0.3, 0.8, 1.2, 3.0])
    whole = Transcript("en", clock_s + 5, segments)
    parsed = parse_cues(render(name, whole), name)
    max_chars, max_lines = LIMITS[name]
    previous_end = 0.0
    for start, end, lines in parsed:
        assert end - start >= 0.7, (start, end, lines)
        assert start >= previous_end - 0.0005
        previous_end = end
        assert 1 <= len(lines) <= max_lines and all(len(line) <= max_chars for line in lines)
    words = " ".join(" ".join(lines) for _, _, lines in parsed).split()
    assert words == " ".join(s.text for s in segments).split()


def test_caption_settings_set_the_limits() -> None:
    segment = spoken("Sailors needed to know the exact time to find their position at sea.")
    narrow = CaptionSettings(srt_max_line_chars=20, srt_max_lines=1)
    for _, _, lines in parse_cues(render("srt", Transcript("en", 30, [segment]), narrow), "srt"):
        assert len(lines) == 1 and len(lines[0]) <= 20


# --- HTML ----------------------------------------------------------------------------------


class _Structure(HTMLParser):
    """Checks that every element is closed in order, and collects what the page says."""

    VOID = {"meta", "br", "link"}

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.stack: list[str] = []
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.paragraphs: list[str] = []
        self.times: list[str] = []
        self._current: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))
        if tag not in self.VOID:
            self.stack.append(tag)
        if tag in ("p", "time"):
            self._current = ""

    def handle_endtag(self, tag: str) -> None:
        assert self.stack and self.stack[-1] == tag, (self.stack, tag)
        self.stack.pop()
        if tag == "p" and self._current is not None:
            self.paragraphs.append(self._current)
        if tag == "time" and self._current is not None:
            self.times.append(self._current)
        self._current = None

    def handle_data(self, data: str) -> None:
        if self._current is not None:
            self._current += data


def test_html_is_well_formed_escaped_and_timed_per_paragraph() -> None:
    hostile = "Use <script>alert('x')</script> & \"quotes\" > here."
    text = Transcript(
        "en",
        4000.0,
        [
            Segment(0.0, 2.0, "Welcome back."),
            Segment(2.1, 3.0, hostile),
            Segment(65.5, 67.0, "After a long pause."),
            Segment(3725.0, 3726.0, "An hour in."),
        ],
    )
    page = render("html", text)
    assert page.startswith("<!DOCTYPE html>\n") and '<meta charset="utf-8">' in page
    parser = _Structure()
    parser.feed(page)
    parser.close()
    assert parser.stack == []
    assert [tag for tag, _ in parser.tags if tag == "script"] == []
    assert parser.paragraphs == [f"Welcome back. {hostile}", "After a long pause.", "An hour in."]
    assert parser.times == ["0:00", "1:05", "1:02:05"]
    assert [a["datetime"] for t, a in parser.tags if t == "time"] == [
        "PT0.000S",
        "PT65.500S",
        "PT3725.000S",
    ]
    assert ("html", {"lang": "en"}) in parser.tags
    assert "<cite>" not in page


# --- speakers: only from a diarizer ----------------------------------------------------------


class _TwoVoices:
    """A stand-in diarizer: labels segments alternately, to exercise the hook."""

    def speakers(self, audio_path: Path, transcript: Transcript) -> list[str | None]:
        return ["Host" if i % 2 == 0 else "Guest <1>" for i in range(len(transcript.segments))]


def test_speakers_appear_only_when_a_diarizer_set_them(tmp_path: Path) -> None:
    plain = Transcript("en", 10.0, [spoken("Hello there.", 0.0), spoken("Hi.", 1.5)])
    assert apply_diarizer(plain, tmp_path / "a.wav", None) is plain
    assert "speaker" not in render("json", plain) and "<cite>" not in render("html", plain)

    labelled = apply_diarizer(plain, tmp_path / "a.wav", _TwoVoices())
    doc = json.loads(render("json", labelled))
    assert [s["speaker"] for s in doc["segments"]] == ["Host", "Guest <1>"]
    page = render("html", labelled)
    # A new speaker starts a new paragraph, named in a <cite>, escaped.
    assert page.count("<p>") == 2
    assert "<cite>Host:</cite>" in page and "<cite>Guest &lt;1&gt;:</cite>" in page
