"""The Whisper engine alone, in its own process: the transcription half of the floor.

Run as `python -m bench.transcriber AUDIO`. It imports everything first and prints
`ready`, then waits for a line on stdin before it starts the clock, so that the harness can
start it at the same instant as the encoders (the parallel floor) without counting the
interpreter's start and imports, which the floor should not include. Model loading is
counted: a flow run pays it too, and so would any one-off transcription.
Prints one JSON line: load and transcription seconds, segments, and this process's peak
RSS (its ffmpeg decoder's is not reported: a forked child's ru_maxrss includes the parent's
pages from before exec, so it would say more about Python than about ffmpeg); whether voice
activity detection was on (`AUDIOFLOW_WHISPER_VAD`, as for the flow), the seconds of audio
and of them the seconds the model decoded, and the text, for real-time factors and WER.
"""

from __future__ import annotations

import json
import resource
import sys
import time
from pathlib import Path

from core.settings import WhisperSettings
from transcription.engines import get_engine


def main(path: str) -> None:
    engine = get_engine(WhisperSettings.from_env())
    print("ready", flush=True)
    sys.stdin.readline()
    started = time.monotonic()
    engine.load()
    loaded = time.monotonic()
    transcript = engine.transcribe(Path(path), language="en")
    done = time.monotonic()
    print(
        json.dumps(
            {
                "engine": engine.name,
                "model": engine.settings.model,
                "load_s": loaded - started,
                "transcribe_s": done - loaded,
                "segments": len(transcript.segments),
                "words": len(transcript.text.split()),
                "vad": engine.settings.vad,
                "audio_s": transcript.duration_s,
                "decoded_s": transcript.decoded_s,
                "text": transcript.text,
                "maxrss_mb": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
            }
        ),
        flush=True,
    )


if __name__ == "__main__":
    main(sys.argv[1])
