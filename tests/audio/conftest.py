"""Audio fixtures: small media files generated with ffmpeg's lavfi sources, once per run.

Nothing is downloaded or checked in: each fixture is a few seconds of synthetic audio made
on first use (a session-scoped cache), so the whole set costs about a second. Other audio
test modules add theirs here: the speech clips for transcription are at the end.

`make_audio(name, *ffmpeg_args)` makes any other file: the arguments are everything
between `ffmpeg -y` and the output path.
"""

from __future__ import annotations

import random
import shutil
import subprocess
import wave
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.support.audio_files import ffmpeg

MakeAudio = Callable[..., Path]


@pytest.fixture(scope="session")
def audio_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The folder the generated media files live in."""
    return tmp_path_factory.mktemp("audio-fixtures")


@pytest.fixture(scope="session")
def make_audio(audio_dir: Path) -> MakeAudio:
    """Generate `audio_dir/name` with ffmpeg (once per run) and return its path."""
    made: dict[str, Path] = {}

    def make(name: str, *ffmpeg_args: str) -> Path:
        if name not in made:
            path = audio_dir / name
            ffmpeg(*ffmpeg_args, str(path))
            made[name] = path
        return made[name]

    return make


def _tone(seconds: float, rate: int = 44100) -> list[str]:
    """A 440 Hz tone with a little pink noise, so encoders have real work to do."""
    return [
        "-f",
        "lavfi",
        "-i",
        f"sine=frequency=440:duration={seconds}:sample_rate={rate}",
        "-f",
        "lavfi",
        "-i",
        f"anoisesrc=duration={seconds}:color=pink:sample_rate={rate}:amplitude=0.05:seed=7",
        "-filter_complex",
        "amix=inputs=2:duration=first",
    ]


@pytest.fixture(scope="session")
def stereo_mp3(make_audio: MakeAudio) -> Path:
    """20 s, stereo, 44.1 kHz, CBR 128 kbit/s MP3: the standard source."""
    return make_audio("stereo.mp3", *_tone(20), "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k")


@pytest.fixture(scope="session")
def long_mp3(make_audio: MakeAudio) -> Path:
    """60 s stereo MP3: long enough for progress reports and for cancelling mid-encode."""
    return make_audio("long.mp3", *_tone(60), "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k")


@pytest.fixture(scope="session")
def ten_minute_mp3(make_audio: MakeAudio, long_mp3: Path) -> Path:
    """10 min: `long_mp3` looped by stream copy (cheap to make). Encoding it takes seconds
    even on a fast idle machine, so a test can always catch it mid-encode; 60 s did not
    (a first progress report at 100 % on a fast machine)."""
    return make_audio("ten-minutes.mp3", "-stream_loop", "9", "-i", str(long_mp3), "-c", "copy")


@pytest.fixture(scope="session")
def short_mp3(make_audio: MakeAudio) -> Path:
    """0.5 s stereo MP3 (shorter than one AAC/Opus look-ahead window matters)."""
    return make_audio("short.mp3", *_tone(0.5), "-ac", "2", "-c:a", "libmp3lame", "-b:a", "128k")


@pytest.fixture(scope="session")
def silent_wav(make_audio: MakeAudio) -> Path:
    """5 s of digital silence, stereo 44.1 kHz 16-bit WAV."""
    return make_audio(
        "silent.wav", "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo", "-t", "5", "-c:a",
        "pcm_s16le",
    )  # fmt: skip


@pytest.fixture(scope="session")
def mono_wav(make_audio: MakeAudio) -> Path:
    """3 s mono 48 kHz WAV."""
    return make_audio("mono.wav", *_tone(3, rate=48000), "-ac", "1", "-c:a", "pcm_s16le")


@pytest.fixture(scope="session")
def surround_flac(make_audio: MakeAudio) -> Path:
    """3 s 5.1 FLAC: more channels than any output keeps."""
    return make_audio(
        "surround.flac", "-f", "lavfi", "-i", "sine=frequency=330:duration=3",
        "-af", "pan=5.1|c0=c0|c1=c0|c2=c0|c3=c0|c4=c0|c5=c0", "-c:a", "flac",
    )  # fmt: skip


@pytest.fixture(scope="session")
def video_mp4(make_audio: MakeAudio) -> Path:
    """5 s MP4 with an H.264 video track and an AAC audio track (a video upload)."""
    return make_audio(
        "video.mp4",
        "-f", "lavfi", "-i", "testsrc=size=160x120:rate=10:duration=5",
        "-f", "lavfi", "-i", "sine=frequency=440:duration=5",
        "-c:v", "libx264", "-pix_fmt", "yuv420p", "-c:a", "aac", "-shortest",
    )  # fmt: skip


@pytest.fixture(scope="session")
def image_png(make_audio: MakeAudio) -> Path:
    """A still image: media ffprobe reads, but with no audio stream."""
    return make_audio("picture.png", "-f", "lavfi", "-i", "testsrc=size=64x64", "-frames:v", "1")


@pytest.fixture(scope="session")
def vbr_noxing_mp3(make_audio: MakeAudio) -> Path:
    """10 s VBR MP3 without a Xing header, starting with silence: ffprobe can only
    estimate its length from the first frames' bitrate, and gets it badly wrong."""
    return make_audio(
        "vbr-noxing.mp3",
        "-f", "lavfi", "-i", "anullsrc=r=44100:cl=stereo:d=3",
        "-f", "lavfi", "-i", "anoisesrc=d=7:r=44100:seed=3",
        "-filter_complex", "[0:a][1:a]concat=n=2:v=0:a=1",
        "-ac", "2", "-c:a", "libmp3lame", "-q:a", "2", "-write_xing", "0",
    )  # fmt: skip


