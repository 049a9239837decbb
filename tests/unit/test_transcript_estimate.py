"""The temp-disk estimate's allowance for transcript files holds for the files the writers
really render, now that the JSON carries every word with its times (issue 13)."""

from __future__ import annotations

from core.formats import TRANSCRIPT_FORMATS
from flows.workspace import TRANSCRIPT_BYTES_PER_S, outputs_estimate
from media.probe import AudioInfo
from transcription.types import Segment, Transcript, Word
from transcription.writers import WRITERS

#: Long-ish words with punctuation, as a fast talker's transcript has them.
VOCABULARY = ("Welcome", "transcripts,", "microphone", "everything.", "listeners", "the", "it's")


def dense_transcript(seconds: float, words_per_s: float) -> Transcript:
    """Speech without pauses at `words_per_s`, ten words a segment, each word timed."""
    step = 1.0 / words_per_s
    segments: list[Segment] = []
    count = int(seconds * words_per_s)
    for first in range(0, count, 10):
        words = tuple(
            Word(
                round(i * step, 3),
                round(i * step + 0.9 * step, 3),
                VOCABULARY[i % len(VOCABULARY)],
                0.876,
            )
            for i in range(first, min(first + 10, count))
        )
        text = " ".join(w.text for w in words)
        segments.append(Segment(words[0].start, words[-1].end, text, words))
    return Transcript("en", seconds, segments)


def test_the_transcript_allowance_covers_four_words_a_second() -> None:
    seconds = 600.0
    transcript = dense_transcript(seconds, 4.0)  # 240 words a minute
    assert set(WRITERS) == set(TRANSCRIPT_FORMATS)
    rendered = sum(len(w.render(transcript).encode("utf-8")) for w in WRITERS.values())
    assert rendered <= TRANSCRIPT_BYTES_PER_S * seconds
    # ... and the estimate counts it when the run transcribes.
    info = AudioInfo(seconds, "mp3", 128.0, 2, 44100, "mp3")
    added = outputs_estimate(info, ["mp3_128"], True) - outputs_estimate(info, ["mp3_128"], False)
    assert added >= rendered
