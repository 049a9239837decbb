"""Both Whisper engines on real (synthesised) speech with the bundled tiny.en model.

Nothing is mocked: espeak-ng speaks known sentences, the engines transcribe them, and the
result is scored by word error rate. espeak's voice is robotic, so the bound is loose; on
these clips tiny.en measures about 0.05-0.10 with either engine. Word times are checked
against where each sentence was put in the clip, which the test knows from building it.
Voice activity detection is on, as by default; `tests/audio/test_words.py` compares it
with VAD off and covers noise, music and the caption files.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from pathlib import Path

import pytest

from core.settings import WhisperSettings
from tests.audio.conftest import SpeechClip
from transcription.engines import ENGINES, TranscriptionEngine, clear_engine_cache, get_engine
from transcription.errors import TranscriptionInputError
from transcription.types import Segment, Transcript
from transcription.wer import normalize, wer

#: Loose: espeak is robotic and tiny.en is the smallest model.
MAX_WER = 0.35
#: Small enough that the ~28 s clip is cut into four windows.
SMALL_WINDOW_S = 8.0
#: How far outside its sentence a word's time may be: Whisper's alignment works on 20 ms
#: frames and tends to let a sentence's last word run on into the silence after it.
WORD_SLACK_S = 0.35

ENGINE_NAMES = sorted(ENGINES)


@pytest.fixture(scope="module", autouse=True)
def whisper_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private AUDIOFLOW_HOME for converted checkpoints; engines are dropped afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("whisper-home")
        patch.setenv("AUDIOFLOW_HOME", str(home))
        clear_engine_cache()
        yield home
        clear_engine_cache()


def settings_for(engine: str, *, vad: bool = True) -> WhisperSettings:
    return WhisperSettings(engine=engine, model="tiny.en", compute_type="float32",
                           beam_size=1, threads=0, vad=vad)  # fmt: skip


@pytest.fixture(params=ENGINE_NAMES)
def engine(request: pytest.FixtureRequest) -> TranscriptionEngine:
    return get_engine(settings_for(request.param))


def assert_well_formed(transcript: Transcript, duration_s: float) -> None:
    """Segments in order, each with timed words, in order, inside it, spelling its text."""
    previous_end = 0.0
    for segment in transcript.segments:
        assert 0.0 <= segment.start <= segment.end <= duration_s + 0.01, segment
        assert segment.start >= previous_end, segment
        assert segment.text == segment.text.strip() and segment.text
        assert segment.words, segment
        assert normalize(" ".join(w.text for w in segment.words)) == normalize(segment.text)
        for word in segment.words:
            assert previous_end <= word.start <= word.end, (word, segment)
            assert segment.start <= word.start and word.end <= segment.end, (word, segment)
            assert word.probability is not None and 0.0 <= word.probability <= 1.0
            assert type(word.start) is float and type(word.end) is float  # not numpy scalars
            previous_end = word.end
        assert segment.words[0].start == segment.start and segment.words[-1].end == segment.end
        previous_end = segment.end


def test_transcribes_speech(engine: TranscriptionEngine, speech_clip: SpeechClip) -> None:
    seen: list[Segment] = []
    transcript = engine.transcribe(speech_clip.path, language=None, on_segment=seen.append)

    score = wer(speech_clip.text, transcript.text)
    print(f"{engine.name}: WER {score:.3f} :: {transcript.text}")
    assert score < MAX_WER, transcript.text
    assert transcript.language == "en"
    # tiny.en is English-only: nothing was detected, so there is no probability to report.
    assert transcript.language_probability is None
    assert transcript.dropped_segments == 0
    assert transcript.duration_s == pytest.approx(speech_clip.duration_s, abs=0.05)
    assert_well_formed(transcript, speech_clip.duration_s)
    # on_segment saw every segment, in order, as the flow's progress relies on.
    assert seen == transcript.segments and len(seen) >= 2
    ends = [s.end for s in seen]
    assert ends == sorted(ends) and ends[-1] > speech_clip.duration_s * 0.8


def test_get_engine_is_cached_and_loads_once(engine: TranscriptionEngine) -> None:
    assert get_engine(settings_for(engine.name)) is engine
    engine.load()
    model = engine.model
    engine.load()
    assert engine.model is model and model is not None and model.spec == "tiny.en"


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_long_audio_in_small_windows(name: str, long_speech_clip: SpeechClip) -> None:
    """Segments of later windows land at their episode time, and words survive the cuts."""
    engine = ENGINES[name](settings_for(name), window_s=SMALL_WINDOW_S)
    transcript = engine.transcribe(long_speech_clip.path, language="en")

    print(f"{name} windowed: {[(s.start, s.end, s.text) for s in transcript.segments]}")
    assert transcript.duration_s == pytest.approx(long_speech_clip.duration_s, abs=0.15)
    assert_well_formed(transcript, transcript.duration_s)
    assert wer(long_speech_clip.text, transcript.text) < MAX_WER, transcript.text
    assert transcript.segments[-1].end > 3 * SMALL_WINDOW_S
    # Each sentence's distinctive words are timed inside that sentence (the clip was built
    # from one espeak file per sentence, 1 s apart, so where each is is known).
    words = transcript.words
    for sentence, expected in zip(
        long_speech_clip.sentences,
        (["welcome", "show"], ["clocks", "stars"], ["farmers", "harvest"],
         ["sailors", "position"], ["listening", "week"]),
        strict=True,
    ):  # fmt: skip
        for name in expected:
            heard = [w for w in words if normalize(w.text) == [name]]
            assert heard, f"{name!r} not heard"
            assert any(
                sentence.start_s - WORD_SLACK_S <= w.start
                and w.end <= sentence.end_s + WORD_SLACK_S
                for w in heard
            ), (name, sentence, heard)


def test_silence_gives_no_segments(engine: TranscriptionEngine, silent_wav: Path) -> None:
    transcript = engine.transcribe(silent_wav, language=None)
    assert transcript.segments == []
    assert transcript.duration_s == pytest.approx(5.0, abs=0.05)
    assert transcript.language == "en"


def test_faint_noise_gives_no_segments(engine: TranscriptionEngine, quiet_noise_wav: Path) -> None:
    assert engine.transcribe(quiet_noise_wav, language="en").segments == []


def test_not_audio_is_an_input_error(engine: TranscriptionEngine, text_mp3: Path) -> None:
    with pytest.raises(TranscriptionInputError, match=r"cannot decode notes\.mp3"):
        engine.transcribe(text_mp3, language=None)
    with pytest.raises(ValueError):  # callers may catch it as a ValueError
        engine.transcribe(text_mp3.with_name("missing.mp3"), language=None)


def test_english_only_model_reports_english_whatever_is_asked(
    silent_wav: Path, caplog: pytest.LogCaptureFixture
) -> None:
    engine = get_engine(settings_for("faster-whisper"))
    with caplog.at_level(logging.WARNING):
        transcript = engine.transcribe(silent_wav, language="de")
    assert transcript.language == "en"
    assert "English-only" in caplog.text
    caplog.clear()
    with caplog.at_level(logging.WARNING):
        assert engine.transcribe(silent_wav, language="en-US").language == "en"
    assert "English-only" not in caplog.text
