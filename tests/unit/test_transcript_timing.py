"""Word and segment times from engine output to episode time: speech regions, repairs, guard.

These run without a model: the engine's raw output is written out by hand, as both engines
give it, so that each repair in `transcription.base._place` can be shown to happen.
"""

from __future__ import annotations

import numpy as np
import pytest

from core.settings import CaptionSettings, SettingsError, WhisperSettings
from transcription.audio import SAMPLE_RATE, AudioWindow
from transcription.base import HallucinationGuard, RawSegment, RawWord, _place
from transcription.types import Segment
from transcription.vad import Region, SpeechMap, silero_model_path


def window(start_s: float, duration_s: float) -> AudioWindow:
    return AudioWindow(start_s, np.zeros(int(duration_s * SAMPLE_RATE), dtype=np.float32))


def at(seconds: float) -> int:
    return int(seconds * SAMPLE_RATE)


def test_the_silero_model_ships_inside_faster_whisper() -> None:
    path = silero_model_path()
    assert path.name == "silero_vad_v6.onnx" and path.parent.name == "assets"
    assert path.stat().st_size > 100_000


def test_speech_map_joins_regions_and_maps_times_back() -> None:
    samples = np.arange(at(10.0), dtype=np.float32)
    speech = SpeechMap(samples, [Region(at(1.0), at(2.0)), Region(at(5.0), at(7.5))])
    assert speech.speech_s == pytest.approx(3.5)
    assert np.array_equal(speech.samples[: at(1.0)], samples[at(1.0) : at(2.0)])
    assert np.array_equal(speech.samples[at(1.0) :], samples[at(5.0) : at(7.5)])
    # A word inside the second region: shifted by the 3 s of silence removed before it.
    assert speech.span_to_window(1.5, 1.9) == pytest.approx((5.5, 5.9))
    # A word straddling the join, mostly in the second region: it starts where that does.
    assert speech.span_to_window(0.9, 1.5) == pytest.approx((5.0, 5.5))
    # Mostly in the first: it ends where that does, not in the removed silence.
    assert speech.span_to_window(0.7, 1.1) == pytest.approx((1.7, 2.0))
    # Past the end of the joined audio: clamped into the last region.
    assert speech.span_to_window(3.4, 3.9) == pytest.approx((7.4, 7.5))
    # A segment without words may span regions; each end keeps its own.
    assert speech.segment_to_window(0.2, 1.0) == pytest.approx((1.2, 2.0))
    assert speech.segment_to_window(0.2, 2.0) == pytest.approx((1.2, 6.0))
    assert SpeechMap(samples, []).empty


def test_words_are_placed_in_episode_time_in_order_inside_their_segment() -> None:
    raw = RawSegment(
        0.0,
        3.0,
        " Hello there, friend.",
        (
            RawWord(0.1, 0.5, " Hello", 0.9),
            RawWord(0.45, 0.9, " there,", 0.8),  # overlaps "Hello": starts when it ends
            RawWord(1.0, 9.0, " friend.", 0.7),  # past the window's end: clamped
        ),
    )
    previous = Segment(95.0, 100.2, "Before.")
    (segment,) = _place(window(100.0, 2.0), None, raw, previous)
    assert segment.text == "Hello there, friend."
    assert [(w.start, w.end, w.text) for w in segment.words] == [
        (100.2, 100.5, "Hello"),  # not before the previous segment ended
        (100.5, 100.9, "there,"),
        (101.0, 102.0, "friend."),
    ]
    assert (segment.start, segment.end) == (100.2, 102.0)
    assert [w.probability for w in segment.words] == [0.9, 0.8, 0.7]


def test_words_come_back_from_speech_regions() -> None:
    samples = np.zeros(at(20.0), dtype=np.float32)
    speech = SpeechMap(samples, [Region(at(2.0), at(4.0)), Region(at(12.0), at(14.0))])
    raw = RawSegment(
        0.5,
        3.5,
        "one two",
        (RawWord(0.5, 1.0, " one", 0.9), RawWord(2.5, 3.0, " two", 0.9)),
    )
    # The engine heard "one two" as one segment; they were ten seconds apart: two segments.
    first, second = _place(window(60.0, 20.0), speech, raw, None)
    assert (first.text, first.start, first.end) == ("one", 62.5, 63.0)
    assert (second.text, second.start, second.end) == ("two", 72.5, 73.0)
    assert [w.text for w in first.words + second.words] == ["one", "two"]


