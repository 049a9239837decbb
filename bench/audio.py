"""Speech-like source episodes of any length, generated once and cached under `bench/out/`.

Synthesising an hour of speech with espeak-ng is slow, so one ~60 s clip of varied
sentences is spoken once, encoded as the kind of file podcasters upload (MP3, 192 kbit/s,
stereo, 44.1 kHz), and looped by *stream copy* (`-stream_loop`, `-c copy`) to the length
asked for: a 180-minute episode costs a second of disk I/O instead of minutes of encoding.
The result is real speech all the way through, so transcription does real work on every
window (a looped tone or silence would let Whisper skip or hallucinate).
"""

from __future__ import annotations

import math
import subprocess
import tempfile
from pathlib import Path

#: Where generated inputs, scratch files and raw profiles go (ignored by git).
OUT_DIR = Path(__file__).resolve().parent / "out"

#: Spoken once; about a minute at 150 words per minute with espeak-ng's sentence pauses.
SCRIPT = (
    "Welcome back to the show. This week we talk about how a small podcast grows into a "
    "daily programme, and what changes behind the microphone when it does. "
    "Our first guest runs a newsroom of twelve people. She told us that the hardest part "
    "is not recording, it is everything after: editing, encoding, publishing on time. "
    "We also look at transcripts. Listeners search them, translators start from them, and "
    "people who cannot hear the episode read them instead. "
    "Then a short history of the MP3 format, from a research lab to every phone on earth. "
    "Remember to rate the programme, send us your questions, and tell a friend about it. "
    "After the break, the numbers: how many minutes people really listen, and why the "
    "first thirty seconds decide almost everything. Stay with us."
)
CLIP_NAME = "speech-clip.mp3"


def _ffmpeg(*args: str, timeout_s: float = 600) -> None:
    subprocess.run(
        ["ffmpeg", "-nostdin", "-hide_banner", "-v", "error", "-y", *args],
        check=True,
        capture_output=True,
        timeout=timeout_s,
    )


def speech_clip(out_dir: Path = OUT_DIR) -> Path:
    """The base clip: espeak-ng speech as a 192k stereo 44.1 kHz MP3 (made once)."""
    clip = out_dir / CLIP_NAME
    if clip.exists():
        return clip
    out_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=out_dir) as tmp:
        wav = Path(tmp) / "speech.wav"
        subprocess.run(
            ["espeak-ng", "-v", "en-us", "-s", "150", "-w", str(wav), SCRIPT],
            check=True,
            capture_output=True,
            timeout=120,
        )
        part = Path(tmp) / CLIP_NAME
        _ffmpeg("-i", str(wav), "-ac", "2", "-ar", "44100", "-b:a", "192k", str(part))
        part.replace(clip)
    return clip


def duration_s(path: Path) -> float:
    """A media file's duration from its headers (ffprobe)."""
    out = subprocess.run(
        ["ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", str(path)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    ).stdout
    return float(out.strip())


def episode(minutes: float, out_dir: Path = OUT_DIR) -> Path:
    """A speech episode of `minutes` (the clip looped by stream copy), cached by length."""
    label = f"{minutes:g}".replace(".", "_")
    path = out_dir / f"episode-{label}min.mp3"
    if path.exists():
        return path
    clip = speech_clip(out_dir)
    target_s = minutes * 60
    loops = max(0, math.ceil(target_s / duration_s(clip)) - 1)
    part = path.with_name(f".{path.name}.part.mp3")
    _ffmpeg(
        "-stream_loop",
        str(loops),
        "-i",
        str(clip),
        "-t",
        f"{target_s:.3f}",
        "-c",
        "copy",
        str(part),
    )
    part.replace(path)
    return path


def cover_image(out_dir: Path = OUT_DIR) -> Path:
    """A 1400x1400 JPEG (Apple's smallest podcast artwork), for the tags of scenario 1."""
    path = out_dir / "cover-1400.jpg"
    if not path.exists():
        out_dir.mkdir(parents=True, exist_ok=True)
        part = path.with_name(f".{path.name}.part.jpg")
        _ffmpeg("-f", "lavfi", "-i", "testsrc2=size=1400x1400", "-frames:v", "1", "-q:v", "4",
                str(part))
        part.replace(path)
    return path


def short_episodes(count: int, seconds: float = 10.0, out_dir: Path = OUT_DIR) -> list[Path]:
    """`count` distinct short episodes (cached): `seconds` of the one-minute episode from a
    different offset each, re-encoded as the other sources are (192k stereo MP3) rather
    than cut by stream copy, so that no file starts on a frame that needs its predecessor."""
    base = episode(1.0, out_dir)
    room = max(0.0, 60.0 - seconds - 1.0)
    folder = out_dir / f"short-{seconds:g}s"
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in range(count):
        path = folder / f"short-{seconds:g}s-{n:04d}.mp3"
        if not path.exists():
            offset = (n * 7.3) % room if room else 0.0
            part = path.with_name(f".{path.name}.part.mp3")
            _ffmpeg("-ss", f"{offset:.3f}", "-i", str(base), "-t", f"{seconds:.3f}",
                    "-ac", "2", "-ar", "44100", "-b:a", "192k", str(part))
            part.replace(path)
        paths.append(path)
    return paths
