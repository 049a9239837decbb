"""Why a run failed, in words a person understands, and whether trying again could help."""

from __future__ import annotations

import errno
import os

from domain.contracts import ErrorKind


class ProcessingError(Exception):
    """A step failed; `reason` is shown on the task, `kind` decides whether it is retried."""

    def __init__(self, reason: str, kind: ErrorKind | str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.kind = ErrorKind(kind)  # a string that is no kind fails here, not downstream


class WorkflowEndedError(ProcessingError):
    """The API refused a report because the workflow is already terminal (cancelled, or
    declared crashed by the reconciler): nobody wants this run's work any more, so it stops.

    Permanent, so no step retries it; the run ends failed, and the API keeps the row as it is
    (the final hook's report is refused like the others).
    """

    def __init__(self, reason: str) -> None:
        super().__init__(reason, ErrorKind.PERMANENT)


def _permanent_types() -> tuple[type[BaseException], ...]:
    from prefect.exceptions import ParameterBindError, ParameterTypeError, SignatureMismatchError
    from pydantic import ValidationError

    from core.episode_metadata import ChapterError, MetadataError
    from core.keys import InvalidKeyError
    from core.storage.errors import StorageError
    from media.cover import CoverArtError
    from media.encode import EncodeError
    from media.probe import BadAudioError, OutputCheckError
    from media.tags import TagWriteError
    from media.tools import ToolMissingError
    from transcription.errors import ModelNotAvailableError, TranscriptionInputError

    return (
        BadAudioError,
        EncodeError,
        OutputCheckError,
        # Tags, cover and chapters are the payload's and the store's objects: the same
        # ones fail the same way on every try.
        TagWriteError,
        CoverArtError,
        ChapterError,
        MetadataError,
        StorageError,  # missing object, no such bucket, access denied: retrying won't help
        InvalidKeyError,
        TranscriptionInputError,
        ModelNotAvailableError,
        ToolMissingError,
        # A run started with parameters the flow cannot take: the same run fails again.
        ValidationError,
        ParameterTypeError,
        ParameterBindError,
        SignatureMismatchError,
    )


#: What ffmpeg, ffprobe and Python print for ENOSPC / EDQUOT (strerror of the errno).
_DISK_FULL_TEXTS = tuple(os.strerror(code) for code in (errno.ENOSPC, errno.EDQUOT))


def is_disk_full(exc: BaseException) -> bool:
    """Whether `exc`, or an error it was raised from, is a full disk or an exceeded quota.

    ffmpeg's own failures arrive as an `EncodeError` carrying its stderr, so the kernel's
    message is looked for there (only there: other messages may quote user data).
    """
    from core.storage.errors import StorageFullError

    seen: set[int] = set()
    current: BaseException | None = exc
    while current is not None and id(current) not in seen:
        seen.add(id(current))
        if isinstance(current, StorageFullError):
            return True
        if isinstance(current, OSError) and current.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        stderr = getattr(current, "stderr_tail", "")
        if isinstance(stderr, str) and any(marker in stderr for marker in _DISK_FULL_TEXTS):
            return True
        current = current.__cause__ or current.__context__
    return False


def classify(exc: BaseException) -> ErrorKind:
    """Only an unreachable store, a full disk, the network or a crash may pass; bad input
    never does. A full disk is transient: space may be freed, or another worker has room."""
    from core.storage.errors import StorageUnavailableError

    if isinstance(exc, ProcessingError):
        return exc.kind
    if isinstance(exc, StorageUnavailableError) or is_disk_full(exc):
        return ErrorKind.TRANSIENT
    if isinstance(exc, _permanent_types()):
        return ErrorKind.PERMANENT
    return ErrorKind.TRANSIENT


def describe(exc: BaseException) -> str:
    """A one-line reason for the task row."""
    if isinstance(exc, ProcessingError):
        return exc.reason
    text = str(exc).strip() or type(exc).__name__
    return text if len(text) <= 2000 else text[:2000] + "..."
