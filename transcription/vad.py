"""Voice activity detection: which parts of a window are speech, for both engines alike.

Whisper writes text for whatever it is given, so music, noise and long silences become
invented words ("Thank you.", lyrics, loops) and cost decoding time. We run the Silero VAD
model that faster-whisper ships inside its package (`faster_whisper/assets/`, run by
onnxruntime; nothing is downloaded) through faster-whisper's own `get_speech_timestamps`, and
hand the engine only the speech, joined end to end, as faster-whisper's `vad_filter` does.
Doing it here rather than through `vad_filter` gives the openai-whisper engine exactly the
same speech regions, and one place that maps times back.

`SpeechMap` joins the regions and maps times in the joined audio back to window time. A word
is mapped with the offset of the region holding its midpoint, and clamped into that region:
a word whose start fell just before a join would otherwise start inside the removed silence
(faster-whisper's `restore_speech_timestamps` maps words the same way).
"""

from __future__ import annotations

import bisect
import functools
import logging
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from core.settings import WhisperSettings
from transcription.audio import SAMPLE_RATE
from transcription.errors import ModelNotAvailableError

log = logging.getLogger(__name__)

#: The Silero model file inside faster-whisper's package (version 1.2).
SILERO_ASSET = "silero_vad_v6.onnx"


@functools.lru_cache(maxsize=1)
def silero_model_path() -> Path:
    """Where the installed faster-whisper keeps its Silero model; an error if it does not.

    Checked before the first use so that a repackaged faster-whisper without its assets is a
    clear configuration error, not an onnxruntime traceback (or, worse, no VAD at all).
    """
    import faster_whisper.utils

    path = Path(faster_whisper.utils.get_assets_path()) / SILERO_ASSET
    if not path.is_file():
        raise ModelNotAvailableError(
            f"voice activity detection needs {path}, which the installed faster-whisper does "
            "not have; reinstall faster-whisper>=1.2 or set AUDIOFLOW_WHISPER_VAD=false"
        )
    return path


@dataclass(frozen=True)
class Region:
    """A stretch of speech in a window, in samples: `[start, end)`."""

    start: int
    end: int


def speech_regions(samples: np.ndarray, settings: WhisperSettings) -> list[Region]:
    """The speech in 16 kHz mono `samples`, padded, in order and not overlapping."""
    from faster_whisper.vad import VadOptions, get_speech_timestamps

    silero_model_path()
    options = VadOptions(
        threshold=settings.vad_threshold,
        min_silence_duration_ms=settings.vad_min_silence_ms,
        speech_pad_ms=settings.vad_speech_pad_ms,
    )
    chunks = get_speech_timestamps(samples, options, sampling_rate=SAMPLE_RATE)
    regions: list[Region] = []
    for chunk in chunks:
        start = max(int(chunk["start"]), regions[-1].end if regions else 0)
        end = min(int(chunk["end"]), len(samples))
        if end > start:
            regions.append(Region(start, end))
    return regions


class SpeechMap:
    """A window's speech regions joined end to end, and the way back to window time."""

    def __init__(self, samples: np.ndarray, regions: list[Region]) -> None:
        self.regions = regions
        #: The speech alone: what the engine decodes.
        self.samples = (
            np.concatenate([samples[r.start : r.end] for r in regions])
            if regions
            else np.zeros(0, dtype=np.float32)
        )
        #: Where each region ends in the joined audio (seconds), for bisecting.
        self._joined_ends: list[float] = []
        #: Where each region starts in the joined audio (seconds).
        self._joined_starts: list[float] = []
        joined = 0
        for region in regions:
            self._joined_starts.append(joined / SAMPLE_RATE)
            joined += region.end - region.start
            self._joined_ends.append(joined / SAMPLE_RATE)

    @property
    def empty(self) -> bool:
        """No speech at all: the window need not be decoded."""
        return not self.regions

    @property
    def speech_s(self) -> float:
        """Seconds of speech kept."""
        return len(self.samples) / SAMPLE_RATE

    def region_at(self, joined_s: float) -> int:
        """Index of the region that joined time `joined_s` falls in (the last one past the
        end: engines may report times slightly past the audio they were given)."""
        index = bisect.bisect_right(self._joined_ends, joined_s)
        return min(index, len(self.regions) - 1)

    def to_window(self, joined_s: float, region: int) -> float:
        """Window time of joined time `joined_s`, counted from the start of `region` and
        clamped into it."""
        r = self.regions[region]
        offset = joined_s - self._joined_starts[region]
        length = (r.end - r.start) / SAMPLE_RATE
        return r.start / SAMPLE_RATE + min(max(offset, 0.0), length)

    def span_to_window(self, start: float, end: float) -> tuple[float, float]:
        """A word's or segment's `(start, end)` in window time, both from the region that
        holds its midpoint, so that it never stretches across removed silence."""
        region = self.region_at((start + end) / 2)
        return self.to_window(start, region), self.to_window(end, region)

    def segment_to_window(self, start: float, end: float) -> tuple[float, float]:
        """A segment without word times: each end mapped by its own region (a segment may
        span several regions; its end is looked up just before `end`, so an end exactly on
        a join stays in the region it closes)."""
        first = self.region_at(start)
        last = self.region_at(max(start, end - 1e-6))
        return self.to_window(start, first), self.to_window(end, last)
