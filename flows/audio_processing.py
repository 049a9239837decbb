"""The `audio-processing` flow: fetch an episode's audio, encode every format, transcribe, store.

Reads as the job's steps; the work lives in `flows.steps` (Prefect tasks) and below them
in plain functions. Encodes run side by side (one ffmpeg each), then transcription runs
alone: on two cores, encoding and transcribing at once was slower than one after the other.

Issue 12's podcast finishing rides on those steps rather than adding passes over the
audio: the source's one decode check also measures its loudness (per mix the formats need)
and feeds the waveform; each encode normalises in its own filter chain, then is tagged
(metadata, cover, chapters) and measured by a second meter; the cover and chapter images
are checked before anything is downloaded. The chapters file (Podcasting 2.0 JSON) and
the waveform file (audiowaveform JSON) are uploaded with the other outputs.
"""

from __future__ import annotations

import json
import math
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import (
    create_markdown_artifact,
    create_progress_artifact,
    update_progress_artifact,
)
from prefect.runtime import flow_run
from pydantic import ValidationError
from pydantic.json_schema import SkipJsonSchema

from core.episode_metadata import CHAPTERS_CONTENT_TYPE, chapters_document
from core.formats import TRANSCRIPT_FORMATS, get_format
from core.settings import get_settings
from core.storage import get_store
from domain.contracts import (
    AudioOutput,
    AudioProcessingParameters,
    AudioProcessingResult,
    ChaptersSummary,
    ErrorKind,
    LoudnessFigures,
    LoudnessParameters,
    SourceSummary,
    TranscriptSummary,
    WaveformSummary,
    problems,
)
from domain.outputs import ExpectedOutputs, expected_outputs
from flows import hooks
from flows.errors import ProcessingError, classify, describe
from flows.progress import HttpSender, ProgressPlan, WorkflowProgressReporter
from flows.steps.encoding import EncodedOutput, encode_format
from flows.steps.episode import (
    EpisodeChapters,
    check_artwork,
    episode_chapters,
    episode_metadata,
)
from flows.steps.source import SourceAudio, fetch_source
from flows.steps.transcription import TranscriptFiles, transcribe_source
from flows.steps.upload import PlannedUpload, upload_outputs
from flows.workspace import create_run_dir, ensure_room_for_outputs
from media.loudness import (
    TRUE_PEAK_MARGIN_DB,
    LoudnessStats,
    LoudnessTarget,
    mix_for,
    normalisation_gain_db,
)
from media.probe import AudioInfo

#: The waveform file's content type (audiowaveform JSON is plain JSON).
WAVEFORM_CONTENT_TYPE = "application/json"


