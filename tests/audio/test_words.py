"""Issue 13 on real engines and real audio: voice activity detection, word-timed captions.

One clip of speech with pauses of every length over faint room noise (espeak-ng sentences,
mixed with ffmpeg's pink noise) is transcribed by both engines with voice activity detection
on and off, in the same run, and scored against what was said: VAD must not cost accuracy.
The same transcripts are rendered as captions and HTML and checked with independent parsers
(regular expressions on the cue syntax, `html.parser`). Loud noise and a chord progression
must give no words at all.
"""

from __future__ import annotations

import json
import re
import wave
from collections.abc import Iterator
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest

from core.settings import CaptionSettings, WhisperSettings
from tests.audio.conftest import SENTENCES, MakeAudio, SpeechClip, SpokenSentence, _speak
from transcription.engines import ENGINES, clear_engine_cache, get_engine
from transcription.types import Transcript
from transcription.wer import normalize, word_errors
from transcription.writers import get_writer

ENGINE_NAMES = sorted(ENGINES)
#: Pauses after each sentence but the last: short ones stay inside a speech region, the
#: long ones (over the 2 s minimum silence) are cut out by VAD and must be mapped back.
PAUSES_S = (3.0, 0.7, 4.5, 2.5)
#: The room noise under the speech: pink, about -46 dBFS.
NOISE_AMPLITUDE = 0.005
#: Cues may be shorter than a second only where the speech is; none this short here.
MIN_CUE_S = 0.7
#: Word times may run this far past their sentence (20 ms alignment frames, trailing words).
WORD_SLACK_S = 0.35


