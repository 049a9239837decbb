"""The transcript data model shared by engines, writers and the flow.

Plain frozen dataclasses so that a transcript can be passed between threads, compared in
tests and serialised by the writers without any engine-specific objects leaking out.

Times are seconds from the start of the episode. The engines guarantee (and the writers
re-check, since a `Transcript` can also be built by hand) that words are in order, never
overlap, and lie inside their segment: see `transcription.base._place_words`.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Word:
    """One spoken word, with the punctuation Whisper attached to it (`"show."`)."""

    start: float
    end: float
    text: str
    #: The engine's confidence in the word (0..1); None when the engine gives none.
    probability: float | None = None


@dataclass(frozen=True)
class Segment:
    """A stretch of speech: times in seconds from the start of the episode."""

    start: float
    end: float
    text: str
    #: The segment's words with their times; empty when the engine gave no word timing.
    words: tuple[Word, ...] = ()
    #: Who speaks, set only by a diarizer (`transcription.diarization`); none ships, so the
    #: engines always leave it None and the writers then omit it.
    speaker: str | None = None


@dataclass(frozen=True)
class Transcript:
    """What an engine produced for one audio file."""

    #: ISO 639-1 code of the spoken language (detected, or `en` for English-only models).
    language: str
    #: Length of the decoded audio, which the flow stores and writers may use.
    duration_s: float
    segments: list[Segment] = field(default_factory=list)
    #: How sure the model was of `language` (0..1) when it detected it; None when the
    #: language was not detected (asked for in the payload, or an English-only model).
    language_probability: float | None = None
    #: Segments the engine produced but that failed its own quality thresholds (see
    #: `transcription.base.HallucinationGuard`) and were left out.
    dropped_segments: int = 0
    #: Seconds of audio the model decoded: all but digital silence without voice activity
    #: detection, only the speech regions with it (for real-time factors and for tests).
    decoded_s: float = 0.0

    @property
    def text(self) -> str:
        """All segment texts joined by single spaces, for search indexing and WER."""
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())

    @property
    def words(self) -> list[Word]:
        """Every segment's words, in order."""
        return [word for segment in self.segments for word in segment.words]