@flow(
    name="audio-processing",
    description="Encode an episode's audio to the requested formats and transcribe it.",
    persist_result=False,
    on_running=[hooks.on_running],
    on_completion=[hooks.on_completion],
    on_failure=[hooks.on_failure],
    on_crashed=[hooks.on_crashed],
    on_cancellation=[hooks.on_cancellation],
)
def audio_processing(
    # Optional only for the old runs below; the form shows the model, not a null choice.
    params: AudioProcessingParameters | SkipJsonSchema[None] = None,
    # Runs created before the flow took one model carry its fields as separate parameters.
    # Prefect binds a run's parameters to this signature by name (an unknown name fails the
    # run), so these stay, hidden from the run form, and are folded into `params`.
    task_id: SkipJsonSchema[str | None] = None,
    workflow_id: SkipJsonSchema[str | None] = None,
    episode_id: SkipJsonSchema[str | None] = None,
    audio_key: SkipJsonSchema[str | None] = None,
    encoding_formats: SkipJsonSchema[list[str] | None] = None,
    transcribe: SkipJsonSchema[bool | None] = None,
    language: SkipJsonSchema[str | None] = None,
    attempt: SkipJsonSchema[int | None] = None,
) -> dict[str, Any]:
    """Process one episode; the returned result is also posted to the workflow row.

    Args:
        params: What to do: the task and workflow, the episode and its source audio, the
            formats, whether to transcribe.
    """
    legacy = {
        "task_id": task_id,
        "workflow_id": workflow_id,
        "episode_id": episode_id,
        "audio_key": audio_key,
        "encoding_formats": encoding_formats,
        "transcribe": transcribe,
        "language": language,
        "attempt": attempt,
    }
    run = _parameters(params, {k: v for k, v in legacy.items() if v is not None})
    logger = get_run_logger()
    settings = get_settings()
    # Every object this run writes lives under its attempt's own folder (core.keys), and
    # is named by the same function the API uses to check and clean up after a run.
    expected = expected_outputs(run)
    formats = run.encoding_formats
    plan = ProgressPlan.for_run(formats, run.transcribe)
    artifact_id = create_progress_artifact(0.0, description=f"Processing episode {run.episode_id}")
    reporter = WorkflowProgressReporter(
        str(run.task_id),
        str(run.workflow_id),
        plan,
        HttpSender(settings.api.public_url, settings.internal_token),
        on_report=lambda percent, _step: _update_artifact(artifact_id, percent),
    )
    workdir = create_run_dir(
        settings.temp_dir, flow_run.id, run.episode_id, settings.prefect.api_url
    )
    try:
        # The cover and chapter images first: a missing or bad one fails the task before
        # the source is downloaded.
        artwork = check_artwork(run.metadata, run.chapters, workdir, settings.media)
        target = loudness_target(run.loudness)
        source_audio = fetch_source(
            run.audio_key,
            workdir,
            reporter,
            loudness_mixes=[mix_for(get_format(name)) for name in formats] if target else [],
            waveform_samples_per_pixel=(
                settings.media.waveform_samples_per_pixel if run.waveform else None
            ),
            # The waveform shows the first format as published: its own downmix when it is
            # normalised (the gain is then that mix's); else the channels' average.
            waveform_mix=mix_for(get_format(formats[0])) if formats and target else None,
        )
        source, source_info = source_audio.path, source_audio.info
        logger.info("source: %.1f s of %s", source_info.duration_s, source_info.codec)
        chapters = episode_chapters(
            run.chapters, source, source_info.duration_s, artwork.image_urls
        )
        metadata = episode_metadata(run.metadata, artwork.cover)
        ensure_room_for_outputs(
            workdir,
            source_info,
            formats,
            run.transcribe,
            waveform_pixels=source_audio.waveform.length if source_audio.waveform else 0,
            cover_bytes=len(artwork.cover.data) if artwork.cover else 0,
            chapters=len(chapters.chapters),
        )
        encoded: list[EncodedOutput] = [
            f.result()
            for f in [
                encode_format.submit(
                    source,
                    source_info,
                    name,
                    workdir,
                    reporter,
                    source_loudness=source_audio.loudness,
                    target=target,
                    metadata=metadata,
                    chapters=chapters.chapters,
                )
                for name in formats
            ]
        ]
        transcript = (
            transcribe_source(source, source_info, run.language, workdir, reporter)
            if run.transcribe
            else None
        )
        extras = _side_files(run, expected, workdir, source_audio, target, chapters)
        uploads = _plan_uploads(expected, encoded, transcript) + [f.upload for f in extras]
        sizes = upload_outputs(uploads, reporter)
        storage = get_store().describe()
        result = _result(
            run,
            expected,
            storage,
            source_info,
            encoded,
            transcript,
            sizes,
            source_audio=source_audio,
            chapters=chapters,
            side_files=extras,
        )
        result_json = result.to_json()
        # Post the result now: the completion hook then only has to make it final.
        reporter.report(step="finishing", message="outputs stored", result=result_json)
        _outputs_artifact(run.episode_id, result_json)
        return result_json
    except Exception as exc:
        raise ProcessingError(describe(exc), classify(exc)) from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _parameters(
    params: AudioProcessingParameters | None, legacy: dict[str, Any]
) -> AudioProcessingParameters:
    """The run's parameters as one model, from `params` or from a run of the old flat
    shape; a bad value fails the run at once, permanently (trying again cannot help)."""
    if params is not None and legacy:
        raise ProcessingError(
            f"invalid flow parameters: give either params or the flat fields "
            f"({', '.join(legacy)}), not both",
            ErrorKind.PERMANENT,
        )
    try:
        return params if params is not None else AudioProcessingParameters.model_validate(legacy)
    except ValidationError as exc:
        raise ProcessingError(
            f"invalid flow parameters: {problems(exc)}", ErrorKind.PERMANENT
        ) from exc


def _update_artifact(artifact_id: Any, percent: int) -> None:
    try:
        update_progress_artifact(artifact_id, float(percent))
    except Exception as exc:  # the dashboard is nice to have; the run goes on without it
        get_run_logger().debug("progress artifact not updated: %s", exc)


def loudness_target(params: LoudnessParameters | None) -> LoudnessTarget | None:
    """The target every output is normalised to; None keeps the source's loudness."""
    if params is None:
        return None
    return LoudnessTarget(
        integrated_lufs=params.target_lufs,
        true_peak_dbtp=params.true_peak_dbtp,
        mono_integrated_lufs=params.target_lufs_mono,
    )


def mix_label(mix: str, source_channels: int) -> str:
    """What a measured mix is called in the result: `mono` or `stereo` as the outputs made
    from it are (`mono|stereo` keeps the source's channels up to two)."""
    layouts = mix.split("|")
    if layouts == ["mono"] or (source_channels <= 1 and "mono" in layouts):
        return "mono"
    return "stereo" if "stereo" in layouts else mix


