"""What the audio-processing flow reports about issue 12's finishing: loudness by mix and by
output, tags, chapters and the waveform file in the result and the Prefect artifact; the
waveform scaled to the published loudness; the temp-disk estimate; the error kinds.

The audio work itself is tested with ffmpeg in tests/audio and through the stack in
tests/e2e; here the flow's own bookkeeping, on fixed figures.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from core.episode_metadata import Chapter, ChapterError, MetadataError
from core.formats import TRANSCRIPT_FORMATS
from domain.contracts import (
    AudioProcessingParameters,
    AudioProcessingResult,
    ErrorKind,
    LoudnessParameters,
)
from domain.outputs import expected_outputs
from flows.audio_processing import (
    _plan_uploads,
    _result,
    _side_files,
    loudness_target,
    mix_label,
    outputs_markdown,
    waveform_document,
)
from flows.errors import classify
from flows.steps.encoding import EncodedOutput
from flows.steps.episode import EpisodeChapters
from flows.steps.source import SourceAudio
from flows.steps.transcription import TranscriptFiles
from flows.workspace import outputs_estimate
from media.cover import CoverArtError
from media.loudness import LoudnessStats, LoudnessTarget
from media.probe import AudioInfo
from media.tags import TagReport, TagWriteError
from media.waveform import WaveformBuilder

TASK = uuid.uuid4()
SOURCE = AudioInfo(60.0, "mp3", 128.0, 2, 44100, "mp3")
QUIET = LoudnessStats(integrated_lufs=-30.0, lra_lu=4.0, true_peak_dbtp=-12.0, threshold_lufs=-40.0)
QUIET_MONO = LoudnessStats(-31.0, 4.0, -12.5, -41.0)


def params(**changes: Any) -> AudioProcessingParameters:
    fields: dict[str, Any] = {
        "task_id": TASK,
        "workflow_id": uuid.uuid4(),
        "episode_id": "ep-1",
        "audio_key": "uploads/ep-1.wav",
        "encoding_formats": ["mp3_128", "mp3_64"],
        "transcribe": False,
        "attempt": 1,
    }
    return AudioProcessingParameters(**(fields | changes))


def source_audio(tmp_path: Path, waveform: WaveformBuilder | None = None) -> SourceAudio:
    return SourceAudio(
        path=tmp_path / "source.wav",
        info=SOURCE,
        loudness={"mono|stereo": QUIET, "mono": QUIET_MONO},
        waveform=waveform,
    )


#: One second of a 16 kHz sine at about 1/16 of full scale (-24 dBFS).
SINE = (2000 * np.sin(np.arange(16000) * 2 * np.pi * 440 / 16000)).astype(np.int16)
PEAK = int(SINE.max())


def quiet_waveform() -> WaveformBuilder:
    builder = WaveformBuilder(16000, 256)
    builder.feed(SINE)
    return builder


def scaled_peak(gain_db: float) -> int:
    """The 8-bit value of the sine's peak sample after `gain_db`."""
    return int(np.floor(PEAK * 10 ** (gain_db / 20))) // 256


def test_mix_labels_name_what_the_outputs_are() -> None:
    assert mix_label("mono|stereo", 2) == "stereo"
    assert mix_label("mono|stereo", 6) == "stereo"
    assert mix_label("mono|stereo", 1) == "mono"  # a mono source's outputs stay mono
    assert mix_label("mono", 2) == "mono"


def test_loudness_parameters_become_the_target() -> None:
    assert loudness_target(None) is None
    assert loudness_target(LoudnessParameters()) == LoudnessTarget(-16.0, -1.0, None)
    target = loudness_target(LoudnessParameters(target_lufs=-14, true_peak_dbtp=-2))
    assert target is not None and target.integrated_for(1) == -17.0
    assert loudness_target(LoudnessParameters(target_lufs_mono=-20)) == LoudnessTarget(
        -16.0, -1.0, -20.0
    )


def test_the_waveform_is_scaled_to_the_published_loudness(tmp_path: Path) -> None:
    plain = quiet_waveform().result()
    assert max(plain["data"]) == PEAK // 256 == 7
    # mp3_128 (stereo) first: +14 dB (-30 -> -16), about 5x; the peaks stay far below the
    # ceiling, so nothing is capped.
    louder = waveform_document(
        source_audio(tmp_path, quiet_waveform()), "mp3_128", LoudnessTarget()
    )
    assert max(louder["data"]) == scaled_peak(14.0) == 39
    # mp3_64 first: the mono mix's gain, -31 -> -19 = +12 dB.
    mono = waveform_document(source_audio(tmp_path, quiet_waveform()), "mp3_64", LoudnessTarget())
    assert max(mono["data"]) == scaled_peak(12.0)
    # A target whose gain would push the peaks past the limiter's ceiling: capped there.
    loud = waveform_document(
        source_audio(tmp_path, quiet_waveform()), "mp3_128", LoudnessTarget(-5.0, -1.0)
    )
    assert max(loud["data"]) == int(32768 * 10 ** (-1.5 / 20)) // 256
    # Without normalisation, the source's own waveform.
    assert waveform_document(source_audio(tmp_path, quiet_waveform()), "mp3_128", None) == plain


