"""The `audio_processing` payload's issue-12 fields (`domain.task_types`): the canonical
form stored and compared, what payloads stored before those fields mean, and how both
become the flow's parameters."""

from __future__ import annotations

import hashlib
import json
import uuid
from typing import Any

import pytest

from core.errors import InvalidInputError
from domain.contracts import AudioProcessingParameters, LoudnessParameters
from domain.task_types import AudioProcessing
from domain.tasks import request_digest

TYPE = AudioProcessing()
TASK, WORKFLOW = str(uuid.uuid4()), str(uuid.uuid4())
#: A payload as clients sent it before issue 12, and its canonical form as stored then.
OLD_REQUEST = {"episodeId": "ep-1", "audioKey": "uploads/a/ep.mp3", "encodingFormats": ["flac"]}
OLD_CANONICAL = OLD_REQUEST | {"transcribe": True, "language": None}
DEFAULTS = {
    "loudness": {"targetLufs": -16.0, "truePeakDbtp": -1.0, "targetLufsMono": -19.0},
    "metadata": None,
    "chapters": None,
    "waveform": True,
}
FULL = OLD_REQUEST | {
    "loudness": {"targetLufs": -14, "truePeakDbtp": -2},
    "metadata": {"title": "Pilot", "date": "2026-11-29", "episodeNumber": 1, "coverKey": "c/a.png"},
    "chapters": [{"startTime": 0, "title": "Intro"}, {"startTime": 61.5, "title": "Talk"}],
    "waveform": False,
}


def test_absent_fields_are_stored_resolved() -> None:
    assert TYPE.validate(OLD_REQUEST) == OLD_CANONICAL | DEFAULTS


def test_default_loudness_is_each_payload_own() -> None:
    """The defaults' canonical form is made once; each payload gets its own copy, so one
    task's payload changed in place changes neither the next one nor what absence means."""
    first = TYPE.validate(OLD_REQUEST)
    first["loudness"]["targetLufs"] = -23.0
    assert TYPE.validate(OLD_REQUEST)["loudness"] == DEFAULTS["loudness"]
    assert TYPE.comparable(TYPE.validate(OLD_REQUEST)) == OLD_CANONICAL


def test_given_fields_are_stored_resolved_and_validate_is_idempotent() -> None:
    canonical = TYPE.validate(FULL)
    assert canonical["loudness"] == {
        "targetLufs": -14.0,
        "truePeakDbtp": -2.0,
        "targetLufsMono": -17.0,
    }
    assert canonical["metadata"] == {
        "title": "Pilot",
        "artist": None,
        "album": None,
        "date": "2026-11-29",
        "episodeNumber": 1,
        "description": None,
        "coverKey": "c/a.png",
    }
    assert canonical["chapters"] == [
        {"startTime": 0.0, "title": "Intro", "url": None, "imageKey": None},
        {"startTime": 61.5, "title": "Talk", "url": None, "imageKey": None},
    ]
    assert canonical["waveform"] is False
    # Reprocessing validates the stored payload again: it must come back unchanged.
    assert TYPE.validate(canonical) == canonical
    assert json.loads(json.dumps(canonical)) == canonical


@pytest.mark.parametrize(
    ("change", "stored"),
    [
        ({"loudness": None}, {"loudness": None}),
        # The same targets spelled differently are the same request.
        ({"loudness": {}}, {"loudness": DEFAULTS["loudness"]}),
        ({"loudness": {"targetLufsMono": -19}}, {"loudness": DEFAULTS["loudness"]}),
        # Metadata with nothing in it writes no tags, as null does.
        ({"metadata": {}}, {"metadata": None}),
        ({"metadata": {"title": None}}, {"metadata": None}),
        ({"chapters": []}, {"chapters": []}),
    ],
)
def test_equivalent_spellings_store_one_form(
    change: dict[str, Any], stored: dict[str, Any]
) -> None:
    assert TYPE.validate(OLD_REQUEST | change) == OLD_CANONICAL | DEFAULTS | stored


def test_a_digest_kept_from_before_the_fields_still_matches_the_same_request() -> None:
    """Rows keep the digest their request had when it was made (`tasks.request_digest`)."""
    kept = hashlib.sha256(
        json.dumps(
            {"type": "audio_processing", "payload": OLD_CANONICAL},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
    assert request_digest("audio_processing", TYPE.validate(OLD_REQUEST)) == kept
    assert TYPE.comparable(TYPE.validate(OLD_REQUEST)) == OLD_CANONICAL
    changes: list[dict[str, Any]] = [
        {"loudness": None},
        {"chapters": []},
        {"waveform": False},
        FULL,
    ]
    for change in changes:
        assert request_digest("audio_processing", TYPE.validate(OLD_REQUEST | change)) != kept


def test_a_payload_stored_before_the_fields_runs_with_the_defaults() -> None:
    stored = TYPE.flow_parameters(TASK, WORKFLOW, OLD_CANONICAL, 2)
    params = AudioProcessingParameters.model_validate(stored)
    assert params.loudness == LoudnessParameters()
    assert (params.metadata, params.chapters, params.waveform) == (None, None, True)


def test_the_canonical_payload_becomes_the_flows_parameters() -> None:
    stored = TYPE.flow_parameters(TASK, WORKFLOW, TYPE.validate(FULL), 1)
    params = AudioProcessingParameters.model_validate(stored)
    assert params.loudness == LoudnessParameters(
        target_lufs=-14, true_peak_dbtp=-2, target_lufs_mono=-17
    )
    assert params.metadata is not None and params.metadata.cover_key == "c/a.png"
    assert params.metadata.as_metadata().title == "Pilot"
    assert params.chapters is not None
    assert [(c.start_time, c.title) for c in params.chapters] == [(0.0, "Intro"), (61.5, "Talk")]
    assert params.waveform is False
    none = TYPE.validate(OLD_REQUEST | {"loudness": None})
    no_loudness = TYPE.flow_parameters(TASK, WORKFLOW, none, 1)
    assert AudioProcessingParameters.model_validate(no_loudness).loudness is None


def test_the_lowest_stereo_target_resolves_to_a_mono_target_the_contract_accepts() -> None:
    canonical = TYPE.validate(OLD_REQUEST | {"loudness": {"targetLufs": -40}})
    assert canonical["loudness"]["targetLufsMono"] == -43.0
    params = AudioProcessingParameters.model_validate(
        TYPE.flow_parameters(TASK, WORKFLOW, canonical, 1)
    )
    assert params.loudness is not None and params.loudness.target_lufs_mono == -43.0
    with pytest.raises(InvalidInputError, match=r"payload\.loudness\.targetLufsMono: "):
        TYPE.validate(OLD_REQUEST | {"loudness": {"targetLufsMono": -43.5}})