@pytest.fixture(scope="session")
def live_mka(make_audio: MakeAudio) -> Path:
    """3 s Opus in live-mode Matroska: no duration anywhere in the headers (as browser
    MediaRecorder WebM uploads)."""
    return make_audio(
        "live.mka", "-f", "lavfi", "-i", "sine=duration=3", "-c:a", "libopus",
        "-f", "matroska", "-live", "1",
    )  # fmt: skip


@pytest.fixture(scope="session")
def truncated_mp3(stereo_mp3: Path, audio_dir: Path) -> Path:
    """The first half of the standard MP3: its Xing header still promises 20 s."""
    path = audio_dir / "truncated.mp3"
    data = stereo_mp3.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


@pytest.fixture(scope="session")
def corrupt_mp3(audio_dir: Path) -> Path:
    """200 kB of random bytes named .mp3."""
    path = audio_dir / "corrupt.mp3"
    path.write_bytes(random.Random(1234).randbytes(200_000))
    return path


@pytest.fixture(scope="session")
def text_mp3(audio_dir: Path) -> Path:
    """A text file named .mp3."""
    path = audio_dir / "notes.mp3"
    path.write_text("These are my show notes, not audio.\n" * 20)
    return path


@pytest.fixture(scope="session")
def empty_mp3(audio_dir: Path) -> Path:
    """A zero-byte .mp3."""
    path = audio_dir / "empty.mp3"
    path.write_bytes(b"")
    return path


# --- speech, for transcription tests -------------------------------------------------------
# espeak-ng reads known sentences, so a transcript can be scored against what was said (WER).
# Sentences avoid digits, which Whisper writes as numerals.

#: Sentences of the speech clips, in order.
SENTENCES = (
    "Welcome back to the show. Today we are talking about the history of timekeeping.",
    "Long before mechanical clocks, people watched the sun, the moon and the stars.",
    "Farmers used these patterns to decide when to plant and when to harvest.",
    "Sailors needed to know the exact time to find their position at sea.",
    "Thank you for listening, and we will see you next week.",
)


@dataclass(frozen=True)
class SpokenSentence:
    """A sentence of a speech clip and where it is in the clip, in seconds."""

    text: str
    start_s: float
    end_s: float


@dataclass(frozen=True)
class SpeechClip:
    """A generated speech file and what was said in it."""

    path: Path
    sentences: tuple[SpokenSentence, ...]
    duration_s: float

    @property
    def text(self) -> str:
        return " ".join(s.text for s in self.sentences)


def _speak(text: str, path: Path) -> Path:
    if shutil.which("espeak-ng") is None:
        pytest.fail("espeak-ng is required for the speech fixtures (apt-get install espeak-ng)")
    subprocess.run(
        ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(path), text],
        check=True,
        capture_output=True,
        timeout=60,
    )
    return path


def _join_with_pauses(parts: list[Path], pause_s: float, path: Path) -> list[tuple[float, float]]:
    """Concatenate WAVs with `pause_s` of silence between them; return each part's span."""
    spans: list[tuple[float, float]] = []
    with wave.open(str(parts[0])) as first:
        params = first.getparams()
    silence = b"\0" * int(pause_s * params.framerate) * params.sampwidth * params.nchannels
    position = 0
    with wave.open(str(path), "wb") as out:
        out.setparams(params)
        for index, part in enumerate(parts):
            if index:
                out.writeframes(silence)
                position += len(silence) // (params.sampwidth * params.nchannels)
            with wave.open(str(part)) as src:
                frames = src.readframes(src.getnframes())
            length = len(frames) // (params.sampwidth * params.nchannels)
            spans.append((position / params.framerate, (position + length) / params.framerate))
            out.writeframes(frames)
            position += length
    return spans


@pytest.fixture(scope="session")
def speech_clip(audio_dir: Path) -> SpeechClip:
    """About 15 s of continuous speech (three sentences) as a mono WAV."""
    chosen = (SENTENCES[0], SENTENCES[1], SENTENCES[4])
    path = _speak(" ".join(chosen), audio_dir / "speech.wav")
    with wave.open(str(path)) as clip:
        duration = clip.getnframes() / clip.getframerate()
    # One espeak run: per-sentence times are not known, so each spans the whole clip.
    return SpeechClip(path, tuple(SpokenSentence(s, 0.0, duration) for s in chosen), duration)


@pytest.fixture(scope="session")
def long_speech_clip(audio_dir: Path, make_audio: MakeAudio) -> SpeechClip:
    """About 28 s MP3: all five sentences, 1 s apart, each with its known start and end."""
    parts = [_speak(s, audio_dir / f"sentence-{i}.wav") for i, s in enumerate(SENTENCES)]
    joined = audio_dir / "long-speech.wav"
    spans = _join_with_pauses(parts, 1.0, joined)
    path = make_audio("long-speech.mp3", "-i", str(joined), "-c:a", "libmp3lame", "-b:a", "64k")
    sentences = tuple(SpokenSentence(s, a, b) for s, (a, b) in zip(SENTENCES, spans, strict=True))
    return SpeechClip(path, sentences, spans[-1][1])


@pytest.fixture(scope="session")
def quiet_noise_wav(make_audio: MakeAudio) -> Path:
    """10 s of faint pink noise (about -50 dBFS): room tone, which must not become words."""
    return make_audio(
        "quiet-noise.wav", "-f", "lavfi",
        "-i", "anoisesrc=duration=10:color=pink:sample_rate=16000:amplitude=0.003:seed=11",
        "-c:a", "pcm_s16le",
    )  # fmt: skip
