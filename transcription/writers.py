"""Transcript file formats for podcast apps: Podcasting 2.0 JSON, WebVTT, SRT, text and HTML.

Apps read these through `<podcast:transcript url=... type=...>`. Each writer renders one
entry of `core.formats.TRANSCRIPT_FORMATS`, which holds its name, file extension and the MIME
type to put in that `type` attribute (and on the stored object). Output is UTF-8 text.

Timing is normalised once for every format (`timeline`): never negative, each segment
starting no earlier than the previous one ended, end never before start, and each word in
order inside its segment.

Captions (WebVTT, SRT) are cut at word times (`cues`), not by sharing a segment's time out in
proportion to its text, which gave 0.4 s cues such as "can show":

* a cue never spans a long pause (`LONG_PAUSE_S`): the caption of a sentence does not stay
  on screen through the silence after it, and the next one does not appear early;
* within the speech between two pauses, the words are split into cues that fit the line
  limits (`CaptionSettings`: SRT 2 lines of 32 characters, the Podcasting 2.0 guidance;
  WebVTT 2 of 42) by the least-cost split (`_split_phrase`): fewest cues, breaks after
  sentence ends, then commas, never a cue of one word when the phrase has more (an orphan),
  and no cue shorter than `MIN_CUE_S` when a longer one fits;
* a cue still shorter than `MIN_CUE_S` (a lone "Yes." between pauses: the speech itself is
  that short) stays on screen into the silence around it, up to the next cue.

Segments without word times (a transcript built by hand, or an engine without them) get
words whose times share out the segment's time in proportion to their length, so every
transcript can be captioned; those invented times never appear in the JSON.
"""

from __future__ import annotations

import html
import json
import math
from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import ClassVar

from core.formats import (
    TRANSCRIPT_FORMATS,
    TranscriptFormat,
    UnknownFormatError,
    get_transcript_format,
)
from core.settings import CaptionSettings, get_settings
from transcription.errors import UnknownWriterError
from transcription.types import Segment, Transcript, Word

#: A cue is not shown for less than this when the silence around it allows (seconds).
MIN_CUE_S = 1.0
#: Cues never span a gap between words this long (seconds).
LONG_PAUSE_S = 1.0
#: A cue of more than one word never lasts longer than this (seconds).
MAX_CUE_S = 7.0
#: Two cues closer than this are joined in time (the first stays until the next appears),
#: so that captions do not flicker off between words.
CLOSE_GAP_S = 0.5
#: Plain text and HTML start a new paragraph after a pause this long...
PARAGRAPH_PAUSE_S = 2.0
#: ...or once a paragraph is this long and a sentence ends.
PARAGRAPH_MAX_CHARS = 600
#: Version of the Podcasting 2.0 JSON transcript format written.
PODCAST_JSON_VERSION = "1.0.0"

#: The costs of `_split_phrase`, in "cues": each cue costs 1; a break that is not after a
#: sentence end costs more (after a comma or at a segment's end less than mid-clause).
_BREAK_MID_CLAUSE = 0.5
_BREAK_AFTER_SEGMENT = 0.3
_BREAK_AFTER_COMMA = 0.2
#: A one-word cue in a longer phrase is worse than two extra cues.
_ORPHAN = 2.5
#: Per missing fraction of `MIN_CUE_S`.
_SHORT = 2.0
_SENTENCE_ENDS = (".", "?", "!", "…", '."', '?"', '!"')
_CLAUSE_ENDS = (",", ";", ":", "\u2014", "\u2013")  # em and en dashes too


def format_timestamp(seconds: float, decimal_marker: str = ".") -> str:
    """`HH:MM:SS.mmm` (`,` for SRT); hours grow past 99 rather than wrap; negatives clamp to 0."""
    millis = max(0, round(seconds * 1000))
    hours, millis = divmod(millis, 3_600_000)
    minutes, millis = divmod(millis, 60_000)
    secs, millis = divmod(millis, 1000)
    return f"{hours:02d}:{minutes:02d}:{secs:02d}{decimal_marker}{millis:03d}"