def figures(stats: LoudnessStats) -> LoudnessFigures:
    """A measurement as the result carries it (no finite figure: None)."""

    def finite(value: float) -> float | None:
        return round(value, 2) if math.isfinite(value) else None

    return LoudnessFigures(
        integrated_lufs=finite(stats.integrated_lufs),
        loudness_range_lu=finite(stats.lra_lu),
        true_peak_dbtp=finite(stats.true_peak_dbtp),
    )


def waveform_document(
    source: SourceAudio, reference_format: str | None, target: LoudnessTarget | None
) -> dict[str, Any]:
    """The audiowaveform JSON of the source's decode, as the audio is published.

    The pixels were taken from the source before its loudness was known (the same decode
    measured it), so they are scaled here by the gain the normalisation applies to the
    reference output (the first requested format: the one a web player is given first) and
    capped at the ceiling its limiter holds the peaks to. Without that, a web player would
    draw a quiet source's waveform as a flat line while the published file plays at
    podcast loudness, and a clipping one as a solid block the limiter has since tamed.
    The limiter's gain reduction around each peak (its attack and release) is not
    reproduced, only its ceiling: on a heavily limited source the waveform can stand a
    fraction of a dB above the published audio (0.6 dB measured on -35 LUFS noise
    brought up 19 dB), which a player's drawing does not show. Without normalisation the
    waveform is the source's own.
    """
    assert source.waveform is not None
    gain, ceiling = 0.0, 1.0
    if target is not None and reference_format is not None:
        fmt = get_format(reference_format)
        stats = source.loudness.get(mix_for(fmt))
        if stats is not None:
            gain = normalisation_gain_db(
                stats, fmt, source_channels=source.info.channels, target=target
            )
            ceiling = 10 ** ((target.true_peak_dbtp - TRUE_PEAK_MARGIN_DB) / 20)
    return source.waveform.result(gain_db=gain, ceiling=ceiling)


@dataclass(frozen=True)
class SideFile:
    """The chapters file or the waveform file: written in the run's folder, uploaded with
    the outputs, and what the result says about it."""

    upload: PlannedUpload
    summary: ChaptersSummary | WaveformSummary


def _side_files(
    run: AudioProcessingParameters,
    expected: ExpectedOutputs,
    workdir: Path,
    source: SourceAudio,
    target: LoudnessTarget | None,
    chapters: EpisodeChapters,
) -> list[SideFile]:
    """The chapters file (when there are chapters) and the waveform file (when asked for),
    under the keys `expected` names (the API checks and cleans up by the same names)."""
    files: list[SideFile] = []
    if chapters.chapters:
        if expected.chapters is None:
            raise RuntimeError("chapters to write, but this attempt expects no chapters file")
        path = workdir / "chapters.json"
        path.write_text(json.dumps(chapters_document(chapters.chapters), ensure_ascii=False))
        key = expected.chapters
        files.append(
            SideFile(
                PlannedUpload(key, path, CHAPTERS_CONTENT_TYPE),
                ChaptersSummary(key=key, count=len(chapters.chapters), origin=chapters.origin),
            )
        )
    if expected.waveform is not None and source.waveform is not None:
        reference = run.encoding_formats[0] if run.encoding_formats else None
        document = waveform_document(source, reference, target)
        path = workdir / "waveform.json"
        path.write_text(json.dumps(document, separators=(",", ":")))
        key = expected.waveform
        files.append(
            SideFile(
                PlannedUpload(key, path, WAVEFORM_CONTENT_TYPE),
                WaveformSummary(
                    key=key,
                    sample_rate=document["sample_rate"],
                    samples_per_pixel=document["samples_per_pixel"],
                    length=document["length"],
                ),
            )
        )
    return files


def _plan_uploads(
    expected: ExpectedOutputs, encoded: list[EncodedOutput], transcript: TranscriptFiles | None
) -> list[PlannedUpload]:
    uploads = []
    for output in encoded:
        fmt = get_format(output.format_name)
        uploads.append(PlannedUpload(expected.audio[fmt.name], output.path, fmt.content_type))
    if transcript is not None:
        for name, path in transcript.files.items():
            uploads.append(
                PlannedUpload(
                    expected.transcript[name], path, TRANSCRIPT_FORMATS[name].content_type
                )
            )
    return uploads


