"""The waveform taken from the source's decode check (a second output of the one ffmpeg
process), checked against an independent computation: ffmpeg decoding the source here to
16 kHz float PCM, and numpy averaging the channels and taking each pixel's min and max.
"""

from __future__ import annotations

import math
import os
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from media.loudness import mix_for
from media.probe import BadAudioError, probe_source, probe_source_measured
from media.waveform import WAVEFORM_SAMPLE_RATE, WaveformBuilder
from tests.audio.conftest import MakeAudio

SECONDS = 5
SPP = 256


@pytest.fixture(scope="module")
def distinct_stereo(make_audio: MakeAudio) -> Path:
    """5 s of 44.1 kHz stereo whose channels differ (a loud 300 Hz sine left, quieter
    pink noise right), so how the channels are combined shows in the waveform."""
    return make_audio(
        "waveform-stereo.wav",
        "-f", "lavfi", "-i", f"sine=frequency=300:sample_rate=44100:duration={SECONDS}",
        "-f", "lavfi", "-i", f"anoisesrc=d={SECONDS}:c=pink:r=44100:a=0.2:seed=11",
        "-filter_complex", "[0:a]volume=12dB[l];[l][1:a]join=inputs=2:channel_layout=stereo",
        "-c:a", "pcm_s16le",
    )  # fmt: skip


@pytest.fixture(scope="module")
def mono_mp3(make_audio: MakeAudio) -> Path:
    """6.5 s of 48 kHz mono MP3 (a decoded length that is not a whole number of pixels)."""
    return make_audio(
        "waveform-mono.mp3",
        "-f", "lavfi", "-i", "sine=frequency=500:sample_rate=48000:duration=6.5",
        "-af", "volume=6dB", "-c:a", "libmp3lame", "-b:a", "96k",
    )  # fmt: skip


def independent_mono(path: Path) -> npt.NDArray[np.float64]:
    """The source at 16 kHz as ffmpeg decodes and resamples it here, channels averaged by
    numpy (audiowaveform's mono mixdown), full scale 1.0."""
    channels = int(
        subprocess.run(
            ["ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries",
             "stream=channels", "-of", "csv=p=0", str(path)],
            check=True, capture_output=True, text=True, timeout=30,
        ).stdout.strip()
    )  # fmt: skip
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-i", str(path), "-map", "0:a:0",
         "-af", f"aresample={WAVEFORM_SAMPLE_RATE}", "-f", "f32le", "-c:a", "pcm_f32le", "-"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    samples = np.frombuffer(done.stdout, dtype="<f4").astype(np.float64)
    return samples.reshape(-1, channels).mean(axis=1)


def independent_pixels(
    mono: npt.NDArray[np.float64], gain_db: float = 0.0, ceiling: float = 1.0
) -> npt.NDArray[np.int64]:
    """audiowaveform's 8-bit (min, max) pairs of `mono`, scaled and capped like a
    published output: 16-bit value / 256, floored."""
    scaled = np.clip(mono * 10 ** (gain_db / 20) * 32768.0, -32768 * ceiling, 32767 * ceiling)
    pixels = math.ceil(scaled.size / SPP)
    padded = np.concatenate([scaled, np.full(pixels * SPP - scaled.size, np.nan)])
    frames = padded.reshape(pixels, SPP)
    pairs = np.stack([np.nanmin(frames, axis=1), np.nanmax(frames, axis=1)], axis=1)
    return (np.floor(pairs / 256)).astype(np.int64).reshape(-1)


def decode_with_waveform(path: Path, mix: str | None = None) -> tuple[float, WaveformBuilder]:
    builder = WaveformBuilder(WAVEFORM_SAMPLE_RATE, SPP)
    info, _ = probe_source_measured(path, [], waveform=builder, waveform_mix=mix)
    return info.duration_s, builder


@pytest.mark.parametrize("fixture", ["distinct_stereo", "mono_mp3"])
def test_length_matches_the_decoded_duration(fixture: str, request: pytest.FixtureRequest) -> None:
    path: Path = request.getfixturevalue(fixture)
    duration, builder = decode_with_waveform(path)
    wave = builder.result()
    assert wave["sample_rate"] == WAVEFORM_SAMPLE_RATE and wave["samples_per_pixel"] == SPP
    assert (wave["version"], wave["channels"], wave["bits"]) == (2, 1, 8)
    # One pixel per 256 samples of 16 kHz audio, the last one partial.
    assert wave["length"] == pytest.approx(duration * WAVEFORM_SAMPLE_RATE / SPP, abs=1)
    assert len(wave["data"]) == 2 * wave["length"]
    independent = independent_mono(path)
    assert wave["length"] == math.ceil(independent.size / SPP)


