"""Encode the source into one output format, tag it, and check the result by decoding it.

One output goes through, in order:

1. the encode, with the loudness normalisation in its filter chain when the task asks for
   it (`media.loudness.normalisation_filter`, from the source's measurement of the mix
   this format is made from);
2. `verify_output`: codec, channels, rate, bitrate and duration from the headers;
3. the tags (episode metadata, cover, chapters: `media.tags.write_tags`), for the formats
   that carry them, then `verify_output` again, since tagging rewrites the container
   (an M4A with chapters is remuxed by ffmpeg);
4. one full decode of the finished file: with loudness normalisation it is the second
   meter (`measure_loudness`: ebur128 and `media.true_peak`, not the chain that set the
   gain) and `check_loudness` decides; without, `check_decodes` alone. Measuring the tagged file
   means the meter hears exactly the bytes that are published, and the same decode proves
   the tagged file still decodes to its full length.

Where the gain needs a limiter, steps 1-4 run with the limiter at the output's rate first
(a sixth of the 4x-rate limiter's CPU); if the check finds that output's true peak over
the limit, or within `FAST_LIMITER_MARGIN_DB` of it, they run again with the oversampled
limiter, whose verdict is final. A miss in any check fails the step as permanent with the
figures: the same source and parameters would miss again.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from core.episode_metadata import Chapter, ChapterError, EpisodeMetadata
from core.formats import get_format
from domain.contracts import ErrorKind
from flows.errors import ProcessingError
from flows.progress import WorkflowProgressReporter
from flows.steps.options import step
from media.encode import encode
from media.loudness import (
    LoudnessCheck,
    LoudnessStats,
    LoudnessTarget,
    check_loudness,
    fast_limiter_holds,
    is_silence,
    measure_loudness,
    mix_for,
    needs_limiter,
    normalisation_filter,
)
from media.probe import (
    DURATION_TOLERANCE_S,
    AudioInfo,
    BadAudioError,
    OutputCheckError,
    check_decodes,
    verify_output,
)
from media.tags import TAGGED_EXTENSIONS, TagReport, TagWriteError, write_tags

log = logging.getLogger(__name__)

#: Share of an encode step's progress that is the encode itself; the tags and the
#: checking decode (about a tenth of an encode's time) make the rest.
ENCODE_SHARE = 0.9


@dataclass(frozen=True)
class EncodedOutput:
    """One checked output file, ready to upload."""

    format_name: str
    path: Path
    info: AudioInfo
    #: Measured on the finished file by the second meter; None without normalisation.
    loudness: LoudnessStats | None = None
    #: What was written into it; None when nothing was (no metadata and no chapters, or a
    #: format without tags).
    tags: TagReport | None = None


@step("encode", task_run_name="encode-{format_name}")
def encode_format(
    source: Path,
    source_info: AudioInfo,
    format_name: str,
    workdir: Path,
    reporter: WorkflowProgressReporter,
    *,
    source_loudness: Mapping[str, LoudnessStats] | None = None,
    target: LoudnessTarget | None = None,
    metadata: EpisodeMetadata | None = None,
    chapters: Sequence[Chapter] = (),
) -> EncodedOutput:
    """One ffmpeg process straight from the source file: flat memory whatever the length.

    `target` (with `source_loudness`, the decode check's measurement by mix) normalises
    the output; None keeps the source's loudness. `metadata` and `chapters` are written
    as tags where the format carries them.
    """
    fmt = get_format(format_name)
    step = f"encode:{format_name}"
    dest = workdir / f"{fmt.name}.{fmt.extension}"
    stats: LoudnessStats | None = None
    if target is not None:
        stats = (source_loudness or {}).get(mix_for(fmt))
        if stats is None:  # a caller's bug: the decode check measures every format's mix
            raise ProcessingError(
                f"{format_name}: the source's loudness was not measured for the "
                f"{mix_for(fmt)!r} mix",
                ErrorKind.PERMANENT,
            )
    # A silent source gets no gain (there is no loudness to scale), so its outputs are
    # measured and reported but cannot be held to the target.
    silent = stats is not None and is_silence(stats)
    # The limiter runs at the output's rate first; only if the check then finds the true
    # peak over the limit is the output made again with the 4x oversampled limiter.
    limited = (
        stats is not None
        and target is not None
        and needs_limiter(stats, fmt, source_channels=source_info.channels, target=target)
    )
    attempts = (False, True) if limited else (True,)
    for oversample in attempts:
        audio_filter = None
        if stats is not None and target is not None:
            audio_filter = normalisation_filter(
                stats,
                fmt,
                source_channels=source_info.channels,
                source_sample_rate=source_info.sample_rate,
                target=target,
                oversample=oversample,
            )
        again = " again with the oversampled limiter" if oversample and limited else ""
        reporter.update(step, 0.0, f"encoding {format_name}{again}")
        encode(
            source,
            dest,
            fmt,
            duration_s=source_info.duration_s,
            audio_filter=audio_filter,
            on_progress=lambda fraction: reporter.update(
                step, ENCODE_SHARE * fraction, f"encoding {format_name} ({int(fraction * 100)}%)"
            ),
        )
        info = verify_output(dest, fmt, source_info)
        tags = _tag(dest, format_name, info, metadata, chapters)
        if tags is not None:
            info = verify_output(dest, fmt, source_info)
        reporter.update(step, ENCODE_SHARE, f"checking {format_name}")
        loudness, verdict = _check_decode(dest, format_name, info, target, tagged=tags is not None)
        if verdict is None or loudness is None or silent:
            break
        if oversample or not limited:
            if not verdict.ok:
                raise ProcessingError(f"{format_name}: {verdict.message}", ErrorKind.PERMANENT)
            break
        if verdict.ok and target is not None and fast_limiter_holds(loudness, target):
            break
        if not verdict.ok and verdict.peak_ok:  # off in loudness: no limiter fixes that
            raise ProcessingError(f"{format_name}: {verdict.message}", ErrorKind.PERMANENT)
        log.info(
            "%s: true peak %.2f dBTP after the limiter at the output's rate; encoding again "
            "with the oversampled limiter",
            format_name,
            loudness.true_peak_dbtp,
        )
    reporter.finish_step(step, f"encoded {format_name}")
    return EncodedOutput(
        format_name=format_name, path=dest, info=info, loudness=loudness, tags=tags
    )


def _tag(
    dest: Path,
    format_name: str,
    info: AudioInfo,
    metadata: EpisodeMetadata | None,
    chapters: Sequence[Chapter],
) -> TagReport | None:
    """Write the tags when there are any and the format carries them; the report, or None
    when nothing was written."""
    fmt = get_format(format_name)
    if fmt.extension not in TAGGED_EXTENSIONS or (
        (metadata is None or metadata.is_empty()) and not chapters
    ):
        return None
    try:
        report = write_tags(dest, fmt, metadata, chapters, duration_s=info.duration_s)
    except (TagWriteError, ChapterError) as exc:
        raise ProcessingError(
            f"{format_name}: tags could not be written: {exc}", ErrorKind.PERMANENT
        ) from exc
    return None if report.skipped else report


def _check_decode(
    dest: Path,
    format_name: str,
    info: AudioInfo,
    target: LoudnessTarget | None,
    *,
    tagged: bool,
) -> tuple[LoudnessStats | None, LoudnessCheck | None]:
    """The one full decode of the finished file: its loudness and the verdict on it
    against `target` when normalising, else (after tagging) that it still decodes to its
    length. The caller decides what a verdict off target means."""
    try:
        if target is not None:
            measured = measure_loudness(dest)
        elif tagged:
            report = check_decodes(dest)
            if abs(report.decoded_s - info.duration_s) > DURATION_TOLERANCE_S:
                raise OutputCheckError(
                    f"{format_name} output decodes to {report.decoded_s:.2f} s after tagging; "
                    f"its header says {info.duration_s:.2f} s"
                )
            return None, None
        else:
            return None, None
    except BadAudioError as exc:
        raise OutputCheckError(f"{format_name} output does not decode: {exc}") from exc
    return measured, check_loudness(measured, target, channels=info.channels)
