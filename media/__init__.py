"""Audio processing as plain functions: probe a source, encode it, verify the outputs.

No Prefect in here: the flows wrap these functions in tasks. Everything shells out to
ffmpeg/ffprobe (see `tools`), one process per operation, so memory does not grow with the
length of an episode.
"""

from __future__ import annotations

from media.encode import EncodeError, encode
from media.probe import (
    AudioInfo,
    BadAudioError,
    DecodeReport,
    OutputCheckError,
    SourceTooLongError,
    UnsupportedContainerError,
    check_decodes,
    probe,
    probe_source,
    verify_output,
)
from media.tools import ToolMissingError

__all__ = [
    "AudioInfo",
    "BadAudioError",
    "DecodeReport",
    "EncodeError",
    "OutputCheckError",
    "SourceTooLongError",
    "ToolMissingError",
    "UnsupportedContainerError",
    "check_decodes",
    "encode",
    "probe",
    "probe_source",
    "verify_output",
]