def _clean(text: str) -> str:
    return " ".join(text.split())


def timeline(transcript: Transcript) -> list[Segment]:
    """The transcript's segments with text, in order, with sane, non-overlapping times, and
    their words in order inside them (a word sticking out is clamped in)."""
    segments: list[Segment] = []
    previous_end = 0.0
    for segment in transcript.segments:
        text = _clean(segment.text)
        if not text:
            continue
        start = float(max(segment.start, previous_end, 0.0))
        end = float(max(segment.end, start))
        words: list[Word] = []
        floor = start
        for word in segment.words:
            word_text = _clean(word.text)
            if not word_text:
                continue
            word_start = min(max(float(word.start), floor), end)
            word_end = min(max(float(word.end), word_start), end)
            words.append(Word(word_start, word_end, word_text, word.probability))
            floor = word_end
        segments.append(Segment(start, end, text, tuple(words), segment.speaker))
        previous_end = end
    return segments


# --- captions ------------------------------------------------------------------------------


@dataclass(frozen=True)
class CaptionLayout:
    """How many lines of how many characters a cue may have."""

    max_line_chars: int
    max_lines: int


@dataclass(frozen=True)
class Cue:
    """One caption on screen: its time and its (at most `max_lines`) lines."""

    start: float
    end: float
    lines: list[str]


@dataclass(frozen=True)
class _CaptionWord:
    start: float
    end: float
    text: str
    #: Last word of its segment (a fair place to break a cue).
    ends_segment: bool
    speaker: str | None


def _caption_words(segments: list[Segment]) -> list[_CaptionWord]:
    """Every word with its time; segments without word times share theirs out by length."""
    result: list[_CaptionWord] = []
    for segment in segments:
        if segment.words:
            timed = [(w.start, w.end, w.text) for w in segment.words]
        else:
            texts = segment.text.split()
            weights = [len(t) + 1 for t in texts]
            total, done = sum(weights), 0
            duration = segment.end - segment.start
            timed = []
            for text, weight in zip(texts, weights, strict=True):
                start = segment.start + duration * done / total
                done += weight
                timed.append((start, segment.start + duration * done / total, text))
        for index, (start, end, text) in enumerate(timed):
            result.append(_CaptionWord(start, end, text, index == len(timed) - 1, segment.speaker))
    return result


def _phrases(words: list[_CaptionWord]) -> list[list[_CaptionWord]]:
    """Runs of words without a long pause (or a change of speaker) between them."""
    phrases: list[list[_CaptionWord]] = []
    for word in words:
        if (
            phrases
            and word.start - phrases[-1][-1].end < LONG_PAUSE_S
            and word.speaker == phrases[-1][-1].speaker
        ):
            phrases[-1].append(word)
        else:
            phrases.append([word])
    return phrases


def _greedy_lines(texts: list[str], width: int) -> list[str]:
    """Words filled into lines of at most `width` characters; a longer word is cut."""
    lines: list[str] = []
    current = ""
    for text in texts:
        while len(text) > width:  # a word longer than a line: cut it, as textwrap does
            if current:
                lines.append(current)
                current = ""
            lines.append(text[:width])
            text = text[width:]
        if not current:
            current = text
        elif len(current) + 1 + len(text) <= width:
            current += " " + text
        else:
            lines.append(current)
            current = text
    if current:
        lines.append(current)
    return lines


def _line_break_penalty(text: str, width: int) -> float:
    """What breaking a line after `text` costs, in squared characters of slack."""
    if text.endswith(_SENTENCE_ENDS):
        return 0.0
    if text.endswith(_CLAUSE_ENDS):
        return (width / 8) ** 2
    return (width / 4) ** 2


