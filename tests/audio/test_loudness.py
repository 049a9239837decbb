"""Loudness: measured in the decode check, normalised in the encode, checked after it.

Every figure a test relies on is measured by a meter this code does not run: pyloudnorm
(an independent BS.1770-4 implementation, on the decoded output) for integrated loudness,
and ffmpeg's ebur128 filter called directly here for true peak (pyloudnorm has none).
Sources are made with lavfi:

* quiet: -35 LUFS pink noise with single-sample clicks whose peaks a plain +19 dB gain
  would clip, so the limiter path is exercised;
* loud: -8 LUFS, uncorrelated stereo pink noise pushed into clipping, whose mono downmix
  is 3 dB quieter (pink, not white: the lossy encoders' low-pass takes a loudness unit or
  more off white noise);
* clipping: a full-scale square wave, true peak above 0 dBTP.

The noise is low-passed at 10 kHz, like speech: full-band noise loses up to 0.9 LU to the
MP3 encoder's own low-pass (measured: mp3_128 came out at -16.9 LUFS), which no gain set
before the encoder can know about, and which speech, with little energy up there, does
not show.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path

import pytest

from core.formats import FORMATS, AudioFormat, get_format
from media.encode import build_command, encode
from media.loudness import (
    AS_DECODED,
    LoudnessStats,
    LoudnessTarget,
    check_loudness,
    measure_loudness,
    meter_chain,
    mix_for,
    normalisation_filter,
    normalisation_gain_db,
    output_channels,
    parse_meter_log,
)
from media.probe import BadAudioError, check_decodes, probe_source, probe_source_measured
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
ALL_MIXES = sorted({mix_for(fmt) for fmt in FORMATS.values()})

SOURCES = loudness_sources(SECONDS, RATE)
#: What the sources are meant to measure (checked independently below).
SOURCE_LOUDNESS = {"quiet": -35.0, "loud": -8.0}


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("loudness-sources")
    made = {}
    for name, args in SOURCES.items():
        path = folder / f"{name}.wav"
        ffmpeg(*args, "-c:a", "pcm_s16le", str(path))
        made[name] = path
    return made


@pytest.fixture(scope="module")
def measured(sources: dict[str, Path]) -> dict[str, dict[str, LoudnessStats]]:
    """Each source's loudness per mix, from the decode check (the code under test)."""
    return {name: dict(probe_source_measured(path, ALL_MIXES)[1]) for name, path in sources.items()}


# --- the sources are what they claim -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOURCE_LOUDNESS))
def test_sources_measure_as_intended(sources: dict[str, Path], name: str) -> None:
    assert pyloudnorm_integrated(sources[name]) == pytest.approx(SOURCE_LOUDNESS[name], abs=1.5)


def test_clipping_source_peaks_over_full_scale(sources: dict[str, Path]) -> None:
    _, peak = ebur128_direct(sources["clipping"])
    assert peak > 0.0


# --- measurement in the decode check -------------------------------------------------------


@pytest.mark.parametrize("name", sorted(SOURCES))
def test_decode_check_measurement_matches_independent_meters(
    sources: dict[str, Path], measured: dict[str, dict[str, LoudnessStats]], name: str
) -> None:
    stereo = measured[name]["mono|stereo"]
    mono = measured[name]["mono"]
    assert stereo.integrated_lufs == pytest.approx(pyloudnorm_integrated(sources[name]), abs=0.5)
    assert mono.integrated_lufs == pytest.approx(
        pyloudnorm_integrated(sources[name], mono=True), abs=0.5
    )
    _, peak = ebur128_direct(sources[name])
    assert stereo.true_peak_dbtp == pytest.approx(peak, abs=0.5)
    assert stereo.threshold_lufs == pytest.approx(stereo.integrated_lufs - 10, abs=1.0)


def test_uncorrelated_stereo_is_quieter_as_mono(
    measured: dict[str, dict[str, LoudnessStats]],
) -> None:
    """Why the decode measures each mix: the loud source's mono downmix is ~3 dB quieter,
    so a gain from the stereo figure would leave mp3_64 3 LU off target."""
    loud = measured["loud"]
    assert loud["mono|stereo"].integrated_lufs - loud["mono"].integrated_lufs == pytest.approx(
        3.0, abs=0.5
    )


