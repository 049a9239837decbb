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
        "transcript": {"keys": {"txt": "episodes/ep-1/tasks/t-1/a1/transcript/transcript.txt"}},
        "reconstructed": True,
    }
    text = task_details(_task(status="done", progress=100, result=result))
    assert "episodes/ep-1/tasks/t-1/a1/audio/flac.flac" in text and "4 KiB" in text
    assert "waveform    episodes/ep-1/tasks/t-1/a1/waveform/waveform.json" in text
    assert "txt   episodes/ep-1/tasks/t-1/a1/transcript/transcript.txt" in text
    assert "None" not in text and "LUFS" not in text and "language" not in text


def test_a_transcript_shows_its_language_probability_and_dropped_segments() -> None:
    transcript = {
        "keys": {"html": "episodes/ep-1/tasks/t-1/a1/transcript/transcript.html"},
        "language": "de",
        "languageProbability": 0.934,
        "segments": 40,
        "droppedSegments": 2,
        "firstLines": ["Hallo."],
    }
    text = task_details(_task(status="done", progress=100, result={"transcript": transcript}))
    assert "transcript  language de (93% sure), 40 segments, 2 dropped" in text
    assert "  > Hallo." in text
    english = transcript | {"language": "en", "languageProbability": None, "droppedSegments": 0}
    text = task_details(_task(status="done", progress=100, result={"transcript": english}))
    assert "transcript  language en, 40 segments\n" in text