def _result(
    run: AudioProcessingParameters,
    expected: ExpectedOutputs,
    storage: str,
    source_info: AudioInfo,
    encoded: list[EncodedOutput],
    transcript: TranscriptFiles | None,
    sizes: dict[str, int],
    *,
    source_audio: SourceAudio | None = None,
    chapters: EpisodeChapters | None = None,
    side_files: list[SideFile] | None = None,
) -> AudioProcessingResult:
    outputs: dict[str, AudioOutput] = {}
    for output in encoded:
        key = expected.audio[output.format_name]
        extra: dict[str, Any] = {}
        if output.loudness is not None:
            extra["loudness"] = figures(output.loudness)
        if output.tags is not None:
            extra["tags"] = list(output.tags.fields)
            extra["chapters"] = output.tags.chapters
        outputs[output.format_name] = AudioOutput(
            key=key,
            size=sizes[key],
            duration_s=round(output.info.duration_s, 3),
            bitrate_kbps=round(output.info.bitrate_kbps) if output.info.bitrate_kbps else None,
            codec=output.info.codec,
            channels=output.info.channels,
            sample_rate=output.info.sample_rate,
            **extra,
        )
    source_extra: dict[str, Any] = {}
    if source_audio is not None and source_audio.loudness:
        source_extra["loudness"] = {
            mix_label(mix, source_info.channels): figures(stats)
            for mix, stats in source_audio.loudness.items()
        }
    if chapters is not None and chapters.source_count is not None:
        source_extra["chapters"] = chapters.source_count
    fields: dict[str, Any] = {
        "episode_id": run.episode_id,
        "storage": storage,
        "source": SourceSummary(
            key=run.audio_key,
            duration_s=round(source_info.duration_s, 3),
            codec=source_info.codec,
            **source_extra,
        ),
        "outputs": outputs,
    }
    for side in side_files or ():
        name = "chapters" if isinstance(side.summary, ChaptersSummary) else "waveform"
        fields[name] = side.summary
    if transcript is not None:
        fields["transcript"] = TranscriptSummary(
            language=transcript.language,
            language_probability=transcript.language_probability,
            segments=transcript.segments,
            dropped_segments=transcript.dropped_segments,
            keys={name: expected.transcript[name] for name in transcript.files},
            first_lines=transcript.first_lines,
        )
    return AudioProcessingResult(**fields)


def _loudness_cells(figures: dict[str, Any] | None) -> str:
    """`integrated LUFS | LRA LU | true peak dBTP` cells of the artifact's tables."""
    if not figures:
        return "- | - | -"
    return " | ".join(
        str(figures.get(name, "-"))
        for name in ("integratedLufs", "loudnessRangeLu", "truePeakDbtp")
    )


def outputs_markdown(episode_id: str, result: dict[str, Any]) -> str:
    """The run's Prefect artifact: the outputs with their loudness and tags, the source's
    loudness, the transcript, chapters and waveform files (from the stored result)."""
    lines = [
        f"# Episode `{episode_id}`",
        "",
        "| format | key | size (bytes) | duration (s) | bitrate (kbps) | codec | "
        "loudness (LUFS) | LRA (LU) | true peak (dBTP) | tags | chapters |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, out in result["outputs"].items():
        tags = ", ".join(out.get("tags") or []) or "-"
        lines.append(
            f"| {name} | `{out['key']}` | {out['size']} | {out['durationS']} | "
            f"{out['bitrateKbps']} | {out['codec']} | {_loudness_cells(out.get('loudness'))} | "
            f"{tags} | {out.get('chapters', '-')} |"
        )
    source = result.get("source") or {}
    if source.get("loudness"):
        lines += [
            "",
            f"**Source loudness** (`{source['key']}`, as measured in its decode check):",
            "",
            "| mix | loudness (LUFS) | LRA (LU) | true peak (dBTP) |",
            "|---|---|---|---|",
        ]
        for mix, measured in source["loudness"].items():
            lines.append(f"| {mix} | {_loudness_cells(measured)} |")
    elif source and result["outputs"]:
        lines += ["", "**Loudness**: kept as the source's (no normalisation)."]
    if "transcript" in result:
        t = result["transcript"]
        language = t.get("language")
        if t.get("languageProbability") is not None:
            language = f"{language}, probability {t['languageProbability']:.2f}"
        dropped = t.get("droppedSegments")
        lines += [
            "",
            f"**Transcript** ({language}, {t.get('segments')} segments"
            + (f", {dropped} dropped as likely hallucinations" if dropped is not None else "")
            + "):",
            "",
        ]
        lines += [f"- `{key}`" for key in t["keys"].values()]
    if "chapters" in result:
        c = result["chapters"]
        lines += ["", f"**Chapters**: {c['count']} from the {c['origin']}: `{c['key']}`"]
    if "waveform" in result:
        w = result["waveform"]
        lines += [
            "",
            f"**Waveform**: {w['length']} pixels of {w['samplesPerPixel']} samples at "
            f"{w['sampleRate']} Hz: `{w['key']}`",
        ]
    return "\n".join(lines)


def _outputs_artifact(episode_id: str, result: dict[str, Any]) -> None:
    create_markdown_artifact(
        outputs_markdown(episode_id, result), description=f"Outputs of episode {episode_id}"
    )
