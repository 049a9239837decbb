"""Transcribe the source with the configured Whisper engine and write every transcript format."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.concurrency import TRANSCRIPTION_TAG
from core.settings import get_settings
from flows.progress import WorkflowProgressReporter
from flows.steps.options import step
from media.probe import AudioInfo
from transcription.engines import get_engine
from transcription.types import Segment
from transcription.writers import WRITERS


@dataclass(frozen=True)
class TranscriptFiles:
    """The written transcript files (writer name -> path) and what they say."""

    language: str
    segments: int
    files: dict[str, Path]
    first_lines: list[str]
    #: The engine's confidence in `language`; None when it was not detected.
    language_probability: float | None = None
    #: Segments left out for failing the engine's quality thresholds.
    dropped_segments: int = 0


@step(
    "transcribe",
    # Prefect holds the task (AwaitingConcurrencySlot) until the tag's limit has a slot.
    tags=[TRANSCRIPTION_TAG],
)
def transcribe_source(
    source: Path,
    source_info: AudioInfo,
    language: str | None,
    workdir: Path,
    reporter: WorkflowProgressReporter,
) -> TranscriptFiles:
    """Transcribe; progress is the end time of the latest segment over the episode's length."""
    engine = get_engine(get_settings().whisper)
    reporter.update("transcribe", 0.0, f"transcribing with {engine.name}")
    duration = max(source_info.duration_s, 0.001)

    def on_segment(segment: Segment) -> None:
        reporter.update(
            "transcribe",
            segment.end / duration,
            f"transcribing ({segment.end:.0f}/{duration:.0f} s)",
        )

    transcript = engine.transcribe(source, language=language, on_segment=on_segment)
    files: dict[str, Path] = {}
    for name, writer in WRITERS.items():
        path = workdir / f"transcript.{writer.extension}"
        path.write_text(writer.render(transcript), encoding="utf-8")
        files[name] = path
    reporter.finish_step(
        "transcribe", f"transcribed {len(transcript.segments)} segments ({transcript.language})"
    )
    return TranscriptFiles(
        language=transcript.language,
        segments=len(transcript.segments),
        files=files,
        first_lines=[s.text.strip() for s in transcript.segments[:3]],
        language_probability=transcript.language_probability,
        dropped_segments=transcript.dropped_segments,
    )
