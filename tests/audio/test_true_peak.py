"""The true peak as the flow now measures it (media/true_peak.py on the decode check's PCM)
against ffmpeg's `ebur128=peak=true` run here, and the encode step's limiter at the
output's rate with its fall-back to the oversampled one, judged by ffmpeg and pyloudnorm.

Content below a quarter of the sample rate (speech, music, the loudness tests' sources)
reads within 0.15 dB of ffmpeg. Above it ffmpeg reads high: an 11 kHz sine of amplitude
0.9 sampled 45 degrees off its peaks is -0.92 dBTP; BS.1770's filter reads -0.83, ffmpeg
-0.30. The encode step keeps an output of the fast limiter only with a margin for that
(`FAST_LIMITER_MARGIN_DB`), so ffmpeg's reading stays within the limit too.
"""

from __future__ import annotations

import logging
import math
from pathlib import Path
from typing import Any

import pytest

from core.formats import FORMATS, get_format
from flows.progress import ProgressPlan, WorkflowProgressReporter
from flows.steps.encoding import encode_format
from media.loudness import AS_DECODED, LoudnessTarget, needs_limiter
from media.probe import check_decodes, probe_source_measured
from tests.support.audio_files import ffmpeg
from tests.support.loudness_meters import (
    ebur128_direct,
    ffprobe_stream,
    loudness_sources,
    pyloudnorm_integrated,
)

SECONDS = 6
RATE = 44100
TARGET = LoudnessTarget()
MIXES = ["mono|stereo", "mono"]

#: Sources whose content is below fs/4: the meters agree.
LOW_SOURCES: dict[str, tuple[str, ...]] = {
    "sine-997": ("-f", "lavfi", "-i", f"sine=f=997:d=3:sample_rate={RATE}"),
    "pink": ("-f", "lavfi", "-i", f"anoisesrc=d=3:c=pink:r={RATE}:a=0.5:seed=1"),
    **loudness_sources(3, RATE),
}
#: fs/4 at 45 degrees: every sample at 0.9 * 0.707, the peaks between them.
QUARTER_RATE = (
    "-f",
    "lavfi",
    "-i",
    f"aevalsrc=exprs=0.9*sin(2*PI*{RATE // 4}*t+PI/4):s={RATE}:d=3",
)
#: -35 LUFS pink noise with 2 ms bursts of an fs/4 sine (0.12, 45 degrees) every 2 s: the
#: gain needs a limiter, and one at the output's rate leaves the bursts' inter-sample peaks
#: over the limit (their samples are 3 dB under them). Too little energy to move the
#: loudness, unlike the same bursts louder, which a limiter would take the loudness from.
BURSTS = (
    "-f", "lavfi", "-i", f"anoisesrc=d={SECONDS}:c=pink:r={RATE}:a=0.075:seed=5",
    "-f", "lavfi", "-i",
    f"aevalsrc=exprs=0.12*sin(2*PI*{RATE // 4}*t+PI/4)*lt(mod(t\\,2)\\,0.002):s={RATE}:d={SECONDS}",
    "-filter_complex",
    "[0:a]lowpass=f=10000[n];[n][1:a]amix=inputs=2:normalize=0,pan=stereo|c0=c0|c1=c0",
)  # fmt: skip


ANTI_PHASE = "0.5*sin(2*PI*440*t)|-0.5*sin(2*PI*440*t)"


def make(folder: Path, name: str, args: tuple[str, ...]) -> Path:
    path = folder / f"{name}.wav"
    if not path.exists():
        ffmpeg(*args, "-c:a", "pcm_f32le", str(path))
    return path


def reporter(formats: list[str]) -> WorkflowProgressReporter:
    sent: list[dict[str, Any]] = []
    return WorkflowProgressReporter("t", "w", ProgressPlan.for_run(formats, False), sent.append)


@pytest.mark.parametrize("name", sorted(LOW_SOURCES))
def test_true_peak_agrees_with_ffmpeg_below_a_quarter_of_the_rate(
    tmp_path: Path, name: str
) -> None:
    path = make(tmp_path, name, LOW_SOURCES[name])
    stats = check_decodes(path, loudness_mixes=[AS_DECODED]).loudness[AS_DECODED]
    integrated, peak = ebur128_direct(path)
    assert stats.true_peak_dbtp == pytest.approx(peak, abs=0.15)
    assert stats.integrated_lufs == pytest.approx(integrated, abs=0.05)


