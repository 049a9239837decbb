"""The transcript data model shared by engines, writers and the flow.

Plain frozen dataclasses so that a transcript can be passed between threads, compared in
tests and serialised by the writers without any engine-specific objects leaking out.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Segment:
    """A stretch of speech: times in seconds from the start of the episode."""

    start: float
    end: float
    text: str


@dataclass(frozen=True)
class Transcript:
    """What an engine produced for one audio file."""

    #: ISO 639-1 code of the spoken language (detected, or `en` for English-only models).
    language: str
    #: Length of the decoded audio, which the flow stores and writers may use.
    duration_s: float
    segments: list[Segment] = field(default_factory=list)

    @property
    def text(self) -> str:
        """All segment texts joined by single spaces, for search indexing and WER."""
        return " ".join(s.text.strip() for s in self.segments if s.text.strip())
