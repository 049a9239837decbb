"""`audioflow status` output for a task whose flow run is not created yet, and one that has it."""

from __future__ import annotations

from typing import Any

from cli.render import task_details


def _task(**fields: Any) -> dict[str, Any]:
    return {
        "id": "t-1",
        "status": "pending",
        "progress": 0,
        "attempts": 1,
        "workflowId": "w-1",
        "workflowInstanceId": None,
        "episodeId": "ep-1",
        **fields,
    }


def test_a_task_right_after_post_says_its_run_is_being_created() -> None:
    text = task_details(_task())
    assert "its Prefect flow run is being created" in text
    assert "None" not in text


def test_a_dispatched_task_shows_its_flow_run() -> None:
    text = task_details(_task(workflowInstanceId="run-9"))
    assert "(Prefect flow run run-9)" in text


def test_a_done_task_shows_loudness_chapters_and_waveform() -> None:
    prefix = "episodes/ep-1/tasks/t-1/a1/"
    result = {
        "outputs": {
            "mp3_128": {
                "key": f"{prefix}audio/mp3_128.mp3",
                "size": 2048,
                "durationS": 61.0,
                "bitrateKbps": 128,
                "codec": "mp3",
                "channels": 2,
                "sampleRate": 44100,
                "loudness": {"integratedLufs": -16.04, "truePeakDbtp": -1.52},
            }
        },
        "chapters": {"key": f"{prefix}chapters/chapters.json", "count": 3, "origin": "payload"},
        "waveform": {"key": f"{prefix}waveform/waveform.json", "length": 3904},
    }
    text = task_details(_task(status="done", progress=100, result=result))
    assert "-16.0 LUFS, -1.5 dBTP" in text
    assert f"chapters    {prefix}chapters/chapters.json  (3 chapters, from the payload)" in text
    assert f"waveform    {prefix}waveform/waveform.json" in text


def test_a_result_rebuilt_from_the_store_shows_its_keys() -> None:
    """The reconciler's result has only keys and sizes: nothing else is made up."""
    result = {
        "outputs": {"flac": {"key": "episodes/ep-1/tasks/t-1/a1/audio/flac.flac", "size": 4096}},
        "waveform": {"key": "episodes/ep-1/tasks/t-1/a1/waveform/waveform.json"},
        "reconstructed": True,
    }
    text = task_details(_task(status="done", progress=100, result=result))
    assert "episodes/ep-1/tasks/t-1/a1/audio/flac.flac" in text and "4 KiB" in text
    assert "waveform    episodes/ep-1/tasks/t-1/a1/waveform/waveform.json" in text
    assert "None" not in text and "LUFS" not in text
