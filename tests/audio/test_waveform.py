"""The audiowaveform JSON for peaks.js, from PCM blocks of a decode made here with ffmpeg."""

from __future__ import annotations

import json
import math
import subprocess
from pathlib import Path

import numpy as np
import numpy.typing as npt
import pytest

from media.waveform import DEFAULT_SAMPLES_PER_PIXEL, WaveformBuilder, waveform_json

RATE = 16000


def decode_blocks(source: str, seconds: float, block: int = 4000) -> list[npt.NDArray[np.int16]]:
    """The lavfi `source` decoded to 16 kHz mono s16 PCM, cut into blocks of `block`
    samples (as a streaming decode hands them over; the last one shorter)."""
    done = subprocess.run(
        ["ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", source, "-t", str(seconds),
         "-ac", "1", "-ar", str(RATE), "-f", "s16le", "-c:a", "pcm_s16le", "-"],
        check=True, capture_output=True, timeout=60,
    )  # fmt: skip
    samples = np.frombuffer(done.stdout, dtype="<i2")
    return [samples[i : i + block] for i in range(0, samples.size, block)]


def test_format_and_length_match_the_duration() -> None:
    blocks = decode_blocks("sine=frequency=440:sample_rate=16000:duration=5", 5, block=3001)
    total = sum(b.size for b in blocks)
    wave = waveform_json(blocks, RATE)
    assert set(wave) == {
        "version", "channels", "sample_rate", "samples_per_pixel", "bits", "length", "data",
    }  # fmt: skip
    assert (wave["version"], wave["channels"], wave["bits"]) == (2, 1, 8)
    assert wave["sample_rate"] == RATE
    assert wave["samples_per_pixel"] == DEFAULT_SAMPLES_PER_PIXEL
    assert wave["length"] == pytest.approx(5 * RATE / DEFAULT_SAMPLES_PER_PIXEL, abs=1)
    assert wave["length"] == math.ceil(total / DEFAULT_SAMPLES_PER_PIXEL)
    assert len(wave["data"]) == 2 * wave["length"]
    assert all(-128 <= v <= 127 for v in wave["data"])
    assert all(lo <= hi for lo, hi in zip(wave["data"][::2], wave["data"][1::2], strict=True))
    json.dumps(wave)  # plain ints, serialisable as is
    # A 440 Hz sine at lavfi's default amplitude (1/8): every pixel spans about +-16.
    assert max(wave["data"]) == pytest.approx(16, abs=1)
    assert min(wave["data"]) == pytest.approx(-16, abs=1)


@pytest.mark.parametrize("samples_per_pixel", [64, 500, 1024])
def test_samples_per_pixel_is_a_setting(samples_per_pixel: int) -> None:
    blocks = decode_blocks("sine=sample_rate=16000:duration=6", 6, block=777)
    wave = waveform_json(blocks, RATE, samples_per_pixel)
    assert wave["samples_per_pixel"] == samples_per_pixel
    assert wave["length"] == pytest.approx(6 * RATE / samples_per_pixel, abs=1)


def test_silence_gives_zeros() -> None:
    wave = waveform_json(decode_blocks("anullsrc=r=16000:cl=mono", 5), RATE)
    assert wave["length"] == pytest.approx(5 * RATE / 256, abs=1)
    assert set(wave["data"]) == {0}


def test_full_scale_square_gives_full_scale() -> None:
    square = "aevalsrc=exprs='if(lt(mod(t*100\\,1)\\,0.5)\\,1\\,-1)':s=16000:d=5"
    wave = waveform_json(decode_blocks(square, 5), RATE)
    assert min(wave["data"][::2]) <= -127
    assert max(wave["data"][1::2]) >= 126
    # 100 Hz is 160 samples a cycle: every 256-sample pixel sees both halves.
    assert max(wave["data"][::2]) <= -126 and min(wave["data"][1::2]) >= 126


def test_block_boundaries_do_not_matter() -> None:
    samples = np.concatenate(decode_blocks("anoisesrc=r=16000:a=0.5:seed=5", 3))
    whole = waveform_json([samples], RATE, 100)
    ragged = waveform_json(np.array_split(samples, [1, 99, 100, 5000, 5001, 20000]), RATE, 100)
    assert ragged == whole


def test_float_blocks_and_stereo_blocks() -> None:
    samples = np.concatenate(decode_blocks("anoisesrc=r=16000:a=0.5:seed=6", 2))
    as_float = samples.astype(np.float32) / 32768.0
    assert waveform_json([as_float], RATE) == waveform_json([samples], RATE)
    stereo = np.stack([samples, samples], axis=1)
    assert waveform_json([stereo], RATE) == waveform_json([samples], RATE)


def test_builder_feeds_incrementally(tmp_path: Path) -> None:
    builder = WaveformBuilder(RATE, 256)
    for block in decode_blocks("sine=sample_rate=16000:duration=2", 2, block=1000):
        builder.feed(block)
    wave = builder.result()
    assert wave["length"] == math.ceil(2 * RATE / 256)
    (tmp_path / "w.json").write_text(json.dumps(wave))
    assert json.loads((tmp_path / "w.json").read_text()) == wave
    with pytest.raises(ValueError):
        WaveformBuilder(RATE, 0)
