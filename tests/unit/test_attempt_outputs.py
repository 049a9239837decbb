"""Which files an attempt writes and which a completed run must have (`domain.outputs`),
for the chapters and waveform files of issue 12: the waveform is demanded when the task
asked for it, chapters only when the task gave them (a source may have none), and
parameters stored before either existed demand neither."""

from __future__ import annotations

import uuid
from pathlib import Path
from typing import Any

import pytest

from core.storage.local import LocalStore
from domain.contracts import AudioProcessingParameters
from domain.outputs import expected_outputs, missing_outputs, result_keys

TASK, WORKFLOW = str(uuid.uuid4()), str(uuid.uuid4())
PREFIX = f"episodes/ep-1/tasks/{TASK}/a1/"
CHAPTERS, WAVEFORM = f"{PREFIX}chapters/chapters.json", f"{PREFIX}waveform/waveform.json"
#: Parameters as a row stored before issue 12 holds them (no loudness, tags, chapters, waveform).
BEFORE: dict[str, Any] = {
    "task_id": TASK,
    "workflow_id": WORKFLOW,
    "episode_id": "ep-1",
    "audio_key": "uploads/a/ep-1.mp3",
    "encoding_formats": ["mp3_64"],
    "transcribe": False,
    "language": None,
    "attempt": 1,
}
#: The same, as a row stored now (every field written out, `stored()`).
NOW = AudioProcessingParameters.model_validate(BEFORE).stored()
GIVEN = [{"start_time": 0.0, "title": "Intro"}, {"start_time": 30.0, "title": "Talk"}]


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    return LocalStore(tmp_path / "store")


def _put(store: LocalStore, tmp_path: Path, *keys: str) -> None:
    blob = tmp_path / "blob"
    blob.write_bytes(b"x")
    for key in keys:
        store.put_file(key, blob)


@pytest.mark.parametrize(
    ("change", "chapters", "waveform", "required"),
    [
        # Defaults: the waveform is asked for; chapters come from the source, if it has any.
        ({}, CHAPTERS, WAVEFORM, {WAVEFORM}),
        ({"chapters": GIVEN}, CHAPTERS, WAVEFORM, {CHAPTERS, WAVEFORM}),
        ({"chapters": []}, None, WAVEFORM, {WAVEFORM}),
        ({"waveform": False}, CHAPTERS, None, set()),
    ],
)
def test_the_files_live_in_the_attempts_folder_and_only_some_are_demanded(
    change: dict[str, Any], chapters: str | None, waveform: str | None, required: set[str]
) -> None:
    expected = expected_outputs(NOW | change)
    assert (expected.chapters, expected.waveform) == (chapters, waveform)
    audio = f"{PREFIX}audio/mp3_64.mp3"
    assert expected.all_keys() == [audio, *(k for k in (chapters, waveform) if k)]
    assert set(expected.required_keys()) == {audio} | required


def test_parameters_from_before_the_waveform_demand_neither_file() -> None:
    """A worker of either version may have run such a run: its files may or may not exist."""
    expected = expected_outputs(BEFORE)
    assert (expected.chapters, expected.waveform) == (CHAPTERS, WAVEFORM)
    assert expected.required_keys() == [f"{PREFIX}audio/mp3_64.mp3"]
    # The layout before attempt folders never had them.
    legacy = expected_outputs(BEFORE | {"attempt": None}, legacy=True)
    assert (legacy.chapters, legacy.waveform) == (None, None)
    assert legacy.all_keys() == ["episodes/ep-1/audio/mp3_64.mp3"]


def test_a_completed_run_without_a_report_must_have_its_waveform_not_its_chapters(
    store: LocalStore, tmp_path: Path
) -> None:
    audio = f"{PREFIX}audio/mp3_64.mp3"
    _put(store, tmp_path, audio)
    assert missing_outputs(store, NOW) == [WAVEFORM]
    assert missing_outputs(store, NOW | {"waveform": False}) == []
    assert missing_outputs(store, BEFORE) == []
    _put(store, tmp_path, WAVEFORM)
    assert missing_outputs(store, NOW) == []  # no chapters file: the source had none
    # Chapters the task gave are always written, so their file is demanded.
    assert missing_outputs(store, NOW | {"chapters": GIVEN}) == [CHAPTERS]


def test_a_report_that_names_the_files_demands_them(store: LocalStore, tmp_path: Path) -> None:
    audio = f"{PREFIX}audio/mp3_64.mp3"
    result = {
        "outputs": {"mp3_64": {"key": audio}},
        "chapters": {"key": CHAPTERS, "count": 2},
        "waveform": {"key": WAVEFORM},
    }
    assert result_keys(result) == {audio, CHAPTERS, WAVEFORM}
    _put(store, tmp_path, audio, WAVEFORM)
    assert missing_outputs(store, NOW | {"waveform": False}, result) == [CHAPTERS]
    assert result_keys({"chapters": "x", "waveform": {"key": 5}}) == set()
