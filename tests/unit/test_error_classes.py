"""Which failures are worth a retry: storage outages and crashes yes, bad input never."""

from __future__ import annotations

import errno
import os

import pytest

from core.keys import InvalidKeyError
from core.storage.errors import (
    ObjectNotFoundError,
    StorageError,
    StorageFullError,
    StorageUnavailableError,
)
from flows.errors import ProcessingError, classify, describe
from media.encode import EncodeError
from media.probe import BadAudioError
from media.tools import ToolMissingError
from transcription.errors import ModelNotAvailableError, TranscriptionInputError


@pytest.mark.parametrize(
    ("exc", "kind"),
    [
        (StorageUnavailableError("connection refused"), "transient"),
        (StorageFullError("no space left"), "transient"),
        (OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), "transient"),
        (OSError(errno.EDQUOT, os.strerror(errno.EDQUOT)), "transient"),
        (EncodeError("write failed", stderr_tail="No space left on device"), "transient"),
        (ConnectionError("reset"), "transient"),
        (RuntimeError("something unexpected"), "transient"),
        (ObjectNotFoundError("uploads/x.mp3"), "permanent"),
        (StorageError("access denied"), "permanent"),
        (BadAudioError("not audio"), "permanent"),
        (InvalidKeyError("bad key"), "permanent"),
        (TranscriptionInputError("undecodable"), "permanent"),
        (ModelNotAvailableError("base.en"), "permanent"),
        (ToolMissingError("ffmpeg"), "permanent"),
        (ProcessingError("x", "transient"), "transient"),
    ],
)
def test_classify(exc: BaseException, kind: str) -> None:
    assert classify(exc) == kind


def test_encode_error_is_permanent_and_described() -> None:
    exc = EncodeError("the source is damaged", returncode=1, stderr_tail="Invalid data")
    assert classify(exc) == "permanent"
    assert "damaged" in describe(exc)


def test_describe_keeps_reasons_short() -> None:
    assert len(describe(RuntimeError("x" * 5000))) <= 2003
    assert (
        describe(ProcessingError("source audio 'a' not found", "permanent"))
        == "source audio 'a' not found"
    )
