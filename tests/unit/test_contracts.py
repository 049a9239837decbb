"""The typed contracts between processes (`domain.contracts`): the audio-processing
parameters in both shapes runs and rows carry, the result, the reprocess parameters and the
error kind."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import msgspec
import pytest
from pydantic import ValidationError

from api.schemas import ProgressRequest, ReprocessRequest
from core.formats import TRANSCRIPT_FORMATS
from domain.contracts import (
    FLOW_PARAMETER,
    AudioProcessingParameters,
    AudioProcessingResult,
    ErrorKind,
    ReprocessParameters,
    problems,
)
from domain.outputs import attempt_output_keys, expected_outputs
from flows.audio_processing import _parameters, _plan_uploads, _result
from flows.errors import ProcessingError, WorkflowEndedError, classify
from flows.steps.encoding import EncodedOutput
from flows.steps.transcription import TranscriptFiles
from media.probe import AudioInfo

TASK, WORKFLOW = str(uuid.uuid4()), str(uuid.uuid4())
#: What every run and row held before the flow took one model (and what rows still hold).
FLAT: dict[str, Any] = {
    "task_id": TASK,
    "workflow_id": WORKFLOW,
    "episode_id": "ep-1",
    "audio_key": "uploads/abc/ep-1.mp3",
    "encoding_formats": ["mp3_128", "opus_64"],
    "transcribe": True,
    "language": "en",
    "attempt": 2,
}


# -- audio-processing parameters -----------------------------------------------------------


#: What the fields issue 12 added hold when a run or row does not have them.
LATER_DEFAULTS: dict[str, Any] = {
    "loudness": {"target_lufs": -16.0, "true_peak_dbtp": -1.0, "target_lufs_mono": None},
    "metadata": None,
    "waveform": True,
    "chapters": None,
}


def test_the_stored_form_is_the_flat_shape_and_round_trips() -> None:
    params = AudioProcessingParameters.model_validate(FLAT)
    # Parameters stored before loudness, tags, chapters and waveforms read as the defaults.
    assert params.stored() == FLAT | LATER_DEFAULTS
    assert params.flow_run_parameters() == {FLOW_PARAMETER: FLAT | LATER_DEFAULTS}
    assert AudioProcessingParameters.from_run_parameters(params.flow_run_parameters()) == params
    assert AudioProcessingParameters.from_run_parameters(params.stored()) == params
    assert json.loads(json.dumps(params.flow_run_parameters())) == params.flow_run_parameters()


def test_legacy_flat_runs_and_rows_read_like_new_ones() -> None:
    nested = AudioProcessingParameters.from_run_parameters({FLOW_PARAMETER: FLAT})
    flat = AudioProcessingParameters.from_run_parameters(FLAT)
    assert nested == flat
    # Runs created before the attempt number was a parameter write under w{workflow_id}.
    older = {k: v for k, v in FLAT.items() if k != "attempt"}
    old = AudioProcessingParameters.from_run_parameters(older)
    assert old.attempt is None
    assert old.prefix == f"episodes/ep-1/tasks/{TASK}/w{WORKFLOW}/"
    assert flat.prefix == f"episodes/ep-1/tasks/{TASK}/a2/"
    for shape in (FLAT, {FLOW_PARAMETER: FLAT}):
        assert AudioProcessingParameters.ids_of(shape) == (TASK, WORKFLOW)
        assert attempt_output_keys(shape) == attempt_output_keys(flat)


@pytest.mark.parametrize(
    ("change", "field", "needle"),
    [
        ({"encoding_formats": ["mp3_128", "mp3_999"]}, "encoding_formats", "mp3_999"),
        ({"encoding_formats": ["mp3_128", "mp3_128"]}, "encoding_formats", "twice"),
        ({"encoding_formats": "mp3_128"}, "encoding_formats", "list"),
        ({"episode_id": "../etc"}, "episode_id", "episode"),
        ({"audio_key": "/etc/passwd"}, "audio_key", "key"),
        ({"task_id": "by-hand"}, "task_id", "UUID"),
        ({"language": "english"}, "language", "pattern"),
        ({"attempt": 0}, "attempt", "greater than or equal to 1"),
        ({"formats": ["mp3_128"]}, "formats", "Extra inputs"),
    ],
)
def test_bad_values_are_refused_naming_the_field(
    change: dict[str, Any], field: str, needle: str
) -> None:
    with pytest.raises(ValidationError) as caught:
        AudioProcessingParameters.from_run_parameters({FLOW_PARAMETER: FLAT | change})
    text = problems(caught.value)
    assert text.startswith(f"{field}: ") and needle in text, text
    # Readers that must not fail (clean-up, output checks) see "no valid attempt" instead.
    assert AudioProcessingParameters.read(FLAT | change) is None
    assert expected_outputs(FLAT | change).all_keys() == []


def test_hooks_get_the_ids_of_runs_whose_other_parameters_are_bad() -> None:
    bad = FLAT | {"encoding_formats": 5}
    assert AudioProcessingParameters.ids_of(bad) == (TASK, WORKFLOW)
    assert AudioProcessingParameters.ids_of({FLOW_PARAMETER: bad}) == (TASK, WORKFLOW)
    assert AudioProcessingParameters.ids_of({"episode_id": "x"}) is None
    assert AudioProcessingParameters.read({}) is None


def test_the_flow_folds_flat_parameters_and_refuses_both_shapes() -> None:
    params = AudioProcessingParameters.model_validate(FLAT)
    assert _parameters(None, dict(FLAT)) == params
    assert _parameters(params, {}) is params
    with pytest.raises(ProcessingError) as both:
        _parameters(params, {"task_id": TASK})
    assert both.value.kind is ErrorKind.PERMANENT
    with pytest.raises(ProcessingError) as bad:
        _parameters(None, FLAT | {"encoding_formats": ["mp3_999"]})
    assert bad.value.kind is ErrorKind.PERMANENT and "encoding_formats: " in bad.value.reason


# -- the result, and that the API expects what the flow writes ------------------------------


def _flow_result(params: AudioProcessingParameters, tmp_path: Path) -> tuple[Any, list[Any]]:
    """What the flow's own code builds for `params` (uploads and result), on fake files."""
    expected = expected_outputs(params)
    info = AudioInfo(60.0, "mp3", 128.0, 2, 44100, "mp3")
    encoded = [
        EncodedOutput(name, tmp_path / f"{name}.out", info) for name in params.encoding_formats
    ]
    transcript = (
        TranscriptFiles(
            "en", 3, {n: tmp_path / f"t.{f.extension}" for n, f in TRANSCRIPT_FORMATS.items()}, []
        )
        if params.transcribe
        else None
    )
    uploads = _plan_uploads(expected, encoded, transcript)
    sizes = {upload.key: 1000 for upload in uploads}
    result = _result(params, expected, "s3://bucket", info, encoded, transcript, sizes)
    return result, uploads


