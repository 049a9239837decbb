"""Waveform data for a web player: BBC audiowaveform's JSON format, which peaks.js reads.

The format (version 2, 8-bit, one channel)::

    {"version": 2, "channels": 1, "sample_rate": 16000, "samples_per_pixel": 256,
     "bits": 8, "length": L, "data": [min0, max0, min1, max1, ...]}

one (min, max) pair per pixel of `samples_per_pixel` samples, each in -128..127; the last
pixel covers what is left over. Values are what audiowaveform writes: 16-bit samples
divided by 256, rounded down (so full scale is -128/127).

Why from blocks: the flow already decodes the source to PCM (the transcription's 16 kHz
mono decode), so `WaveformBuilder.feed` takes that decode's blocks as they arrive and
keeps only the pixels (two bytes per `samples_per_pixel` samples), never the audio: an
hour at 16 kHz with 256 samples per pixel is 225,000 pixels, about 2 MB of JSON.

`samples_per_pixel` is counted at the rate of the PCM given, which the JSON records, so
peaks.js lines the waveform up with the audio whatever that rate is. The default, 256
(audiowaveform's own), at 16 kHz is 62.5 pixels a second: a one-hour episode is 225,000
pixels, enough for peaks.js to zoom to about 4 s across a 250-pixel view; at 44.1 kHz the
same default is 2.8x the pixels and file size for little visible gain.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import numpy.typing as npt

__all__ = ["DEFAULT_SAMPLES_PER_PIXEL", "WaveformBuilder", "waveform_json"]

#: audiowaveform's default zoom: samples per pixel at the rate of the PCM given.
DEFAULT_SAMPLES_PER_PIXEL = 256


def _as_int16(block: npt.ArrayLike) -> npt.NDArray[np.int32]:
    """A block of mono samples as 16-bit values (in int32, to shift without overflow).

    int16 is taken as is; floats are -1.0..1.0 (clipped, as a 16-bit decode would be);
    a 2-D block (samples x channels) is averaged to mono, as audiowaveform does.
    """
    array = np.asarray(block)
    if array.ndim == 2:
        array = (
            array.mean(axis=1)
            if np.issubdtype(array.dtype, np.floating)
            else (array.astype(np.int32).sum(axis=1) // array.shape[1])
        )
    elif array.ndim != 1:
        raise ValueError(f"expected a 1-D block of mono samples, got shape {array.shape}")
    if np.issubdtype(array.dtype, np.floating):
        scaled = np.clip(np.floor(array * 32768.0), -32768, 32767)
        return scaled.astype(np.int32)
    if array.dtype == np.int16 or np.issubdtype(array.dtype, np.integer):
        return np.clip(array.astype(np.int32), -32768, 32767)
    raise ValueError(f"unsupported sample type {array.dtype}")


class WaveformBuilder:
    """Collects (min, max) per pixel from blocks of PCM of any size, as they arrive."""

    def __init__(
        self, sample_rate: int, samples_per_pixel: int = DEFAULT_SAMPLES_PER_PIXEL
    ) -> None:
        if sample_rate <= 0 or samples_per_pixel <= 0:
            raise ValueError("sample_rate and samples_per_pixel must be positive")
        self.sample_rate = sample_rate
        self.samples_per_pixel = samples_per_pixel
        self._pixels: list[npt.NDArray[np.int8]] = []
        # Samples of a pixel not yet complete (fewer than samples_per_pixel).
        self._pending = np.empty(0, dtype=np.int32)

    def feed(self, block: npt.ArrayLike) -> None:
        """Add the next block of mono samples (int16, or float in -1.0..1.0)."""
        samples = _as_int16(block)
        if samples.size == 0:
            return
        if self._pending.size:
            samples = np.concatenate([self._pending, samples])
        whole = samples.size - samples.size % self.samples_per_pixel
        if whole:
            self._add(samples[:whole].reshape(-1, self.samples_per_pixel))
        self._pending = samples[whole:].copy()

    def _add(self, frames: npt.NDArray[np.int32]) -> None:
        pairs = np.empty((frames.shape[0], 2), dtype=np.int8)
        # audiowaveform: 8-bit value = 16-bit value / 256, floored (arithmetic shift).
        pairs[:, 0] = frames.min(axis=1) >> 8
        pairs[:, 1] = frames.max(axis=1) >> 8
        self._pixels.append(pairs.reshape(-1))

    def result(self) -> dict[str, Any]:
        """The audiowaveform JSON (as a dict) for everything fed so far; the last pixel
        holds the remainder."""
        if self._pending.size:
            self._add(self._pending.reshape(1, -1))
            self._pending = np.empty(0, dtype=np.int32)
        data = np.concatenate(self._pixels) if self._pixels else np.empty(0, dtype=np.int8)
        return {
            "version": 2,
            "channels": 1,
            "sample_rate": self.sample_rate,
            "samples_per_pixel": self.samples_per_pixel,
            "bits": 8,
            "length": data.size // 2,
            "data": data.astype(int).tolist(),
        }


def waveform_json(
    blocks: Iterable[npt.ArrayLike],
    sample_rate: int,
    samples_per_pixel: int = DEFAULT_SAMPLES_PER_PIXEL,
) -> dict[str, Any]:
    """The audiowaveform JSON dict for a stream of mono PCM blocks at `sample_rate`."""
    builder = WaveformBuilder(sample_rate, samples_per_pixel)
    for block in blocks:
        builder.feed(block)
    return builder.result()