def finished_result(tmp_path: Path) -> tuple[AudioProcessingResult, list[Any]]:
    run = params()
    expected = expected_outputs(run)
    report = TagReport("mp3_128", ("title", "cover"), 2, ("mutagen",), 0.01)
    encoded = [
        EncodedOutput(
            "mp3_128",
            tmp_path / "mp3_128.mp3",
            SOURCE,
            LoudnessStats(-16.2, 3.9, -1.4, -26.2),
            report,
        ),
        EncodedOutput(
            "mp3_64", tmp_path / "mp3_64.mp3", SOURCE, LoudnessStats(-19.1, 3.8, -1.3, -29.0)
        ),
    ]
    chapters = EpisodeChapters([Chapter(0.0, "One"), Chapter(30.0, "Two")], "source", 2)
    source = source_audio(tmp_path, quiet_waveform())
    sides = _side_files(run, expected, tmp_path, source, LoudnessTarget(), chapters)
    uploads = _plan_uploads(expected, encoded, None) + [side.upload for side in sides]
    # Every key written is one the API expects of the attempt (it checks and cleans up by them).
    assert [u.key for u in uploads] == expected.all_keys()
    sizes = {upload.key: 100 for upload in uploads}
    result = _result(
        run, expected, "s3://b", SOURCE, encoded, None, sizes,
        source_audio=source, chapters=chapters, side_files=sides,
    )  # fmt: skip
    return result, uploads


def test_the_result_carries_loudness_tags_chapters_and_waveform(tmp_path: Path) -> None:
    result, uploads = finished_result(tmp_path)
    stored = result.to_json()
    prefix = f"episodes/ep-1/tasks/{TASK}/a1/"
    assert stored["source"]["loudness"] == {
        "stereo": {"integratedLufs": -30.0, "loudnessRangeLu": 4.0, "truePeakDbtp": -12.0},
        "mono": {"integratedLufs": -31.0, "loudnessRangeLu": 4.0, "truePeakDbtp": -12.5},
    }
    assert stored["source"]["chapters"] == 2
    first = stored["outputs"]["mp3_128"]
    assert first["loudness"] == {
        "integratedLufs": -16.2,
        "loudnessRangeLu": 3.9,
        "truePeakDbtp": -1.4,
    }
    assert (first["tags"], first["chapters"]) == (["title", "cover"], 2)
    assert "tags" not in stored["outputs"]["mp3_64"]  # nothing was written into it
    assert stored["chapters"] == {
        "key": f"{prefix}chapters/chapters.json",
        "count": 2,
        "origin": "source",
    }
    assert stored["waveform"] == {
        "key": f"{prefix}waveform/waveform.json",
        "sampleRate": 16000,
        "samplesPerPixel": 256,
        "length": 63,
    }
    assert AudioProcessingResult.model_validate(stored).to_json() == stored
    by_key = {upload.key: upload for upload in uploads}
    chapters_file = by_key[f"{prefix}chapters/chapters.json"]
    assert chapters_file.content_type == "application/json+chapters"
    assert json.loads(chapters_file.path.read_text()) == {
        "version": "1.2.0",
        "chapters": [{"startTime": 0.0, "title": "One"}, {"startTime": 30.0, "title": "Two"}],
    }
    wave = json.loads(by_key[f"{prefix}waveform/waveform.json"].path.read_text())
    assert wave["length"] == 63 and len(wave["data"]) == 126


def test_no_chapters_and_no_waveform_leave_the_result_as_before(tmp_path: Path) -> None:
    run = params(waveform=False, loudness=None)
    none = EpisodeChapters([], None, None)
    plain = SourceAudio(tmp_path / "s.wav", SOURCE)
    expected = expected_outputs(run)
    assert _side_files(run, expected, tmp_path, plain, None, none) == []
    encoded = [EncodedOutput(n, tmp_path / n, SOURCE) for n in run.encoding_formats]
    sizes = {key: 1 for key in expected.audio.values()}
    stored = _result(
        run, expected, "s3://b", SOURCE, encoded, None, sizes,
        source_audio=plain, chapters=none, side_files=[],
    ).to_json()  # fmt: skip
    assert set(stored) == {"episodeId", "storage", "source", "outputs"}
    assert set(stored["source"]) == {"key", "durationS", "codec"}
    assert all("loudness" not in out and "tags" not in out for out in stored["outputs"].values())