@pytest.mark.parametrize(
    "change",
    [{}, {"transcribe": False}, {"attempt": None}, {"encoding_formats": ["flac", "aac_128"]}],
)
def test_expected_outputs_are_exactly_what_the_flow_writes(
    change: dict[str, Any], tmp_path: Path
) -> None:
    params = AudioProcessingParameters.model_validate(FLAT | change)
    result, uploads = _flow_result(params, tmp_path)
    written = [upload.key for upload in uploads]
    expected = expected_outputs(params.flow_run_parameters())
    # Audio and transcript as named by `expected`; the flow writes the chapters and waveform
    # files under `expected.chapters` and `expected.waveform` (tests/unit/test_flow_finishing).
    assert written == [*expected.audio.values(), *expected.transcript.values()]
    assert {n: o.key for n, o in result.outputs.items()} == expected.audio
    assert (result.transcript.keys if result.transcript else {}) == expected.transcript
    # The reconciler's rebuilt result keys transcripts the same way (by format name).
    if params.transcribe:
        assert set(expected.transcript) == set(TRANSCRIPT_FORMATS)
        assert set(TRANSCRIPT_FORMATS) == {"json", "vtt", "srt", "txt", "html"}


def test_the_result_round_trips_in_its_stored_form(tmp_path: Path) -> None:
    params = AudioProcessingParameters.model_validate(FLAT)
    result, _ = _flow_result(params, tmp_path)
    stored = result.to_json()
    assert stored["outputs"]["mp3_128"] == {
        "key": f"episodes/ep-1/tasks/{TASK}/a2/audio/mp3_128.mp3",
        "size": 1000,
        "durationS": 60.0,
        "bitrateKbps": 128,
        "codec": "mp3",
        "channels": 2,
        "sampleRate": 44100,
    }
    assert stored["transcript"]["keys"]["txt"].endswith("/a2/transcript/transcript.txt")
    assert stored["transcript"]["firstLines"] == []
    assert "reconstructed" not in stored  # only a rebuilt result says so
    assert AudioProcessingResult.model_validate(stored).to_json() == stored
    assert json.loads(json.dumps(stored)) == stored

    untranscribed, _ = _flow_result(params.with_overrides(transcribe=False), tmp_path)
    assert "transcript" not in untranscribed.to_json()  # absent, not null, as always