def test_inter_sample_peaks_at_a_quarter_of_the_rate(tmp_path: Path) -> None:
    path = make(tmp_path, "quarter-rate", QUARTER_RATE)
    stats = check_decodes(path, loudness_mixes=[AS_DECODED]).loudness[AS_DECODED]
    real = 20 * math.log10(0.9)
    assert stats.true_peak_dbtp == pytest.approx(real, abs=0.15)  # 3 dB over the samples
    _, ffmpeg_peak = ebur128_direct(path, pre="aformat=sample_fmts=flt")
    assert ffmpeg_peak >= stats.true_peak_dbtp - 0.05  # ffmpeg reads high here, never low


def test_each_mix_gets_its_own_true_peak(tmp_path: Path) -> None:
    """The mono mix's peak is the downmix's: an anti-phase stereo source cancels to
    silence as mono."""
    path = make(
        tmp_path,
        "anti-phase",
        ("-f", "lavfi", "-i", f"aevalsrc=exprs={ANTI_PHASE}:s={RATE}:d=2"),
    )  # fmt: skip
    loudness = check_decodes(path, loudness_mixes=MIXES).loudness
    assert loudness["mono|stereo"].true_peak_dbtp == pytest.approx(-6.02, abs=0.05)
    assert loudness["mono"].true_peak_dbtp < -60


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("true-peak-sources")
    made = {}
    for name, args in {**loudness_sources(SECONDS, RATE), "bursts": BURSTS}.items():
        path = folder / f"{name}.wav"
        ffmpeg(*args, "-c:a", "pcm_s16le", str(path))
        made[name] = path
    return made


@pytest.mark.parametrize("format_name", list(FORMATS))
@pytest.mark.parametrize("source", ["quiet", "loud", "clipping"])
def test_the_encode_step_comes_out_on_target_by_independent_meters(
    sources: dict[str, Path], tmp_path: Path, source: str, format_name: str
) -> None:
    """The flow's own path (limiter at the output's rate first): on target by ffmpeg's
    ebur128 and pyloudnorm, at the format's own rate."""
    info, loudness = probe_source_measured(sources[source], MIXES)
    out = encode_format.fn(
        sources[source], info, format_name, tmp_path, reporter([format_name]),
        source_loudness=loudness, target=TARGET,
    )  # fmt: skip
    fmt = get_format(format_name)
    want = TARGET.integrated_for(out.info.channels)
    integrated, peak = ebur128_direct(out.path)
    assert integrated == pytest.approx(want, abs=1.0)
    assert pyloudnorm_integrated(out.path) == pytest.approx(want, abs=1.0)
    assert peak <= TARGET.true_peak_dbtp + 0.1, f"ffmpeg reads {peak} dBTP"
    assert int(str(ffprobe_stream(out.path)["sample_rate"])) == (fmt.sample_rate or RATE)
    assert out.loudness is not None
    assert out.loudness.true_peak_dbtp == pytest.approx(peak, abs=0.6)


@pytest.mark.parametrize("format_name", ["flac", "mp3_128"])
def test_a_miss_of_the_fast_limiter_is_made_again_oversampled(
    sources: dict[str, Path], tmp_path: Path, format_name: str, caplog: pytest.LogCaptureFixture
) -> None:
    info, loudness = probe_source_measured(sources["bursts"], MIXES)
    fmt = get_format(format_name)
    assert needs_limiter(loudness[MIXES[0]], fmt, source_channels=2, target=TARGET)
    with caplog.at_level(logging.INFO, logger="flows.steps.encoding"):
        out = encode_format.fn(
            sources["bursts"], info, format_name, tmp_path, reporter([format_name]),
            source_loudness=loudness, target=TARGET,
        )  # fmt: skip
    assert "encoding again with the oversampled limiter" in caplog.text
    _, peak = ebur128_direct(out.path)
    assert peak <= TARGET.true_peak_dbtp + 0.1


def test_a_fast_limiter_output_within_the_margin_is_kept(
    sources: dict[str, Path], tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The quiet source's clicks are single samples: the limiter at the output's rate
    holds them, and no second encode is made."""
    info, loudness = probe_source_measured(sources["quiet"], MIXES)
    assert needs_limiter(loudness[MIXES[0]], get_format("flac"), source_channels=2, target=TARGET)
    with caplog.at_level(logging.INFO, logger="flows.steps.encoding"):
        encode_format.fn(
            sources["quiet"], info, "flac", tmp_path, reporter(["flac"]),
            source_loudness=loudness, target=TARGET,
        )  # fmt: skip
    assert "oversampled" not in caplog.text