@pytest.fixture(scope="module", autouse=True)
def whisper_home(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    """A private AUDIOFLOW_HOME for converted checkpoints; engines are dropped afterwards."""
    with pytest.MonkeyPatch.context() as patch:
        home = tmp_path_factory.mktemp("whisper-home-words")
        patch.setenv("AUDIOFLOW_HOME", str(home))
        clear_engine_cache()
        yield home
        clear_engine_cache()


def settings_for(engine: str, *, vad: bool) -> WhisperSettings:
    return WhisperSettings(
        engine=engine, model="tiny.en", compute_type="float32", beam_size=1, threads=0, vad=vad
    )


@pytest.fixture(scope="module")
def paused_speech(audio_dir: Path, make_audio: MakeAudio) -> SpeechClip:
    """About 38 s: the five sentences with `PAUSES_S` between them, over pink room noise."""
    parts = [_speak(s, audio_dir / f"words-sentence-{i}.wav") for i, s in enumerate(SENTENCES)]
    joined = audio_dir / "paused-speech.wav"
    spans: list[tuple[float, float]] = []
    with wave.open(str(parts[0])) as first:
        params = first.getparams()
    frame_bytes = params.sampwidth * params.nchannels
    position = 0
    with wave.open(str(joined), "wb") as out:
        out.setparams(params)
        for index, part in enumerate(parts):
            with wave.open(str(part)) as src:
                frames = src.readframes(src.getnframes())
            length = len(frames) // frame_bytes
            spans.append((position / params.framerate, (position + length) / params.framerate))
            out.writeframes(frames)
            position += length
            if index < len(PAUSES_S):
                pause = int(PAUSES_S[index] * params.framerate)
                out.writeframes(b"\0" * pause * frame_bytes)
                position += pause
    duration = position / params.framerate
    path = make_audio(
        "paused-speech.mp3",
        "-i", str(joined),
        "-f", "lavfi",
        "-i", f"anoisesrc=color=pink:amplitude={NOISE_AMPLITUDE}:seed=3:sample_rate=22050",
        "-filter_complex", "[0:a][1:a]amix=inputs=2:duration=first:normalize=0",
        "-c:a", "libmp3lame", "-b:a", "64k",
    )  # fmt: skip
    sentences = tuple(SpokenSentence(s, a, b) for s, (a, b) in zip(SENTENCES, spans, strict=True))
    return SpeechClip(path, sentences, duration)


@pytest.fixture(scope="module")
def transcripts(paused_speech: SpeechClip) -> dict[tuple[str, bool], Transcript]:
    """Each engine's transcript of the clip with VAD on and off (one run each, shared)."""
    result = {}
    for name in ENGINE_NAMES:
        for vad in (True, False):
            engine = get_engine(settings_for(name, vad=vad))
            result[name, vad] = engine.transcribe(paused_speech.path, language="en")
    return result


def test_vad_costs_no_accuracy(
    transcripts: dict[tuple[str, bool], Transcript], paused_speech: SpeechClip
) -> None:
    for name in ENGINE_NAMES:
        with_vad = word_errors(paused_speech.text, transcripts[name, True].text)
        without = word_errors(paused_speech.text, transcripts[name, False].text)
        print(f"{name}: WER with VAD {with_vad.wer:.3f}, without {without.wer:.3f}")
        print(f"  with VAD: {transcripts[name, True].text}")
        print(f"  without:  {transcripts[name, False].text}")
        assert with_vad.errors <= without.errors, (name, with_vad, without)
        assert with_vad.wer < 0.35
        # The long pauses were not decoded (less their padding); without VAD, everything was.
        long_pauses = sum(p for p in PAUSES_S if p >= 2.0)
        decoded, everything = transcripts[name, True], transcripts[name, False]
        print(f"  decoded {decoded.decoded_s:.1f} s of {everything.decoded_s:.1f} s")
        assert everything.decoded_s == pytest.approx(paused_speech.duration_s, abs=0.1)
        assert decoded.decoded_s < everything.decoded_s - long_pauses + 3 * 0.8 + 0.5


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_words_are_timed_inside_their_sentences(
    name: str, transcripts: dict[tuple[str, bool], Transcript], paused_speech: SpeechClip
) -> None:
    """With VAD the engine never saw the long pauses: times must still be the clip's."""
    transcript = transcripts[name, True]
    assert transcript.dropped_segments == 0
    previous_end = 0.0
    for segment in transcript.segments:
        assert segment.words
        for word in segment.words:
            assert previous_end <= word.start <= word.end
            assert segment.start <= word.start and word.end <= segment.end
            previous_end = word.end
    spans = [(s.start_s - WORD_SLACK_S, s.end_s + WORD_SLACK_S) for s in paused_speech.sentences]
    outside = [
        w
        for w in transcript.words
        if not any(start <= w.start and w.end <= end for start, end in spans)
    ]
    assert outside == [], outside
    # And each sentence's first word starts near where espeak started speaking it.
    for sentence in paused_speech.sentences:
        first = normalize(sentence.text)[0]
        starts = [w.start for w in transcript.words if normalize(w.text) == [first]]
        assert any(abs(start - sentence.start_s) < 0.5 for start in starts), (sentence, starts)


def cue_blocks(rendered: str, srt: bool) -> list[tuple[float, float, list[str]]]:
    """(start, end, lines) of each cue, read with the formats' own syntax."""
    stamp = r"(\d+):(\d{2}):(\d{2})[,.](\d{3})"
    result = []
    for block in rendered.strip().split("\n\n"):
        lines = block.split("\n")
        if lines[0] == "WEBVTT":
            continue
        if srt:
            assert lines.pop(0).isdigit()
        match = re.fullmatch(f"{stamp} --> {stamp}", lines[0])
        assert match, lines[0]
        h1, m1, s1, f1, h2, m2, s2, f2 = (int(g) for g in match.groups())
        start = h1 * 3600 + m1 * 60 + s1 + f1 / 1000
        end = h2 * 3600 + m2 * 60 + s2 + f2 / 1000
        result.append((start, end, lines[1:]))
    return result


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_captions_from_word_times(
    name: str, transcripts: dict[tuple[str, bool], Transcript], paused_speech: SpeechClip
) -> None:
    transcript = transcripts[name, True]
    pauses = [
        (a.end_s, b.start_s)
        for a, b in zip(paused_speech.sentences, paused_speech.sentences[1:], strict=False)
        if b.start_s - a.end_s >= 2.0
    ]
    for fmt, (max_chars, max_lines) in (("srt", (32, 2)), ("vtt", (42, 2))):
        rendered = get_writer(fmt).render(transcript, CaptionSettings())
        cues = cue_blocks(rendered, srt=fmt == "srt")
        print(f"{name} {fmt}: {[(round(a, 2), round(b, 2), lines) for a, b, lines in cues]}")
        assert cues
        previous_end = 0.0
        for start, end, lines in cues:
            assert end - start >= MIN_CUE_S, (start, end, lines)
            assert start >= previous_end
            previous_end = end
            assert 1 <= len(lines) <= max_lines
            assert all(len(line) <= max_chars for line in lines), lines
            assert len(" ".join(lines).split()) >= 2, lines  # no orphan word
            # Never on screen across a long pause (cues may linger into its first second).
            for pause_start, pause_end in pauses:
                assert not (start < pause_start and end > pause_end), (start, end, lines)
        said = " ".join(" ".join(lines) for _, _, lines in cues)
        assert normalize(said) == normalize(transcript.text)


@pytest.mark.parametrize("name", ENGINE_NAMES)
def test_json_and_html_transcripts(
    name: str, transcripts: dict[tuple[str, bool], Transcript]
) -> None:
    transcript = transcripts[name, True]
    doc = json.loads(get_writer("json").render(transcript))
    assert len(doc["segments"]) == len(transcript.segments)
    for segment in doc["segments"]:
        assert set(segment) == {"startTime", "endTime", "body", "words"}
        for word in segment["words"]:
            assert set(word) == {"startTime", "endTime", "body", "probability"}
            assert segment["startTime"] <= word["startTime"] <= word["endTime"]
            assert word["endTime"] <= segment["endTime"]

    class Checker(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.open: list[str] = []
            self.times = 0
            self.paragraphs = 0

        def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
            if tag != "meta":
                self.open.append(tag)
            self.times += tag == "time"
            self.paragraphs += tag == "p"

        def handle_endtag(self, tag: str) -> None:
            assert self.open.pop() == tag

    checker = Checker()
    checker.feed(get_writer("html").render(transcript))
    checker.close()
    assert checker.open == []
    # The long pauses start new paragraphs, each with its time.
    assert checker.paragraphs >= 3 and checker.times == checker.paragraphs


@pytest.fixture(scope="module")
def loud_noise(make_audio: MakeAudio) -> Path:
    """10 s of white noise at about -20 dBFS: hiss, not speech."""
    return make_audio(
        "loud-noise.wav", "-f", "lavfi",
        "-i", "anoisesrc=duration=10:color=white:sample_rate=16000:amplitude=0.1:seed=5",
        "-c:a", "pcm_s16le",
    )  # fmt: skip


@pytest.fixture(scope="module")
def chords(make_audio: MakeAudio) -> Path:
    """12 s of music-like sound: three-note chords of sines changing every 1.5 s, with a
    swell on each, plus their octaves."""
    chord = "+".join(
        f"sin(2*PI*if(lt(mod(t,3),1.5),{a},{b})*t)"
        for a, b in ((220.0, 196.0), (277.18, 246.94), (329.63, 293.66), (440.0, 392.0))
    )
    expression = f"0.12*(0.6+0.4*sin(2*PI*mod(t,1.5)/3))*({chord})"
    return make_audio(
        "chords.wav", "-f", "lavfi", "-i", f"aevalsrc='{expression}':s=16000:d=12",
        "-c:a", "pcm_s16le",
    )  # fmt: skip


@pytest.mark.parametrize("name", ENGINE_NAMES)
@pytest.mark.parametrize("source", ["loud_noise", "chords"])
def test_noise_and_music_give_no_words(
    name: str, source: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(source)
    with wave.open(str(path)) as clip:  # the source really is loud: not skipped as silence
        samples = np.frombuffer(clip.readframes(clip.getnframes()), dtype=np.int16)
    assert np.abs(samples).max() > 3000
    transcript = get_engine(settings_for(name, vad=True)).transcribe(path, language="en")
    assert transcript.segments == [], transcript.text
    assert transcript.words == []
    # Voice activity detection found no speech, so the model decoded nothing at all.
    assert transcript.decoded_s == 0.0