def wrap_lines(texts: list[str], layout: CaptionLayout) -> list[str]:
    """The words in as few lines of at most `max_line_chars` as they need, shared out so
    that the lines are of similar length (least squared slack) and, where that costs little,
    break after a sentence or a clause: "show. / Today we" rather than "show. Today / we"."""
    width = layout.max_line_chars
    greedy = _greedy_lines(texts, width)
    if len(greedy) == 1 or any(len(t) > width for t in texts):
        return greedy
    count, needed = len(texts), len(greedy)
    # best[k][j]: least cost of putting the first j words on k lines.
    best = [[math.inf] * (count + 1) for _ in range(needed + 1)]
    back = [[0] * (count + 1) for _ in range(needed + 1)]
    best[0][0] = 0.0
    for lines in range(1, needed + 1):
        for end in range(1, count + 1):
            length = -1
            for start in range(end - 1, -1, -1):
                length += len(texts[start]) + 1
                if length > width:
                    break
                if best[lines - 1][start] == math.inf:
                    continue
                cost = best[lines - 1][start] + (width - length) ** 2
                if end < count:
                    cost += _line_break_penalty(texts[end - 1], width)
                if cost < best[lines][end]:
                    best[lines][end], back[lines][end] = cost, start
    result: list[str] = []
    end = count
    for lines in range(needed, 0, -1):
        start = back[lines][end]
        result.append(" ".join(texts[start:end]))
        end = start
    return result[::-1]


def _fits(texts: list[str], layout: CaptionLayout) -> bool:
    if sum(len(t) for t in texts) + len(texts) - 1 > layout.max_line_chars * layout.max_lines:
        return False
    return len(_greedy_lines(texts, layout.max_line_chars)) <= layout.max_lines


def _break_cost(word: _CaptionWord) -> float:
    if word.text.endswith(_SENTENCE_ENDS):
        return 0.0
    if word.text.endswith(_CLAUSE_ENDS):
        return _BREAK_AFTER_COMMA
    return _BREAK_AFTER_SEGMENT if word.ends_segment else _BREAK_MID_CLAUSE


def _split_phrase(phrase: list[_CaptionWord], layout: CaptionLayout) -> list[list[_CaptionWord]]:
    """The least-cost split of a phrase into cues that fit (dynamic programming over the
    break positions; a cue holds at most a few dozen words, so this is linear in practice)."""
    count = len(phrase)
    best = [0.0] + [math.inf] * count
    back = [0] * (count + 1)
    for end in range(1, count + 1):
        for start in range(end - 1, -1, -1):
            size = end - start
            texts = [w.text for w in phrase[start:end]]
            if size > 1 and not _fits(texts, layout):
                break  # only gets longer as the cue grows backwards
            duration = phrase[end - 1].end - phrase[start].start
            if size > 1 and duration > MAX_CUE_S:
                break
            cost = best[start] + 1.0
            if size == 1 and count > 1:
                cost += _ORPHAN
            if duration < MIN_CUE_S:
                cost += _SHORT * (MIN_CUE_S - duration) / MIN_CUE_S
            if end < count:
                cost += _break_cost(phrase[end - 1])
            if cost < best[end]:
                best[end], back[end] = cost, start
    groups: list[list[_CaptionWord]] = []
    end = count
    while end > 0:
        groups.append(phrase[back[end] : end])
        end = back[end]
    return groups[::-1]


#: WebVTT's default layout, for callers that do not say.
DEFAULT_LAYOUT = CaptionLayout(42, 2)


