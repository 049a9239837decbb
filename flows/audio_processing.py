"""The `audio-processing` flow: fetch an episode's audio, encode every format, transcribe, store.

Reads as the job's steps; the work lives in `flows.steps` (Prefect tasks) and below them
in plain functions. Encodes run side by side (one ffmpeg each), then transcription runs
alone: on two cores, encoding and transcribing at once was slower than one after the other.
"""

from __future__ import annotations

import shutil
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

from core.formats import TRANSCRIPT_FORMATS, get_format
from core.settings import get_settings
from core.storage import get_store
from domain.contracts import (
    AudioOutput,
    AudioProcessingParameters,
    AudioProcessingResult,
    ErrorKind,
    SourceSummary,
    TranscriptSummary,
    problems,
)
from domain.outputs import ExpectedOutputs, expected_outputs
from flows import hooks
from flows.errors import ProcessingError, classify, describe
from flows.progress import HttpSender, ProgressPlan, WorkflowProgressReporter
from flows.steps.encoding import EncodedOutput, encode_format
from flows.steps.source import fetch_source
from flows.steps.transcription import TranscriptFiles, transcribe_source
from flows.steps.upload import PlannedUpload, upload_outputs
from flows.workspace import create_run_dir, ensure_room_for_outputs
from media.probe import AudioInfo


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
        source, source_info = fetch_source(run.audio_key, workdir, reporter)
        logger.info("source: %.1f s of %s", source_info.duration_s, source_info.codec)
        ensure_room_for_outputs(workdir, source_info, formats, run.transcribe)
        encoded: list[EncodedOutput] = [
            f.result()
            for f in [
                encode_format.submit(source, source_info, name, workdir, reporter)
                for name in formats
            ]
        ]
        transcript = (
            transcribe_source(source, source_info, run.language, workdir, reporter)
            if run.transcribe
            else None
        )
        uploads = _plan_uploads(expected, encoded, transcript)
        sizes = upload_outputs(uploads, reporter)
        storage = get_store().describe()
        result = _result(run, expected, storage, source_info, encoded, transcript, sizes)
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
) -> AudioProcessingResult:
    outputs: dict[str, AudioOutput] = {}
    for output in encoded:
        key = expected.audio[output.format_name]
        outputs[output.format_name] = AudioOutput(
            key=key,
            size=sizes[key],
            duration_s=round(output.info.duration_s, 3),
            bitrate_kbps=round(output.info.bitrate_kbps) if output.info.bitrate_kbps else None,
            codec=output.info.codec,
            channels=output.info.channels,
            sample_rate=output.info.sample_rate,
        )
    fields: dict[str, Any] = {
        "episode_id": run.episode_id,
        "storage": storage,
        "source": SourceSummary(
            key=run.audio_key,
            duration_s=round(source_info.duration_s, 3),
            codec=source_info.codec,
        ),
        "outputs": outputs,
    }
    if transcript is not None:
        fields["transcript"] = TranscriptSummary(
            language=transcript.language,
            segments=transcript.segments,
            keys={name: expected.transcript[name] for name in transcript.files},
            first_lines=transcript.first_lines,
        )
    return AudioProcessingResult(**fields)


def _outputs_artifact(episode_id: str, result: dict[str, Any]) -> None:
    lines = [
        f"# Episode `{episode_id}`",
        "",
        "| format | key | size (bytes) | duration (s) | bitrate (kbps) | codec |",
        "|---|---|---|---|---|---|",
    ]
    for name, out in result["outputs"].items():
        lines.append(
            f"| {name} | `{out['key']}` | {out['size']} | {out['durationS']} | "
            f"{out['bitrateKbps']} | {out['codec']} |"
        )
    if "transcript" in result:
        t = result["transcript"]
        lines += ["", f"**Transcript** ({t['language']}, {t['segments']} segments):", ""]
        lines += [f"- `{key}`" for key in t["keys"].values()]
    create_markdown_artifact("\n".join(lines), description=f"Outputs of episode {episode_id}")
