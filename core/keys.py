"""The object-key layout: the one place that decides where every stored object lives.

Layout (keys are `/`-separated, relative, UTF-8, at most 1024 bytes)::

    uploads/{uuid4 hex}/{sanitized filename}              a raw upload (POST /uploads)
    episodes/{episode_id}/                                everything derived from one episode
    episodes/{episode_id}/manifest.json                   the episode's current outputs
    episodes/{episode_id}/tasks/{task_id}/a{attempt}/     everything one attempt wrote
        .../audio/{format}.{extension}                    one encoded rendition per format
        .../transcript/transcript.{ext}                   the transcript (json, vtt, srt, txt)

Why this shape:

* Every attempt of every task writes under a folder of its own, so nothing an attempt does
  (overwrite, a failure halfway, the clean-up after a cancel) can touch what another task
  or attempt wrote: cancelling task B of an episode cannot delete task A's published files.
* Which version is current is said by one small object, the manifest, written last and
  only when a task is done (`domain.manifest`); readers follow it (or a task's own
  result) instead of guessing keys.
* Runs created before the attempt became a flow parameter use `w{workflow_id}` in place of
  `a{attempt}`: still one folder per attempt, since a workflow row is one attempt.
* Outputs written before this layout (`episodes/{id}/audio/...`) stay where they are and
  are reached through the results that name them; `audio_output_key(output_prefix(id), f)`
  still spells those keys.
* Prefixes end with `/`, so episode `abc` can never match the objects of `abcd`.
* Uploads get a fresh random folder each, so two uploads of `episode.mp3` never collide and
  the client's file name is kept (sanitized) for humans reading the bucket.

Every key that reaches a store goes through `validate_key`, which refuses anything that
could escape a folder (`..`, absolute paths, backslashes) or confuse a log or an HTTP header
(control characters, surrounding whitespace), whatever backend is in use.
"""

from __future__ import annotations

import re
import unicodedata
import uuid
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from core.formats import AudioFormat

__all__ = [
    "MAX_KEY_BYTES",
    "InvalidKeyError",
    "attempt_label",
    "attempt_prefix",
    "audio_output_key",
    "manifest_key",
    "output_prefix",
    "sanitize_filename",
    "tasks_prefix",
    "transcript_key",
    "upload_key",
    "validate_episode_id",
    "validate_key",
    "validate_prefix",
]

#: S3's limit on a key's length, applied to every backend so that keys stay portable.
MAX_KEY_BYTES = 1024

_EPISODE_ID = re.compile(r"[A-Za-z0-9_-][A-Za-z0-9._-]{0,127}")
_EXTENSION = re.compile(r"[A-Za-z0-9]{1,16}")
_UNSAFE_FILENAME_CHARS = re.compile(r"[^A-Za-z0-9._-]+")
_MAX_FILENAME_CHARS = 120


class InvalidKeyError(ValueError):
    """An episode id, object key or prefix is malformed; the message says what is wrong."""


def validate_episode_id(episode_id: str) -> str:
    """Return `episode_id` if it can be embedded in a key, else raise `InvalidKeyError`.

    1 to 128 characters of `A-Z a-z 0-9 . _ -`, not starting with a dot: this keeps ids
    readable in URLs and bucket listings and rules out `.` / `..` path segments.
    """
    if not isinstance(episode_id, str) or not _EPISODE_ID.fullmatch(episode_id):
        raise InvalidKeyError(
            f"invalid episode id {episode_id!r}: use 1-128 characters of letters, digits, "
            "'.', '_' or '-', not starting with '.'"
        )
    return episode_id


def _check_path(value: str, what: str) -> None:
    """The checks shared by keys and prefixes (everything except the trailing slash)."""
    if not isinstance(value, str):
        raise InvalidKeyError(f"{what} must be a string, got {type(value).__name__}")
    if not value:
        raise InvalidKeyError(f"{what} is empty")
    if len(value.encode("utf-8", "surrogatepass")) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"{what} is longer than {MAX_KEY_BYTES} bytes")
    if value != value.strip():
        raise InvalidKeyError(f"{what} {value!r} has leading or trailing whitespace")
    for char in value:
        if unicodedata.category(char) in ("Cc", "Cs"):
            raise InvalidKeyError(f"{what} {value!r} contains a control character")
    if "\\" in value:
        raise InvalidKeyError(f"{what} {value!r} contains a backslash; use '/'")
    if value.startswith("/"):
        raise InvalidKeyError(f"{what} {value!r} is absolute; keys are relative")
    segments = value.split("/")
    if value.endswith("/"):
        segments = segments[:-1]
    for segment in segments:
        if segment in ("", ".", ".."):
            raise InvalidKeyError(f"{what} {value!r} has an empty, '.' or '..' path segment")


def validate_key(key: str) -> str:
    """Return `key` if it is a safe object key, else raise `InvalidKeyError`.

    Refused: empty, over 1024 bytes, leading/trailing whitespace, any control character
    (NUL, newline, ...), backslashes, absolute paths, empty/`.`/`..` segments, and a
    trailing `/` (that names a folder, not an object). The same rules hold for every
    backend, so a key that works locally works on S3 and the reverse.
    """
    _check_path(key, "object key")
    if key.endswith("/"):
        raise InvalidKeyError(f"object key {key!r} ends with '/'; that is a prefix")
    return key