def test_decode_check_unchanged_without_meters(sources: dict[str, Path]) -> None:
    plain = check_decodes(sources["loud"])
    metered = check_decodes(sources["loud"], loudness_mixes=["mono|stereo"])
    assert plain.loudness == {}
    assert metered.decoded_s == pytest.approx(plain.decoded_s, abs=0.01)
    assert metered.error_lines == plain.error_lines == 0
    assert probe_source(sources["loud"]) == probe_source_measured(sources["loud"], ["mono"])[0]


def test_decode_check_errors_unchanged_with_meters(truncated_mp3: Path, text_mp3: Path) -> None:
    with pytest.raises(BadAudioError) as plain:
        probe_source(truncated_mp3)
    with pytest.raises(BadAudioError) as metered:
        probe_source_measured(truncated_mp3, ALL_MIXES)
    assert str(metered.value) == str(plain.value)
    assert "looks truncated" in str(metered.value)
    with pytest.raises(BadAudioError) as text_plain:
        check_decodes(text_mp3)
    with pytest.raises(BadAudioError) as text_metered:
        check_decodes(text_mp3, loudness_mixes=ALL_MIXES)
    assert text_metered.type is text_plain.type
    assert str(text_metered.value) == str(text_plain.value)


def test_silence_measures_as_silence(silent_wav: Path) -> None:
    stats = check_decodes(silent_wav, loudness_mixes=[AS_DECODED]).loudness[AS_DECODED]
    assert stats.integrated_lufs == -70.0
    assert stats.true_peak_dbtp == float("-inf")
    fmt = get_format("mp3_128")
    chain = normalisation_filter(stats, fmt, source_channels=2, source_sample_rate=44100)
    assert "volume" not in chain and "loudnorm" not in chain, "silence gets no gain"


# --- normalisation: every source, every format, measured independently --------------------

Encoded = Callable[[str, str], tuple[Path, AudioFormat]]


@pytest.fixture(scope="module")
def encoded(
    sources: dict[str, Path],
    measured: dict[str, dict[str, LoudnessStats]],
    tmp_path_factory: pytest.TempPathFactory,
) -> Encoded:
    folder = tmp_path_factory.mktemp("loudness-outputs")

    def make(source: str, format_name: str) -> tuple[Path, AudioFormat]:
        fmt = get_format(format_name)
        chain = normalisation_filter(
            measured[source][mix_for(fmt)], fmt, source_channels=2, source_sample_rate=RATE
        )
        dest = folder / f"{source}-{fmt.name}.{fmt.extension}"
        encode(sources[source], dest, fmt, audio_filter=chain)
        return dest, fmt

    return make


@pytest.mark.parametrize("format_name", list(FORMATS))
@pytest.mark.parametrize("source", sorted(SOURCES))
def test_every_source_comes_out_on_target_in_every_format(
    encoded: Encoded, source: str, format_name: str
) -> None:
    path, fmt = encoded(source, format_name)
    channels = output_channels(fmt, 2)
    want = TARGET.integrated_for(channels)
    assert want == (-19.0 if channels == 1 else -16.0)

    integrated = pyloudnorm_integrated(path)
    direct_i, true_peak = ebur128_direct(path)
    assert integrated == pytest.approx(want, abs=1.0), f"pyloudnorm: {integrated:.2f} LUFS"
    assert direct_i == pytest.approx(want, abs=1.0), f"ebur128: {direct_i:.2f} LUFS"
    assert true_peak <= TARGET.true_peak_dbtp + 0.1, f"true peak {true_peak} dBTP"

    stream = ffprobe_stream(path)
    assert int(str(stream["sample_rate"])) == (fmt.sample_rate or RATE)
    assert int(str(stream["channels"])) == channels
    # The module's own post-encode check agrees.
    verdict = check_loudness(measure_loudness(path), TARGET, channels=channels)
    assert verdict.ok, verdict.message


