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

from core.formats import get_format
from core.keys import attempt_label, attempt_prefix, audio_output_key, transcript_key
from core.settings import get_settings
from core.storage import get_store
from flows import hooks
from flows.errors import ProcessingError, classify, describe
from flows.progress import HttpSender, ProgressPlan, WorkflowProgressReporter
from flows.steps.encoding import EncodedOutput, encode_format
from flows.steps.source import fetch_source
from flows.steps.transcription import TranscriptFiles, transcribe_source
from flows.steps.upload import PlannedUpload, upload_outputs
from flows.workspace import create_run_dir, ensure_room_for_outputs
from transcription.writers import WRITERS


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
    task_id: str,
    workflow_id: str,
    episode_id: str,
    audio_key: str,
    encoding_formats: list[str],
    transcribe: bool = True,
    language: str | None = None,
    attempt: int | None = None,
) -> dict[str, Any]:
    """Process one episode; the returned result is also posted to the workflow row.

    Prefect shows these descriptions in the deployment's parameter form (it reads them from
    this docstring, not from pydantic `Field`s on the signature).

    Args:
        task_id: The audioflow task (database row) this run serves.
        workflow_id: The workflow row of this attempt.
        episode_id: Episode id; output keys start with it.
        audio_key: Object key of the source audio.
        encoding_formats: Output formats, e.g. mp3_128, mp3_320, opus_64.
        transcribe: Also transcribe the speech.
        language: Spoken language code; empty detects it.
        attempt: The task's attempt number; outputs go to this attempt's own folder
            (runs created without it use the workflow id).
    """
    logger = get_run_logger()
    settings = get_settings()
    for name in encoding_formats:
        get_format(name)  # unknown names fail before any work, with the list of known ones
    # Every object this run writes lives under its attempt's own folder (core.keys).
    prefix = attempt_prefix(episode_id, task_id, attempt_label(attempt, workflow_id))
    plan = ProgressPlan.for_run(encoding_formats, transcribe)
    artifact_id = create_progress_artifact(0.0, description=f"Processing episode {episode_id}")
    reporter = WorkflowProgressReporter(
        task_id,
        workflow_id,
        plan,
        HttpSender(settings.api.public_url, settings.internal_token),
        on_report=lambda percent, _step: _update_artifact(artifact_id, percent),
    )
    workdir = create_run_dir(
        settings.temp_dir, flow_run.id, episode_id, settings.prefect.api_url
    )
    try:
        source, source_info = fetch_source(audio_key, workdir, reporter)
        logger.info("source: %.1f s of %s", source_info.duration_s, source_info.codec)
        ensure_room_for_outputs(workdir, source_info, encoding_formats, transcribe)
        encoded: list[EncodedOutput] = [
            f.result()
            for f in [
                encode_format.submit(source, source_info, name, workdir, reporter)
                for name in encoding_formats
            ]
        ]
        transcript = (
            transcribe_source(source, source_info, language, workdir, reporter)
            if transcribe
            else None
        )
        uploads = _plan_uploads(prefix, encoded, transcript)
        sizes = upload_outputs(uploads, reporter)
        result = _result(episode_id, prefix, audio_key, source_info, encoded, transcript, sizes)
        # Post the result now: the completion hook then only has to make it final.
        reporter.report(step="finishing", message="outputs stored", result=result)
        _outputs_artifact(episode_id, result)
        return result
    except Exception as exc:
        raise ProcessingError(describe(exc), classify(exc)) from exc
    finally:
        shutil.rmtree(workdir, ignore_errors=True)


def _update_artifact(artifact_id: Any, percent: int) -> None:
    try:
        update_progress_artifact(artifact_id, float(percent))
    except Exception as exc:  # the dashboard is nice to have; the run goes on without it
        get_run_logger().debug("progress artifact not updated: %s", exc)


def _plan_uploads(
    prefix: str, encoded: list[EncodedOutput], transcript: TranscriptFiles | None
) -> list[PlannedUpload]:
    uploads = []
    for output in encoded:
        fmt = get_format(output.format_name)
        uploads.append(PlannedUpload(audio_output_key(prefix, fmt), output.path, fmt.content_type))
    if transcript is not None:
        for name, path in transcript.files.items():
            writer = WRITERS[name]
            uploads.append(
                PlannedUpload(transcript_key(prefix, writer.extension), path, writer.content_type)
            )
    return uploads


def _result(
    episode_id: str,
    prefix: str,
    audio_key: str,
    source_info: Any,
    encoded: list[EncodedOutput],
    transcript: TranscriptFiles | None,
    sizes: dict[str, int],
) -> dict[str, Any]:
    outputs: dict[str, Any] = {}
    for output in encoded:
        key = audio_output_key(prefix, get_format(output.format_name))
        outputs[output.format_name] = {
            "key": key,
            "size": sizes[key],
            "durationS": round(output.info.duration_s, 3),
            "bitrateKbps": round(output.info.bitrate_kbps) if output.info.bitrate_kbps else None,
            "codec": output.info.codec,
            "channels": output.info.channels,
            "sampleRate": output.info.sample_rate,
        }
    result: dict[str, Any] = {
        "episodeId": episode_id,
        "storage": get_store().describe(),
        "source": {
            "key": audio_key,
            "durationS": round(source_info.duration_s, 3),
            "codec": source_info.codec,
        },
        "outputs": outputs,
    }
    if transcript is not None:
        result["transcript"] = {
            "language": transcript.language,
            "segments": transcript.segments,
            "keys": {
                name: transcript_key(prefix, WRITERS[name].extension) for name in transcript.files
            },
            "firstLines": transcript.first_lines,
        }
    return result


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
