"""Errors of the speech-to-text library, so that callers can tell a bad upload from bad config.

The flow retries nothing on these: a missing model or an unknown engine is a configuration
problem, and undecodable audio will not decode better the second time. Each message says what
was asked and what would have worked.
"""

from __future__ import annotations


class TranscriptionError(Exception):
    """Base of every error raised on purpose by `transcription`."""


class ModelNotAvailableError(TranscriptionError, LookupError):
    """The requested model is not on this machine; nothing is ever downloaded instead."""


class UnknownEngineError(TranscriptionError, LookupError):
    """The configured engine name is not one of the registered engines."""


class ModelConversionError(TranscriptionError):
    """A CTranslate2 model could not be turned into an openai-whisper checkpoint.

    Raised rather than producing a half-filled model: a silently wrong weight would give
    plausible-looking but garbage transcripts.
    """


class TranscriptionInputError(TranscriptionError, ValueError):
    """The audio file cannot be transcribed (missing, not audio, or no samples in it)."""


class UnknownWriterError(TranscriptionError, LookupError):
    """The requested transcript format has no registered writer."""
