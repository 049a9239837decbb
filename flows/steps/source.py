"""Fetch the episode's source audio from object storage and check that it is usable audio.

The check is one full decode of the source (`media.probe`), and it is made to serve
everything else that needs the whole audio: the loudness of each mix the requested formats
are made from (EBU R128, for the normalisation), and the waveform file's PCM (a second
output of the same ffmpeg process). No other step reads or decodes the source for these.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

from core.storage import get_store
from core.storage.errors import ObjectNotFoundError
from domain.contracts import ErrorKind
from flows.errors import ProcessingError
from flows.progress import WorkflowProgressReporter
from flows.steps.options import step
from flows.workspace import ensure_free_space
from media.loudness import LoudnessStats
from media.probe import AudioInfo, BadAudioError, probe_source_measured
from media.waveform import WAVEFORM_SAMPLE_RATE, WaveformBuilder


@dataclass(frozen=True)
class SourceAudio:
    """The downloaded, checked source and what its decode measured."""

    path: Path
    info: AudioInfo
    #: Loudness by mix (`media.loudness.mix_for` of each requested format); empty when the
    #: task keeps the source's loudness.
    loudness: Mapping[str, LoudnessStats] = field(default_factory=dict)
    #: The waveform's pixels, as the source is (the flow scales them by the output's gain).
    waveform: WaveformBuilder | None = None


@step("download-source")
def fetch_source(
    audio_key: str,
    workdir: Path,
    reporter: WorkflowProgressReporter,
    *,
    loudness_mixes: Sequence[str] = (),
    waveform_samples_per_pixel: int | None = None,
    waveform_mix: str | None = None,
) -> SourceAudio:
    """Download the source once into the run's folder, then probe and fully decode it.

    `loudness_mixes` are measured in that decode; with `waveform_samples_per_pixel` the
    decode also feeds the waveform (the audio as an output made from `waveform_mix` has
    it, in mono). A temp disk without room for the source fails the step as transient
    before downloading; a missing, empty or unusable source fails it as permanent.
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
    # The download is the step's first half; the decode (with its meters) the second.
    reporter.update("download", 0.5, f"downloaded {size} bytes; checking the audio")
    waveform = (
        WaveformBuilder(WAVEFORM_SAMPLE_RATE, waveform_samples_per_pixel)
        if waveform_samples_per_pixel
        else None
    )
    try:
        info, loudness = probe_source_measured(
            dest, list(dict.fromkeys(loudness_mixes)), waveform=waveform, waveform_mix=waveform_mix
        )
    except BadAudioError as exc:
        raise ProcessingError(
            f"source audio {audio_key!r} is not usable: {exc}", ErrorKind.PERMANENT
        ) from exc
    reporter.finish_step(
        "download", f"downloaded {size} bytes, {info.duration_s:.1f} s of {info.codec} audio"
    )
    return SourceAudio(path=dest, info=info, loudness=dict(loudness), waveform=waveform)
