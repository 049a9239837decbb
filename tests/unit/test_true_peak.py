"""The true-peak meter (media/true_peak.py) on synthetic signals, without ffmpeg.

The reference here is the plain computation it shortcuts: every sample of every channel
convolved with each of BS.1770's four interpolation branches (numpy's convolve, float64),
and the sample peak. The meter skips blocks that cannot reach the running peak and is fed
in pieces of any size; neither may change the result. Agreement with ffmpeg's own
`ebur128=peak=true` is tested in tests/audio/test_true_peak.py.
"""

from __future__ import annotations

import math
import struct

import numpy as np
import numpy.typing as npt
import pytest

from media.true_peak import GAIN_BOUND, PHASES, TruePeakMeter, WavTruePeak, true_peak


def reference(x: npt.NDArray[np.float32]) -> float:
    """Interpolate everything: the true peak by definition (zeros around the signal)."""
    frames = np.asarray(x, dtype=np.float64).reshape(len(x), -1)
    best = float(np.abs(frames).max())
    for channel in frames.T:
        for branch in PHASES:
            best = max(best, float(np.abs(np.convolve(channel, branch)).max()))
    return best


def feed_in_pieces(x: npt.NDArray[np.float32], rng: np.random.Generator) -> TruePeakMeter:
    meter = TruePeakMeter(x.shape[1])
    position = 0
    while position < len(x):
        step = int(rng.integers(1, 900))
        meter.feed(x[position : position + step])
        position += step
    meter.finish()
    return meter


def test_the_bound_is_the_largest_branch_gain() -> None:
    # BS.1770's filter: no interpolated value exceeds 2.02x (+6.1 dB) the samples under it.
    assert abs(GAIN_BOUND - 2.0232) < 1e-3
    assert np.allclose(PHASES[3], PHASES[0][::-1]) and np.allclose(PHASES[2], PHASES[1][::-1])


@pytest.mark.parametrize("seed", range(40))
def test_skipping_and_pieces_change_nothing(seed: int) -> None:
    """Quiet noise with loud bursts (most blocks skipped), fed in random pieces, equals
    interpolating every sample in one go."""
    rng = np.random.default_rng(seed)
    frames, channels = int(rng.integers(1, 6000)), int(rng.integers(1, 3))
    level = rng.choice([0.01, 0.3], size=(frames, 1))
    x = (rng.standard_normal((frames, channels)) * level).astype(np.float32)
    if frames > 10:
        x[rng.integers(0, frames)] *= 30  # a click
    meter = feed_in_pieces(x, rng)
    assert meter.peak == pytest.approx(reference(x), rel=1e-5)
    assert meter.frames == frames


def test_a_quarter_rate_sine_sampled_off_its_peaks_reads_3_db_over_its_samples() -> None:
    """The classic inter-sample peak: fs/4 at 45 degrees, every sample at 0.707."""
    n = np.arange(48000)
    x = np.sin(2 * np.pi * n / 4 + np.pi / 4).astype(np.float32)
    assert 20 * math.log10(float(np.abs(x).max())) == pytest.approx(-3.01, abs=0.01)
    assert 20 * math.log10(true_peak(x)) == pytest.approx(0.0, abs=0.2)


def test_a_low_sine_reads_its_amplitude() -> None:
    n = np.arange(44100)
    x = (0.5 * np.sin(2 * np.pi * 997 * n / 44100)).astype(np.float32)
    assert 20 * math.log10(true_peak(x)) == pytest.approx(20 * math.log10(0.5), abs=0.01)


def test_once_the_peak_is_known_only_blocks_near_it_are_interpolated() -> None:
    """The skip compares with the peak found so far: after an early loud passage, quiet
    audio is not interpolated at all."""
    rng = np.random.default_rng(3)
    x = (0.01 * rng.standard_normal((441000, 2))).astype(np.float32)
    x[1000:1100] *= 50  # 100 loud frames early in 10 s
    meter = feed_in_pieces(x, rng)
    assert meter.peak == pytest.approx(reference(x), rel=1e-5)
    assert meter.interpolated < 0.02 * meter.frames


def test_silence_has_no_peak() -> None:
    meter = TruePeakMeter(2)
    meter.feed(np.zeros((10000, 2), dtype=np.float32))
    assert meter.finish() == 0.0 and meter.dbtp == -math.inf


def test_raw_bytes_split_anywhere() -> None:
    rng = np.random.default_rng(5)
    x = (0.2 * rng.standard_normal((5000, 2))).astype(np.float32)
    data = x.astype("<f4").tobytes()
    meter = TruePeakMeter(2)
    for start in range(0, len(data), 1001):  # not a multiple of a sample or a frame
        meter.feed_f32le(data[start : start + 1001])
    assert meter.finish() == pytest.approx(reference(x), rel=1e-5)


def test_frames_of_the_wrong_width_are_refused() -> None:
    with pytest.raises(ValueError, match="2 channels"):
        TruePeakMeter(2).feed(np.zeros((10, 3), dtype=np.float32))


def wav_header(channels: int, *, tag: int = 0xFFFE, bits: int = 32, extra: bytes = b"") -> bytes:
    """A streaming WAV header as ffmpeg writes one to a pipe (sizes unknown)."""
    fmt = struct.pack("<HHIIHH", tag, channels, 44100, 44100 * channels * 4, channels * 4, bits)
    if tag == 0xFFFE:
        fmt += struct.pack("<HHI", 22, bits, 0) + struct.pack("<H", 3) + bytes(14)
    chunks = b"fmt " + struct.pack("<I", len(fmt)) + fmt + extra
    return b"RIFF\xff\xff\xff\xffWAVE" + chunks + b"data\xff\xff\xff\xff"


def test_wav_stream_header_names_the_channels() -> None:
    rng = np.random.default_rng(7)
    x = (0.3 * rng.standard_normal((3000, 2))).astype(np.float32)
    extra = b"LIST" + struct.pack("<I", 5) + b"INFOx\x00"  # odd size: padded
    stream = wav_header(2, extra=extra) + x.astype("<f4").tobytes()
    meter = WavTruePeak()
    for start in range(0, len(stream), 7):  # the header arrives in pieces too
        meter.feed(stream[start : start + 7])
    assert meter.meter is not None and meter.meter.channels == 2
    assert meter.finish() == pytest.approx(reference(x), rel=1e-5)


def test_wav_stream_plain_float_format_and_refusals() -> None:
    mono = WavTruePeak()
    mono.feed(wav_header(1, tag=3) + np.float32(0.5).tobytes())
    assert mono.finish() == pytest.approx(0.5, rel=0.05)
    assert WavTruePeak().finish() is None  # nothing arrived
    with pytest.raises(ValueError, match="not 32-bit float"):
        WavTruePeak().feed(wav_header(2, tag=1, bits=16))
    with pytest.raises(ValueError, match="not a WAV"):
        WavTruePeak().feed(b"OggS" + bytes(40))