def test_the_artifact_shows_loudness_chapters_and_waveform(tmp_path: Path) -> None:
    result, _ = finished_result(tmp_path)
    text = outputs_markdown("ep-1", result.to_json())
    assert "| mp3_128 |" in text and "| -16.2 | 3.9 | -1.4 | title, cover | 2 |" in text
    assert "**Source loudness**" in text and "| stereo | -30.0 | 4.0 | -12.0 |" in text
    assert "**Chapters**: 2 from the source" in text
    assert "**Waveform**: 63 pixels of 256 samples at 16000 Hz" in text
    out = {"key": "k.mp3", "size": 1, "durationS": 1.0, "bitrateKbps": 128, "codec": "mp3"}
    kept = outputs_markdown("ep-1", {"outputs": {"mp3_128": out}, "source": {"key": "k"}})
    assert "kept as the source's" in kept


def transcribed_result(tmp_path: Path, transcript: TranscriptFiles) -> dict[str, Any]:
    """The stored result of a run that transcribed (no encoding), as the flow builds it."""
    run = params(transcribe=True, encoding_formats=[])
    expected = expected_outputs(run)
    uploads = _plan_uploads(expected, [], transcript)
    sizes = {upload.key: 10 for upload in uploads}
    return _result(run, expected, "s3://b", SOURCE, [], transcript, sizes).to_json()


def transcript_files(tmp_path: Path, **changes: Any) -> TranscriptFiles:
    files = {name: tmp_path / f"transcript.{f.extension}" for name, f in TRANSCRIPT_FORMATS.items()}
    return TranscriptFiles("de", 12, files, ["Hallo.", "Wie geht's?"], **changes)


def test_the_result_says_how_sure_the_language_is_and_what_was_dropped(
    tmp_path: Path,
) -> None:
    stored = transcribed_result(
        tmp_path, transcript_files(tmp_path, language_probability=0.93, dropped_segments=2)
    )
    transcript = stored["transcript"]
    assert transcript["language"] == "de" and transcript["segments"] == 12
    assert transcript["languageProbability"] == 0.93
    assert transcript["droppedSegments"] == 2
    assert set(transcript["keys"]) == {"json", "vtt", "srt", "txt", "html"}
    assert transcript["keys"]["html"].endswith("/transcript.html")
    assert AudioProcessingResult.model_validate(stored).to_json() == stored
    text = outputs_markdown("ep-1", stored)
    assert "**Transcript** (de, probability 0.93, 12 segments, 2 dropped" in text
    assert f"- `{transcript['keys']['html']}`" in text


def test_an_undetected_language_has_a_null_probability(tmp_path: Path) -> None:
    """tiny.en (and a language given in the payload) detect nothing: the key is there,
    null, so a client can tell "not detected" from an older result without the field."""
    stored = transcribed_result(tmp_path, transcript_files(tmp_path))
    transcript = stored["transcript"]
    assert transcript["languageProbability"] is None
    assert transcript["droppedSegments"] == 0
    text = outputs_markdown("ep-1", stored)
    assert "**Transcript** (de, 12 segments, 0 dropped" in text
    assert "probability" not in text
    # A result stored before these fields (or rebuilt by the reconciler) still renders.
    old = {"outputs": {}, "transcript": {"keys": {"txt": "k.txt"}, "language": "en"}}
    assert "**Transcript** (en, None segments):" in outputs_markdown("ep-1", old)


def test_the_temp_disk_estimate_allows_for_the_extra_files() -> None:
    base = outputs_estimate(SOURCE, ["mp3_128", "aac_128"], False)
    with_cover = outputs_estimate(SOURCE, ["mp3_128", "aac_128"], False, cover_bytes=500_000)
    assert with_cover == base + 2 * 500_000  # the cover goes into every output
    pixels = 60 * 16000 // 256
    with_waveform = outputs_estimate(SOURCE, ["mp3_128"], False, waveform_pixels=pixels)
    assert with_waveform - outputs_estimate(SOURCE, ["mp3_128"], False) >= 2 * 5 * pixels
    # Chapters in an M4A: ffmpeg remuxes it, so a second copy exists for a moment.
    aac = outputs_estimate(SOURCE, ["aac_128"], False)
    assert outputs_estimate(SOURCE, ["aac_128"], False, chapters=3) > 2 * aac - 10_000


@pytest.mark.parametrize(
    "exc",
    [
        TagWriteError("x"),
        CoverArtError("x"),
        ChapterError("chapter 2: startTime 99 is not within the audio"),
        MetadataError("title is empty"),
    ],
)
def test_tag_cover_and_chapter_errors_are_permanent(exc: Exception) -> None:
    assert classify(exc) is ErrorKind.PERMANENT
