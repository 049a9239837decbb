"""Waveform data for a web player: BBC audiowaveform's JSON format, which peaks.js reads.

The format (version 2, 8-bit, one channel)::

    {"version": 2, "channels": 1, "sample_rate": 16000, "samples_per_pixel": 256,
     "bits": 8, "length": L, "data": [min0, max0, min1, max1, ...]}

one (min, max) pair per pixel of `samples_per_pixel` samples, each in -128..127; the last
pixel covers what is left over. Values are what audiowaveform writes: 16-bit samples
divided by 256, rounded down (so full scale is -128/127).

Why from blocks: the flow already decodes the whole source once (`media.probe`'s decode
check, which also measures loudness); that same ffmpeg process writes a second output, the
audio as 16 kHz mono 16-bit PCM to a pipe (`check_decodes(waveform=...)`), and
`WaveformBuilder.feed`/`feed_s16le` take its blocks as they arrive and keep only the
pixels (each pixel's 16-bit min and max, four bytes per `samples_per_pixel` samples), never
the audio: an hour at 16 kHz with 256 samples per pixel is 225,000 pixels, 0.9 MB in
memory and about 2 MB of JSON.

Why the 8-bit values are made last (`result(gain_db=...)`): the loudness normalisation's
gain is only known once the decode that measures the source has ended, and the waveform
should show the audio as published. Scaling the 16-bit extrema before the 8-bit rounding
keeps a quiet source's waveform as fine-grained as a loud one's (scaling 8-bit values by
+19 dB would leave steps of 9).

`mono_filter(mix, channels)` is the ffmpeg chain that turns the decoded source into what a
published output of that mix is, averaged to one channel as audiowaveform does.

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

__all__ = [
    "DEFAULT_SAMPLES_PER_PIXEL",
    "WAVEFORM_SAMPLE_RATE",
    "WaveformBuilder",
    "mono_filter",
    "waveform_json",
]

#: audiowaveform's default zoom: samples per pixel at the rate of the PCM given.
DEFAULT_SAMPLES_PER_PIXEL = 256
#: The rate the flow's waveform PCM is decoded at (a web player's zoom needs no more).
WAVEFORM_SAMPLE_RATE = 16000


def mono_filter(mix: str, channels: int) -> str:
    """The ffmpeg filters turning a decoded source of `channels` channels into the mono
    signal audiowaveform would draw for a published output made from `mix` (an `aformat`
    channel_layouts value, `media.loudness.mix_for`): the output's own downmix in float
    (`media.loudness.mix_filter`, exactly what the encode applies), then, for a stereo
    result, the average of the two channels (audiowaveform's mono mixdown).
    """
    from media.loudness import mix_filter

    parts = [mix_filter(mix)]
    layouts = mix.split("|")
    if layouts == ["mono"] or (channels <= 1 and "mono" in layouts):
        return ",".join(parts)
    if layouts in (["stereo"], ["mono", "stereo"], ["stereo", "mono"]):
        parts.append("pan=mono|c0=0.5*c0+0.5*c1")
        return ",".join(parts)
    parts.append("aformat=channel_layouts=mono")  # wider mixes: ffmpeg's own downmix
    return ",".join(parts)


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
        # Per pixel its 16-bit (min, max), in blocks as they were completed.
        self._pixels: list[npt.NDArray[np.int16]] = []
        # Samples of a pixel not yet complete (fewer than samples_per_pixel).
        self._pending = np.empty(0, dtype=np.int32)
        # A byte of a 16-bit sample split between two `feed_s16le` chunks.
        self._odd_byte = b""

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

    def feed_s16le(self, chunk: bytes) -> None:
        """Add raw 16-bit little-endian mono PCM as read from a pipe: chunks may split a
        sample in two, the odd byte is kept for the next chunk."""
        if self._odd_byte:
            chunk = self._odd_byte + chunk
        whole = len(chunk) - len(chunk) % 2
        self._odd_byte = chunk[whole:]
        if whole:
            self.feed(np.frombuffer(chunk, dtype="<i2", count=whole // 2))

    def _add(self, frames: npt.NDArray[np.int32]) -> None:
        pairs = np.empty((frames.shape[0], 2), dtype=np.int16)
        pairs[:, 0] = frames.min(axis=1)
        pairs[:, 1] = frames.max(axis=1)
        self._pixels.append(pairs.reshape(-1))

    @property
    def length(self) -> int:
        """Pixels so far, counting an incomplete last one."""
        done = sum(block.size for block in self._pixels) // 2
        return done + (1 if self._pending.size else 0)

    def result(self, gain_db: float = 0.0, ceiling: float = 1.0) -> dict[str, Any]:
        """The audiowaveform JSON (as a dict) for everything fed so far; the last pixel
        holds the remainder.

        `gain_db` scales the audio before the 8-bit values are made (the loudness
        normalisation's gain, so the waveform shows the audio as published) and `ceiling`
        (linear, full scale 1.0) caps the peaks where the normaliser's limiter holds them.
        With neither, the values are exactly audiowaveform's: 16-bit value / 256, floored.
        """
        if self._pending.size:
            self._add(self._pending.reshape(1, -1))
            self._pending = np.empty(0, dtype=np.int32)
        extrema = np.concatenate(self._pixels) if self._pixels else np.empty(0, dtype=np.int16)
        values = extrema.astype(np.int32)
        if gain_db != 0.0 or ceiling < 1.0:
            top = min(1.0, max(0.0, ceiling)) * 32768.0
            scaled = np.floor(values * 10 ** (gain_db / 20))
            values = np.clip(scaled, -top, min(top, 32767.0)).astype(np.int32)
        # audiowaveform: 8-bit value = 16-bit value / 256, floored (arithmetic shift).
        data = (values >> 8).astype(np.int8)
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