def test_results_stored_before_the_model_still_read() -> None:
    rebuilt = {
        "episodeId": "ep-1",
        "storage": "/data",
        "outputs": {"mp3_128": {"key": "episodes/ep-1/audio/mp3_128.mp3", "size": 5}},
        "transcript": {"keys": {"json": "episodes/ep-1/transcript/transcript.json"}},
        "reconstructed": True,
    }
    assert AudioProcessingResult.model_validate(rebuilt).to_json() == rebuilt
    with pytest.raises(ValidationError, match="sizeBytes"):
        AudioProcessingResult.model_validate({"outputs": {"x": {"key": "k", "sizeBytes": 1}}})


# -- error kind ----------------------------------------------------------------------------


def test_error_kind_keeps_the_stored_and_wire_strings() -> None:
    assert [k.value for k in ErrorKind] == ["transient", "permanent"]
    assert ErrorKind.TRANSIENT == "transient" and ErrorKind("permanent") is ErrorKind.PERMANENT
    assert json.dumps({"errorKind": ErrorKind.TRANSIENT}) == '{"errorKind": "transient"}'
    body = b'{"taskId": "%s", "workflowId": "%s", "errorKind": "permanent"}' % (
        TASK.encode(),
        WORKFLOW.encode(),
    )
    assert msgspec.json.decode(body, type=ProgressRequest).error_kind is ErrorKind.PERMANENT
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(body.replace(b"permanent", b"maybe"), type=ProgressRequest)


def test_classify_answers_with_the_enum() -> None:
    assert classify(ConnectionError("reset")) is ErrorKind.TRANSIENT
    assert classify(WorkflowEndedError("cancelled")) is ErrorKind.PERMANENT
    with pytest.raises(ValidationError) as bad:
        AudioProcessingParameters.model_validate({})
    assert classify(bad.value) is ErrorKind.PERMANENT  # bad parameters fail again


# -- reprocess parameters ------------------------------------------------------------------


def test_reprocess_parameters_are_one_definition_for_api_and_flow() -> None:
    api_fields = [f.name for f in msgspec.structs.fields(ReprocessRequest)]
    worker_only = {"housekeeping", "sweep_temp"}
    assert api_fields == [n for n in ReprocessParameters.model_fields if n not in worker_only]
    body = (
        b'{"taskIds": ["%s"], "addFormats": ["opus_64"], "createdAfter": "2026-01-01T00:00:00Z",'
        b' "dryRun": true, "staleAfterS": 60}' % TASK.encode()
    )
    request = msgspec.json.decode(body, type=ReprocessRequest)
    params = ReprocessParameters.model_validate(msgspec.structs.asdict(request))
    assert params.task_ids == [uuid.UUID(TASK)] and params.dry_run and params.selects_tasks()
    requested = params.requested()
    assert "housekeeping" not in requested and requested["task_ids"] == [TASK]
    # What the API starts the run with is what the flow reads back.
    assert ReprocessParameters.model_validate(requested) == params


@pytest.mark.parametrize(
    "body",
    [b'{"limit": 0}', b'{"staleAfterS": 5}', b'{"episodeIds": [""]}', b'{"sweepTemp": false}'],
)
def test_the_api_struct_enforces_the_models_bounds(body: bytes) -> None:
    with pytest.raises(msgspec.ValidationError):
        msgspec.json.decode(body, type=ReprocessRequest)


def test_unknown_formats_to_add_are_refused_naming_the_field() -> None:
    with pytest.raises(ValidationError) as caught:
        ReprocessParameters(add_formats=["mp3_999"])
    assert problems(caught.value).startswith("add_formats: unknown encoding format(s): mp3_999")