# --- the pieces ----------------------------------------------------------------------------


def _stats(i: float, tp: float, lra: float = 3.0) -> LoudnessStats:
    return LoudnessStats(integrated_lufs=i, lra_lu=lra, true_peak_dbtp=tp, threshold_lufs=i - 10)


def test_linear_gain_when_the_peak_allows() -> None:
    chain = normalisation_filter(
        _stats(-24.0, -12.0), get_format("opus_64"), source_channels=2, source_sample_rate=44100
    )
    assert chain == (
        "aformat=sample_fmts=fltp:channel_layouts=mono|stereo,volume=8.00dB,aresample=48000"
    )


def test_gain_and_oversampled_limiter_when_gain_would_clip() -> None:
    chain = normalisation_filter(
        _stats(-35.0, -3.0), get_format("opus_64"), source_channels=2, source_sample_rate=44100
    )
    assert chain == (
        "aformat=sample_fmts=fltp:channel_layouts=mono|stereo,volume=19.00dB,aresample=192000,"
        "alimiter=limit=0.8414:attack=5:release=50:level=false,aresample=48000"
    )


def test_fast_limiter_at_the_outputs_rate_with_more_headroom() -> None:
    chain = normalisation_filter(
        _stats(-35.0, -3.0), get_format("opus_64"), source_channels=2, source_sample_rate=44100,
        oversample=False,
    )  # fmt: skip
    assert chain == (
        "aformat=sample_fmts=fltp:channel_layouts=mono|stereo,volume=19.00dB,"
        "alimiter=limit=0.7943:attack=5:release=50:level=false,aresample=48000"
    )


def test_loudnorm_when_asked_and_gain_would_clip() -> None:
    chain = normalisation_filter(
        _stats(-35.0, -3.0, lra=12.0), get_format("mp3_64"), source_channels=2,
        source_sample_rate=48000, limiter="loudnorm",
    )  # fmt: skip
    assert chain.startswith(
        "aformat=sample_fmts=fltp:channel_layouts=mono,loudnorm=I=-19.00:TP=-1.50:LRA=12.00:"
    )
    assert "measured_I=-35.00:measured_LRA=12.00:measured_TP=-3.00:measured_thresh=-45.00" in chain
    assert "offset=0.00:linear=true" in chain
    assert chain.endswith(",aresample=44100")


def test_loudnorm_values_are_clamped_to_what_ffmpeg_accepts() -> None:
    chain = normalisation_filter(
        _stats(3.0, 6.0), get_format("wav"), source_channels=1, source_sample_rate=22050,
        target=LoudnessTarget(integrated_lufs=2.0), limiter="loudnorm",
    )  # fmt: skip
    assert "measured_I=0.00" in chain and "I=-5.00" in chain
    assert chain.endswith("aresample=22050"), "lossless formats keep the source's rate"


def test_the_gain_the_flow_scales_the_waveform_by_is_the_filters() -> None:
    """`normalisation_gain_db` (what the waveform is scaled by) is the chain's `volume`,
    per format and channel count, and 0 for silence (which the chain leaves alone)."""
    for stats in (_stats(-24.0, -12.0), _stats(-35.0, -3.0), _stats(-8.0, 2.0)):
        for name in ("mp3_64", "mp3_128", "flac"):
            for channels in (1, 2):
                fmt = get_format(name)
                chain = normalisation_filter(
                    stats, fmt, source_channels=channels, source_sample_rate=44100
                )
                gain = normalisation_gain_db(stats, fmt, source_channels=channels)
                assert f"volume={gain:.2f}dB" in chain.split(","), (name, channels, chain)
    silence = _stats(-70.0, float("-inf"))
    assert normalisation_gain_db(silence, get_format("mp3_128"), source_channels=2) == 0.0
    assert "volume" not in normalisation_filter(
        silence, get_format("mp3_128"), source_channels=2, source_sample_rate=44100
    )