def validate_prefix(prefix: str) -> str:
    """Return `prefix` if it is a safe listing/deletion prefix, else raise `InvalidKeyError`.

    The key rules, except that a trailing `/` is allowed. An empty prefix is refused:
    nothing in audioflow needs to list or delete a whole bucket, and `delete_prefix("")`
    would do exactly that.
    """
    _check_path(prefix, "key prefix")
    return prefix


def output_prefix(episode_id: str) -> str:
    """`episodes/{episode_id}/`: the folder holding everything derived from one episode."""
    return f"episodes/{validate_episode_id(episode_id)}/"


def tasks_prefix(episode_id: str) -> str:
    """`episodes/{episode_id}/tasks/`: the folder holding every attempt's outputs."""
    return f"{output_prefix(episode_id)}tasks/"


def manifest_key(episode_id: str) -> str:
    """`episodes/{episode_id}/manifest.json`: names the episode's current outputs."""
    return validate_key(f"{output_prefix(episode_id)}manifest.json")


def _canonical_uuid(value: object, what: str) -> str:
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise InvalidKeyError(f"invalid {what} {value!r}: expected a UUID") from None


def attempt_label(attempt: object = None, workflow_id: object = None) -> str:
    """The attempt's folder name: `a{attempt}`, or `w{workflow_id}` when the run's
    parameters carry no attempt number (runs created before it was a parameter)."""
    if attempt is not None:
        if isinstance(attempt, bool) or not isinstance(attempt, int) or attempt < 1:
            raise InvalidKeyError(f"invalid attempt {attempt!r}: expected a positive integer")
        return f"a{attempt}"
    if workflow_id is None:
        raise InvalidKeyError("an attempt needs its number or its workflow id")
    return f"w{_canonical_uuid(workflow_id, 'workflow id')}"


def attempt_prefix(episode_id: str, task_id: object, label: str) -> str:
    """`episodes/{id}/tasks/{task_id}/{label}/`: everything one attempt writes, and the
    only folder its clean-up may delete. `label` comes from `attempt_label`."""
    if not re.fullmatch(r"a[1-9][0-9]{0,8}|w[0-9a-f-]{36}", label or ""):
        raise InvalidKeyError(f"invalid attempt label {label!r}")
    task = _canonical_uuid(task_id, "task id")
    return validate_prefix(f"{tasks_prefix(episode_id)}{task}/{label}/")


def audio_output_key(prefix: str, fmt: AudioFormat) -> str:
    """`{prefix}audio/{fmt.name}.{fmt.extension}`, under an attempt's prefix (or, for
    outputs written before attempts had folders, the episode's)."""
    if not prefix.endswith("/"):
        raise InvalidKeyError(f"output prefix {prefix!r} must end with '/'")
    return validate_key(f"{validate_prefix(prefix)}audio/{fmt.name}.{fmt.extension}")


def transcript_key(prefix: str, extension: str) -> str:
    """`{prefix}transcript/transcript.{ext}`; a leading dot on `extension` is allowed."""
    ext = extension[1:] if isinstance(extension, str) and extension.startswith(".") else extension
    if not isinstance(ext, str) or not _EXTENSION.fullmatch(ext):
        raise InvalidKeyError(f"invalid transcript extension {extension!r}")
    if not prefix.endswith("/"):
        raise InvalidKeyError(f"output prefix {prefix!r} must end with '/'")
    return validate_key(f"{validate_prefix(prefix)}transcript/transcript.{ext.lower()}")


def chapters_key(prefix: str) -> str:
    """`{prefix}chapters/chapters.json`: the attempt's Podcasting 2.0 chapters file."""
    if not prefix.endswith("/"):
        raise InvalidKeyError(f"output prefix {prefix!r} must end with '/'")
    return validate_key(f"{validate_prefix(prefix)}chapters/chapters.json")


def waveform_key(prefix: str) -> str:
    """`{prefix}waveform/waveform.json`: the attempt's audiowaveform JSON for web players."""
    if not prefix.endswith("/"):
        raise InvalidKeyError(f"output prefix {prefix!r} must end with '/'")
    return validate_key(f"{validate_prefix(prefix)}waveform/waveform.json")


def sanitize_filename(filename: str) -> str:
    """A client-supplied file name reduced to `[A-Za-z0-9._-]`, for use as a key segment.

    Any directory part is dropped (both `/` and `\\`), accents are folded to ASCII, runs of
    other characters become one `_`, leading dots are removed (no hidden or `..` names), and
    the stem is shortened so the name fits in 120 characters with its extension kept.
    """
    base = re.split(r"[/\\]", filename or "")[-1]
    ascii_name = unicodedata.normalize("NFKD", base).encode("ascii", "ignore").decode("ascii")
    cleaned = _UNSAFE_FILENAME_CHARS.sub("_", ascii_name).lstrip("._")
    if not cleaned.strip("_-."):
        return "upload"
    if len(cleaned) > _MAX_FILENAME_CHARS:
        stem, dot, ext = cleaned.rpartition(".")
        if dot and 0 < len(ext) <= 16:
            cleaned = f"{stem[: _MAX_FILENAME_CHARS - len(ext) - 1]}.{ext}"
        else:
            cleaned = cleaned[:_MAX_FILENAME_CHARS]
    return cleaned


def upload_key(filename: str) -> str:
    """`uploads/{uuid4 hex}/{sanitized filename}`: a fresh, collision-free key per upload."""
    return validate_key(f"uploads/{uuid.uuid4().hex}/{sanitize_filename(filename)}")