def cues(transcript: Transcript, layout: CaptionLayout = DEFAULT_LAYOUT) -> list[Cue]:
    """Caption cues cut at word times: see the module docstring for the rules."""
    timed: list[tuple[float, float, list[str]]] = []
    for phrase in _phrases(_caption_words(timeline(transcript))):
        for group in _split_phrase(phrase, layout):
            timed.append(
                (group[0].start, group[-1].end, wrap_lines([w.text for w in group], layout))
            )
    result: list[Cue] = []
    limit = max(transcript.duration_s, timed[-1][1]) if timed else 0.0
    for index, (start, end, lines) in enumerate(timed):
        following = timed[index + 1][0] if index + 1 < len(timed) else limit
        if following - end < CLOSE_GAP_S:
            end = following
        if end - start < MIN_CUE_S:
            end = max(end, min(start + MIN_CUE_S, following))
        if end - start < MIN_CUE_S:
            floor = result[-1].end if result else 0.0
            start = min(start, max(floor, end - MIN_CUE_S))
        result.append(Cue(start, end, lines))
    return result


def _layout(captions: CaptionSettings | None, srt: bool) -> CaptionLayout:
    captions = captions or get_settings().captions
    if srt:
        return CaptionLayout(captions.srt_max_line_chars, captions.srt_max_lines)
    return CaptionLayout(captions.vtt_max_line_chars, captions.vtt_max_lines)


# --- paragraphs ----------------------------------------------------------------------------


def paragraphs(segments: list[Segment]) -> list[list[Segment]]:
    """Segments grouped into paragraphs: a new one after a pause of `PARAGRAPH_PAUSE_S`, when
    the speaker changes, or once a paragraph is long and a sentence ends."""
    result: list[list[Segment]] = []
    length = 0
    previous: Segment | None = None
    for segment in segments:
        pause = previous is not None and segment.start - previous.end >= PARAGRAPH_PAUSE_S
        speaker = previous is not None and segment.speaker != previous.speaker
        long_enough = (
            previous is not None
            and length >= PARAGRAPH_MAX_CHARS
            and previous.text.endswith((".", "?", "!"))
        )
        if not result or pause or speaker or long_enough:
            result.append([])
            length = 0
        result[-1].append(segment)
        length += len(segment.text) + 1
        previous = segment
    return result


# --- writers -------------------------------------------------------------------------------


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
    def render(self, transcript: Transcript, captions: CaptionSettings | None = None) -> str:
        """The whole file's text; caption formats lay cues out by `captions` (default: the
        process's settings, `AUDIOFLOW_SRT_*` / `AUDIOFLOW_VTT_*`)."""


def _json_time(seconds: float) -> float:
    return round(float(seconds), 3)


class PodcastJsonWriter(TranscriptWriter):
    """Podcasting 2.0 JSON: `{"version", "segments": [{"startTime", "endTime", "body"}]}`.

    Each segment with word times also has `words`: `[{"startTime", "endTime", "body",
    "probability"}]` (the engine's confidence, 0..1), for players that highlight the spoken
    word; players that do not know the field ignore it. `speaker` is there only when a
    diarizer named one.
    """

    format = TRANSCRIPT_FORMATS["json"]

    def render(self, transcript: Transcript, captions: CaptionSettings | None = None) -> str:
        segments = []
        for segment in timeline(transcript):
            entry: dict[str, object] = {}
            if segment.speaker is not None:
                entry["speaker"] = segment.speaker
            entry |= {
                "startTime": _json_time(segment.start),
                "endTime": _json_time(segment.end),
                "body": segment.text,
            }
            if segment.words:
                entry["words"] = [_json_word(w) for w in segment.words]
            segments.append(entry)
        document = {"version": PODCAST_JSON_VERSION, "segments": segments}
        return json.dumps(document, ensure_ascii=False, indent=2) + "\n"


def _json_word(word: Word) -> dict[str, object]:
    entry: dict[str, object] = {
        "startTime": _json_time(word.start),
        "endTime": _json_time(word.end),
        "body": word.text,
    }
    if word.probability is not None:
        entry["probability"] = round(float(word.probability), 3)
    return entry


def _escape_vtt(text: str) -> str:
    # WebVTT cue text is markup: these three would start tags or entities (or form "-->").
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


