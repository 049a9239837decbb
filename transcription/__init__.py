"""Speech-to-text for audioflow: Whisper engines, model resolution, transcript file formats.

Plain Python, no Prefect: the flow calls `get_engine(settings.whisper).transcribe(path, ...)`
and renders the result with `get_writer(name).render(transcript)`. Transcripts carry word
times from both engines; only the speech found by voice activity detection is decoded.
Importing this package is cheap; torch and the engines' libraries load with the first model.
"""

from transcription.diarization import Diarizer, apply_diarizer
from transcription.engines import ENGINES, TranscriptionEngine, get_engine
from transcription.errors import (
    ModelConversionError,
    ModelNotAvailableError,
    TranscriptionError,
    TranscriptionInputError,
    UnknownEngineError,
    UnknownWriterError,
)
from transcription.models import ResolvedModel, available_models, resolve_model
from transcription.types import Segment, Transcript, Word
from transcription.wer import wer, word_errors
from transcription.writers import WRITERS, TranscriptWriter, get_writer

__all__ = [
    "ENGINES",
    "WRITERS",
    "Diarizer",
    "ModelConversionError",
    "ModelNotAvailableError",
    "ResolvedModel",
    "Segment",
    "Transcript",
    "TranscriptWriter",
    "TranscriptionEngine",
    "TranscriptionError",
    "TranscriptionInputError",
    "UnknownEngineError",
    "UnknownWriterError",
    "Word",
    "apply_diarizer",
    "available_models",
    "get_engine",
    "get_writer",
    "resolve_model",
    "wer",
    "word_errors",
]