def test_custom_mono_target() -> None:
    target = LoudnessTarget(integrated_lufs=-14.0, mono_integrated_lufs=-16.0)
    assert target.integrated_for(1) == -16.0
    assert LoudnessTarget(integrated_lufs=-14.0).integrated_for(1) == -17.0


def test_check_loudness_names_the_figures() -> None:
    ok = check_loudness(_stats(-16.4, -1.05))
    assert ok.ok and "-16.4 LUFS" in ok.message
    loud = check_loudness(_stats(-14.2, -0.5))
    assert not loud.ok
    assert "integrated loudness -14.2 LUFS, target -16.0 LUFS" in loud.message
    assert "true peak -0.5 dBTP, limit -1.0 dBTP" in loud.message
    assert check_loudness(_stats(-19.5, -2.0), channels=1).ok
    assert not check_loudness(_stats(-16.0, -2.0), channels=1).ok


def test_meter_chain_orders_mixes_widest_first() -> None:
    chain, names = meter_chain(["mono", "mono|stereo", "mono"])
    assert chain == (
        "aformat=sample_fmts=fltp:channel_layouts=mono|stereo,"
        "ebur128@afmeter0=framelog=verbose,"
        "aformat=sample_fmts=fltp:channel_layouts=mono,"
        "ebur128@afmeter1=framelog=verbose"
    )
    assert names == {"ebur128@afmeter0": "mono|stereo", "ebur128@afmeter1": "mono"}


def test_parse_meter_log_takes_the_last_summary_of_each_meter() -> None:
    block = (
        "[ebur128@afmeter0 @ 0x55d0] Summary:\n\n  Integrated loudness:\n"
        "    I:         {i} LUFS\n    Threshold: -33.0 LUFS\n\n  Loudness range:\n"
        "    LRA:         4.2 LU\n    Threshold: -43.0 LUFS\n    LRA low:   -26.0 LUFS\n"
        "    LRA high:  -21.8 LUFS\n\n  True peak:\n    Peak:       {tp} dBFS\n"
    )
    text = (
        block.format(i="-70.0", tp="-inf")
        + "[other @ 0x1] x\n"
        + block.format(i="-23.0", tp="-2.5")
    )
    stats = parse_meter_log(text, {"ebur128@afmeter0": "mono"})
    assert stats == {"mono": LoudnessStats(-23.0, 4.2, -2.5, -33.0)}


def test_parse_meter_log_takes_the_true_peak_from_the_true_peak_meter() -> None:
    """Without `peak=true` the summary has no true peak: `media.true_peak`'s (linear)
    fills it in; a mix with neither is left out."""
    text = (
        "[ebur128@afmeter0 @ 0x55d0] Summary:\n\n  Integrated loudness:\n"
        "    I:         -23.0 LUFS\n    Threshold: -33.0 LUFS\n\n  Loudness range:\n"
        "    LRA:         4.2 LU\n    Threshold: -43.0 LUFS\n"
    )
    names = {"ebur128@afmeter0": "mono"}
    assert parse_meter_log(text, names, {"mono": 0.5}) == {
        "mono": LoudnessStats(-23.0, 4.2, 20 * math.log10(0.5), -33.0)
    }
    assert parse_meter_log(text, names, {"mono": 0.0})["mono"].true_peak_dbtp == -math.inf
    assert parse_meter_log(text, names) == {}


def test_build_command_joins_the_filter_to_the_formats_chain(tmp_path: Path) -> None:
    src, dest = tmp_path / "in.wav", tmp_path / "out.mp3"
    cmd = build_command(src, dest, get_format("mp3_128"), audio_filter="volume=-3dB")
    assert cmd.count("-af") == 1
    assert cmd[cmd.index("-af") + 1] == "volume=-3dB,aformat=channel_layouts=mono|stereo"
    mono = build_command(src, dest, get_format("mp3_64"), audio_filter="volume=-3dB")
    assert mono.count("-af") == 1 and mono[mono.index("-af") + 1] == "volume=-3dB"
    assert build_command(src, dest, get_format("mp3_64")) == build_command(
        src, dest, get_format("mp3_64"), audio_filter=None
    )
