"""Where a speaker diarizer plugs in. None ships: no diarization model is on the machine and
nothing is downloaded at run time, so transcripts carry no speakers.

A diarizer labels each segment with who speaks (`Segment.speaker`). The writers already
use the label when there is one: the JSON gains a `speaker` field on those segments, the
HTML a `<cite>` before each paragraph, and paragraphs break when the speaker changes;
without a diarizer the field is simply absent, never guessed. To add one (for instance a
pyannote pipeline loaded from a local path), implement `Diarizer` and call
`apply_diarizer` on the engine's transcript before the writers render it.
"""

from __future__ import annotations

from dataclasses import replace
from pathlib import Path
from typing import Protocol

from transcription.types import Transcript


class Diarizer(Protocol):
    """Tells who speaks in each segment of a transcript of `audio_path`."""

    def speakers(self, audio_path: Path, transcript: Transcript) -> list[str | None]:
        """One label per segment of `transcript` (None where it cannot tell)."""
        ...


def apply_diarizer(
    transcript: Transcript, audio_path: Path, diarizer: Diarizer | None
) -> Transcript:
    """`transcript` with each segment's speaker set by `diarizer`; unchanged without one."""
    if diarizer is None:
        return transcript
    labels = diarizer.speakers(audio_path, transcript)
    if len(labels) != len(transcript.segments):
        raise ValueError(
            f"diarizer gave {len(labels)} labels for {len(transcript.segments)} segments"
        )
    segments = [
        replace(segment, speaker=label)
        for segment, label in zip(transcript.segments, labels, strict=True)
    ]
    return replace(transcript, segments=segments)