@pytest.mark.parametrize("fixture", ["distinct_stereo", "mono_mp3"])
def test_values_match_an_independent_computation(
    fixture: str, request: pytest.FixtureRequest
) -> None:
    path: Path = request.getfixturevalue(fixture)
    _, builder = decode_with_waveform(path)
    data = np.array(builder.result()["data"])
    expected = independent_pixels(independent_mono(path))
    assert data.shape == expected.shape
    # Rounding (float -> 16 bit) may differ by one 16-bit step, so a value may land one
    # 8-bit step off; nothing more.
    assert np.abs(data - expected).max() <= 1
    assert np.mean(data == expected) > 0.9
    assert data.max() > 20  # not trivially small: the sines reach well into the range


def test_the_gain_and_the_ceiling_apply_before_the_8_bit_values(distinct_stereo: Path) -> None:
    """What the flow does with a loudness gain: +9 dB, the peaks held at 0.7 of full scale
    (a limiter's ceiling), computed from the 16-bit extrema, not from 8-bit values."""
    _, builder = decode_with_waveform(distinct_stereo)
    data = np.array(builder.result(gain_db=9.0, ceiling=0.7)["data"])
    expected = independent_pixels(independent_mono(distinct_stereo), 9.0, 0.7)
    assert np.abs(data - expected).max() <= 1
    assert data.max() <= math.floor(0.7 * 32768 / 256)
    assert data.max() >= math.floor(0.7 * 32768 / 256) - 1  # the ceiling was reached


def test_a_mono_output_mix_is_what_the_encode_downmixes(distinct_stereo: Path) -> None:
    """For a mono output (mp3_64) the waveform is the encode's own float downmix, which
    is the channels' sum at -3 dB (ffmpeg's matrix in float): louder than their average."""
    from core.formats import get_format

    _, average = decode_with_waveform(distinct_stereo)
    _, downmix = decode_with_waveform(distinct_stereo, mix_for(get_format("mp3_64")))
    expected = independent_pixels(independent_mono(distinct_stereo), 20 * math.log10(math.sqrt(2)))
    assert np.abs(np.array(downmix.result()["data"]) - expected).max() <= 1
    assert max(downmix.result()["data"]) > max(average.result()["data"])


def test_one_decode_measures_loudness_and_feeds_the_waveform(distinct_stereo: Path) -> None:
    mixes = ["mono|stereo", "mono"]
    plain_info, plain_loudness = probe_source_measured(distinct_stereo, mixes)
    builder = WaveformBuilder(WAVEFORM_SAMPLE_RATE, SPP)
    info, loudness = probe_source_measured(distinct_stereo, mixes, waveform=builder)
    assert loudness == plain_loudness  # the side output does not disturb the meters
    assert info == plain_info == probe_source(distinct_stereo)
    assert builder.result()["length"] == math.ceil(SECONDS * WAVEFORM_SAMPLE_RATE / SPP)


def test_a_failing_builder_neither_hangs_the_decode_nor_leaks_the_pipe(
    distinct_stereo: Path,
) -> None:
    class Broken(WaveformBuilder):
        def feed_s16le(self, chunk: bytes) -> None:
            raise RuntimeError("builder broke")

    before = len(os.listdir("/proc/self/fd"))
    with pytest.raises(RuntimeError, match="builder broke"):
        probe_source_measured(distinct_stereo, ["mono"], waveform=Broken(WAVEFORM_SAMPLE_RATE))
    assert len(os.listdir("/proc/self/fd")) == before


def test_bad_sources_fail_the_same_with_a_waveform(truncated_mp3: Path, text_mp3: Path) -> None:
    for path, words in ((truncated_mp3, "looks truncated"), (text_mp3, "")):
        with pytest.raises(BadAudioError) as plain:
            probe_source(path)
        with pytest.raises(BadAudioError) as with_waveform:
            probe_source_measured(path, ["mono"], waveform=WaveformBuilder(WAVEFORM_SAMPLE_RATE))
        assert str(with_waveform.value) == str(plain.value)
        assert words in str(plain.value)
