"""Fetch the episode's source audio from object storage and check that it is usable audio."""

from __future__ import annotations

from pathlib import Path, PurePosixPath

from core.storage import get_store
from core.storage.errors import ObjectNotFoundError
from domain.contracts import ErrorKind
from flows.errors import ProcessingError
from flows.progress import WorkflowProgressReporter
from flows.steps.options import step
from flows.workspace import ensure_free_space
from media.probe import AudioInfo, BadAudioError, probe_source


@step("download-source")
def fetch_source(
    audio_key: str, workdir: Path, reporter: WorkflowProgressReporter
) -> tuple[Path, AudioInfo]:
    """Download the source once into the run's folder, then probe and fully decode it.

    A temp disk without room for the source fails the step as transient before downloading.
    """
    store = get_store()
    suffix = PurePosixPath(audio_key).suffix[:16]
    dest = workdir / f"source{suffix}"
    reporter.update("download", 0.0, f"downloading {audio_key}")
    try:
        # Room for the source first (one HEAD on S3): a full temp disk fails here, before
        # the download, not partway through it.
        ensure_free_space(workdir, store.size(audio_key), "the source audio")
        size = store.get_file(audio_key, dest)
    except ObjectNotFoundError as exc:
        raise ProcessingError(
            f"source audio {audio_key!r} not found in {store.describe()}", ErrorKind.PERMANENT
        ) from exc
    if size == 0:
        raise ProcessingError(
            f"source audio {audio_key!r} is an empty file (0 bytes)", ErrorKind.PERMANENT
        )
    try:
        info = probe_source(dest)
    except BadAudioError as exc:
        raise ProcessingError(
            f"source audio {audio_key!r} is not usable: {exc}", ErrorKind.PERMANENT
        ) from exc
    reporter.finish_step(
        "download", f"downloaded {size} bytes, {info.duration_s:.1f} s of {info.codec} audio"
    )
    return dest, info