class WebVttWriter(TranscriptWriter):
    """WebVTT: what Apple Podcasts ingests and browsers play natively."""

    format = TRANSCRIPT_FORMATS["vtt"]

    def render(self, transcript: Transcript, captions: CaptionSettings | None = None) -> str:
        blocks = [
            f"{format_timestamp(c.start)} --> {format_timestamp(c.end)}\n"
            + "\n".join(_escape_vtt(line) for line in c.lines)
            + "\n"
            for c in cues(transcript, _layout(captions, srt=False))
        ]
        return "WEBVTT\n\n" + "\n".join(blocks) if blocks else "WEBVTT\n"


class SrtWriter(TranscriptWriter):
    """SubRip: numbered cues with comma-decimal timestamps (a `-->` in text would read as one)."""

    format = TRANSCRIPT_FORMATS["srt"]

    def render(self, transcript: Transcript, captions: CaptionSettings | None = None) -> str:
        return "\n".join(
            f"{number}\n{format_timestamp(c.start, ',')} --> {format_timestamp(c.end, ',')}\n"
            + "\n".join(line.replace("-->", "->") for line in c.lines)
            + "\n"
            for number, c in enumerate(cues(transcript, _layout(captions, srt=True)), start=1)
        )


class PlainTextWriter(TranscriptWriter):
    """Readable text without times: paragraphs break at pauses or after long runs."""

    format = TRANSCRIPT_FORMATS["txt"]

    def render(self, transcript: Transcript, captions: CaptionSettings | None = None) -> str:
        groups = paragraphs(timeline(transcript))
        return "\n\n".join(" ".join(s.text for s in p) for p in groups) + "\n" if groups else ""


def clock(seconds: float) -> str:
    """`M:SS`, or `H:MM:SS` from an hour on: how a reader sees a paragraph's start."""
    total = max(0, int(seconds))
    hours, rest = divmod(total, 3600)
    minutes, secs = divmod(rest, 60)
    return f"{hours}:{minutes:02d}:{secs:02d}" if hours else f"{minutes}:{secs:02d}"


class HtmlWriter(TranscriptWriter):
    """HTML as Podcasting 2.0 describes it: per paragraph an optional `<cite>` (speaker), a
    `<time>` (its start, machine-readable in `datetime`) and a `<p>`; a whole document so
    that it also opens in a browser. All text is escaped: it is the model's output."""

    format = TRANSCRIPT_FORMATS["html"]

    def render(self, transcript: Transcript, captions: CaptionSettings | None = None) -> str:
        body: list[str] = []
        for paragraph in paragraphs(timeline(transcript)):
            first = paragraph[0]
            if first.speaker is not None:
                body.append(f"<cite>{html.escape(first.speaker)}:</cite>")
            body.append(f'<time datetime="PT{first.start:.3f}S">{clock(first.start)}</time>')
            body.append(f"<p>{html.escape(' '.join(s.text for s in paragraph))}</p>")
        return (
            "<!DOCTYPE html>\n"
            f'<html lang="{html.escape(transcript.language, quote=True)}">\n'
            '<head>\n<meta charset="utf-8">\n<title>Transcript</title>\n</head>\n'
            "<body>\n" + "".join(line + "\n" for line in body) + "</body>\n</html>\n"
        )


WRITERS: dict[str, TranscriptWriter] = {
    writer.name: writer
    for writer in (
        PodcastJsonWriter(),
        WebVttWriter(),
        SrtWriter(),
        PlainTextWriter(),
        HtmlWriter(),
    )
}


def get_writer(name: str) -> TranscriptWriter:
    """The writer of the transcript format `name`, or `UnknownWriterError` listing the known
    ones (in `core.formats`' words: there is one writer per format)."""
    try:
        return WRITERS[get_transcript_format(name).name]
    except UnknownFormatError as exc:
        raise UnknownWriterError(str(exc)) from None