def test_punctuation_alone_is_not_a_segment() -> None:
    assert _place(window(0.0, 5.0), None, RawSegment(0.0, 1.0, " . ."), None) == []


def test_a_segment_without_word_times_keeps_its_own() -> None:
    previous = Segment(0.0, 1.2, "Before.")
    (segment,) = _place(window(0.0, 5.0), None, RawSegment(1.0, 2.5, " After."), previous)
    assert (segment.start, segment.end, segment.text, segment.words) == (1.2, 2.5, "After.", ())


def test_guard_drops_what_failed_the_engines_thresholds_and_counts_it() -> None:
    guard = HallucinationGuard()
    good = RawSegment(0, 1, "fine", avg_logprob=-0.3, compression_ratio=1.4, no_speech_prob=0.1)
    loop = RawSegment(0, 1, "la la la", avg_logprob=-0.2, compression_ratio=3.1)
    guess = RawSegment(0, 1, "hmm", avg_logprob=-1.3, compression_ratio=1.2, no_speech_prob=0.4)
    assert [guard.keep(s) for s in (good, loop, guess, good)] == [True, False, False, True]
    assert guard.dropped == 2
    # An engine that reports no statistics has nothing to judge: kept.
    assert guard.keep(RawSegment(0, 1, "no stats"))


def test_vad_and_caption_settings_from_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "AUDIOFLOW_WHISPER_VAD",
        "AUDIOFLOW_WHISPER_VAD_THRESHOLD",
        "AUDIOFLOW_WHISPER_VAD_MIN_SILENCE_MS",
        "AUDIOFLOW_WHISPER_VAD_SPEECH_PAD_MS",
        "AUDIOFLOW_WHISPER_CONDITION_ON_PREVIOUS_TEXT",
        "AUDIOFLOW_SRT_MAX_LINE_CHARS",
        "AUDIOFLOW_SRT_MAX_LINES",
        "AUDIOFLOW_VTT_MAX_LINE_CHARS",
        "AUDIOFLOW_VTT_MAX_LINES",
    ):
        monkeypatch.delenv(name, raising=False)
    default = WhisperSettings.from_env()
    assert (default.vad, default.vad_threshold, default.vad_min_silence_ms) == (True, 0.5, 2000)
    assert default.vad_speech_pad_ms == 400
    assert default.condition_on_previous_text is False
    assert CaptionSettings.from_env() == CaptionSettings(32, 2, 42, 2)

    monkeypatch.setenv("AUDIOFLOW_WHISPER_VAD", "false")
    monkeypatch.setenv("AUDIOFLOW_WHISPER_VAD_MIN_SILENCE_MS", "500")
    monkeypatch.setenv("AUDIOFLOW_SRT_MAX_LINE_CHARS", "40")
    monkeypatch.setenv("AUDIOFLOW_VTT_MAX_LINES", "1")
    monkeypatch.setenv("AUDIOFLOW_WHISPER_CONDITION_ON_PREVIOUS_TEXT", "true")
    settings = WhisperSettings.from_env()
    assert settings.vad is False and settings.vad_min_silence_ms == 500
    assert settings.condition_on_previous_text is True
    assert CaptionSettings.from_env() == CaptionSettings(40, 2, 42, 1)

    monkeypatch.setenv("AUDIOFLOW_WHISPER_VAD_THRESHOLD", "1.5")
    with pytest.raises(SettingsError, match="AUDIOFLOW_WHISPER_VAD_THRESHOLD"):
        WhisperSettings.from_env()
    monkeypatch.setenv("AUDIOFLOW_SRT_MAX_LINE_CHARS", "3")
    with pytest.raises(SettingsError, match="AUDIOFLOW_SRT_MAX_LINE_CHARS must be at least 10"):
        CaptionSettings.from_env()
