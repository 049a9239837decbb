"""Loudness (ITU-R BS.1770 / EBU R128): measure a source, normalise an output, check it.

Why it is built this way:

* **Measured in the decode the flow already makes.** `media.probe.check_decodes` decodes
  the whole source to ffmpeg's null muxer anyway (truncation and damage check); given
  `loudness_mixes` it runs ffmpeg's `ebur128` filter in that same decode, so measuring
  costs filter CPU but no second read or decode of the audio; the true peak comes from
  `media.true_peak` on PCM that same decode writes to a pipe (ebur128's own `peak=true`
  cost more CPU than the decode). ebur128 prints its summary (integrated loudness and its
  gate threshold, loudness range) at
  ffmpeg's `info` log level, while the decode check logs at `error` level and counts those
  lines as damaged frames; so the summary goes to a separate log file through ffmpeg's
  `FFREPORT` (`level=32`, info), and stderr, error counts and messages stay as they were.
* **Measured on the mix each output gets.** An output keeps the source's channels up to
  stereo (`core.formats.KEEP_CHANNELS_UP_TO_STEREO`) or is downmixed to mono (`mp3_64`).
  A downmix changes loudness by 0 to -3 dB depending on how alike the channels are, and a
  5.1 source's loudness is not its stereo downmix's, so the decode measures each mix the
  requested formats need (`mix_for`), one `ebur128` per mix in series in the one filter
  chain (ebur128 passes audio through untouched). The encode applies the same `aformat`
  downmix (`mix_filter`, in float) before the gain (`normalisation_filter`), so what was
  measured is what is scaled.
* **Linear gain where the true peak allows, else gain and a true-peak limiter.** A plain
  `volume` keeps the dynamics exactly; it is used when the source's true peak plus the gain
  stays under the limit minus `TRUE_PEAK_MARGIN_DB`. Otherwise (`limiter="alimiter"`, the
  default) the same gain is followed by ffmpeg's look-ahead `alimiter` run at 4x the
  output rate, so that it limits the inter-sample (true) peaks a BS.1770 meter sees, not
  only the samples; it touches only the peaks, so the integrated loudness stays on
  target. The flow first runs `alimiter` at the output's own rate (`oversample=False`, a
  sixth of the CPU) and keeps that output only if its measured true peak is
  `FAST_LIMITER_MARGIN_DB` under the check's limit, else makes it again oversampled.
  The alternative `limiter="loudnorm"` is the second pass of ffmpeg's `loudnorm`
  fed the measured values with `linear=true`; but loudnorm's `linear` mode applies only
  when the peak allows a plain gain, which is the `volume` case above, and otherwise it
  falls back to its dynamic mode, an AGC with a 3 s window that missed the target by
  3.4 LU (-19.4 instead of -16 LUFS) on a 6 s quiet source here, where gain + alimiter
  landed within 0.4 LU. Both work at a higher rate (loudnorm at 192 kHz), so an
  `aresample` back to the output's own rate always ends the chain.
* **Checked with a second meter.** `measure_loudness` re-measures an encoded file with
  `ebur128` and `media.true_peak` (not the limiter or loudnorm, which set the level) and
  `check_loudness` says whether it is on
  target, like the duration check: integrated within 1 LU, true peak at most the limit +
  0.1 dB (headroom for codec overshoot).
"""

from __future__ import annotations

import math
import re
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Literal

from core.formats import KEEP_CHANNELS_UP_TO_STEREO, AudioFormat

if TYPE_CHECKING:
    from collections.abc import Iterable, Mapping

__all__ = [
    "AS_DECODED",
    "DEFAULT_TARGET",
    "FAST_LIMITER_HEADROOM_DB",
    "FAST_LIMITER_MARGIN_DB",
    "INTEGRATED_TOLERANCE_LU",
    "TRUE_PEAK_MARGIN_DB",
    "TRUE_PEAK_TOLERANCE_DB",
    "LoudnessCheck",
    "LoudnessStats",
    "LoudnessTarget",
    "check_loudness",
    "fast_limiter_holds",
    "is_silence",
    "measure_loudness",
    "meter_chain",
    "mix_filter",
    "mix_for",
    "needs_limiter",
    "normalisation_filter",
    "normalisation_gain_db",
    "output_channels",
    "parse_meter_log",
]

#: The mix key meaning "the decoded audio as it is" (no downmix): what an output is
#: measured as after encoding.
AS_DECODED = ""
#: An output on target has integrated loudness this close to the target ...
INTEGRATED_TOLERANCE_LU = 1.0
#: ... and a true peak no higher than the limit plus this (codec overshoot).
TRUE_PEAK_TOLERANCE_DB = 0.1
#: The gain stage aims this far under the true-peak limit: lossy encoders (MP3, AAC, Opus)
#: overshoot the true peak of what they were given by a few tenths of a dB.
TRUE_PEAK_MARGIN_DB = 0.5
#: An output made with the limiter at its own rate (`oversample=False`) is kept only if
#: its true peak is this much further under the check's limit; else it is made again with
#: the oversampled limiter. Why: that limiter holds samples, not inter-sample peaks, and
#: meters differ most on the high-frequency content that makes them: ffmpeg's
#: `ebur128=peak=true` reads up to 0.6 dB higher than BS.1770's own filter
#: (`media.true_peak`) at a quarter of the sample rate and above.
FAST_LIMITER_MARGIN_DB = 0.5
#: ... and that limiter's ceiling is this much under the oversampled one's, so that what it
#: leaves between the samples and the codec's overshoot fit in that margin for most audio
#: (at the oversampled ceiling, the 60-minute bench episode's mp3_320 read -1.47 dBTP,
#: 0.07 dB from a second encode).
FAST_LIMITER_HEADROOM_DB = 0.5
#: ebur128 reports -70 LUFS (its absolute gate) for silence: nothing there to normalise.
_SILENCE_LUFS = -70.0
#: Ranges ffmpeg 5.1's loudnorm accepts for its options; values are clamped into them.
_LOUDNORM_I = (-70.0, -5.0)
_LOUDNORM_LRA = (1.0, 20.0)
_LOUDNORM_TP = (-9.0, 0.0)
_LOUDNORM_MEASURED_I = (-99.0, 0.0)
_LOUDNORM_MEASURED_LRA = (0.0, 99.0)
_LOUDNORM_MEASURED_TP = (-99.0, 99.0)
_LOUDNORM_MEASURED_THRESH = (-99.0, 0.0)
#: loudnorm's target loudness range in dynamic mode: never compress below this.
_LOUDNORM_MIN_LRA = 7.0
#: The limiter runs at this multiple of the output rate: BS.1770's true peak is the peak
#: of the signal 4x oversampled.
_OVERSAMPLING = 4
#: alimiter's look-ahead (its attack) and release, ms: a broadcast limiter's usual values.
_LIMITER_ATTACK_MS = 5
_LIMITER_RELEASE_MS = 50
#: alimiter's lowest accepted limit (linear), -24 dBFS.
_ALIMITER_MIN_LIMIT = 0.0625


@dataclass(frozen=True)
class LoudnessStats:
    """One measurement of a programme (BS.1770-4 as ffmpeg's ebur128 filter makes it)."""

    #: Integrated (programme) loudness, LUFS; -70.0 for silence.
    integrated_lufs: float
    #: Loudness range (EBU Tech 3342), LU.
    lra_lu: float
    #: Maximum true peak over all channels, dBTP (4x oversampled); -inf for silence.
    true_peak_dbtp: float
    #: The relative gate threshold of the integrated measurement, LUFS: loudnorm's
    #: `measured_thresh`.
    threshold_lufs: float

    def as_dict(self) -> dict[str, float | None]:
        """JSON-ready figures (camelCase like the API; -inf as None), for results."""

        def finite(value: float) -> float | None:
            return round(value, 2) if math.isfinite(value) else None

        return {
            "integratedLufs": finite(self.integrated_lufs),
            "loudnessRangeLu": finite(self.lra_lu),
            "truePeakDbtp": finite(self.true_peak_dbtp),
            "thresholdLufs": finite(self.threshold_lufs),
        }


@dataclass(frozen=True)
class LoudnessTarget:
    """What an output should measure: the podcast norm (Apple, Spotify, AES TD1008) by
    default, -16 LUFS for stereo and 3 LU less for mono (a mono file plays on both
    speakers, so it sounds as loud at -19), true peak at most -1 dBTP."""

    integrated_lufs: float = -16.0
    true_peak_dbtp: float = -1.0
    #: None: `integrated_lufs - 3`.
    mono_integrated_lufs: float | None = None

    def integrated_for(self, channels: int) -> float:
        """The integrated target for an output with `channels` channels."""
        if channels == 1:
            if self.mono_integrated_lufs is not None:
                return self.mono_integrated_lufs
            return self.integrated_lufs - 3.0
        return self.integrated_lufs


DEFAULT_TARGET = LoudnessTarget()


@dataclass(frozen=True)
class LoudnessCheck:
    """The verdict on one output: `ok`, and a message naming the figures either way."""

    ok: bool
    message: str
    #: Whether the true peak was within the limit (a miss there, and only there, is what
    #: the oversampled limiter can fix).
    peak_ok: bool = True


def mix_for(fmt: AudioFormat) -> str:
    """The channel mix `fmt` is encoded from, as an `aformat` channel_layouts value: the
    key under which the decode check measures it (`check_decodes(loudness_mixes=...)`)."""
    if fmt.channels is None:
        return KEEP_CHANNELS_UP_TO_STEREO.rpartition("channel_layouts=")[2]
    if fmt.channels == 1:
        return "mono"
    if fmt.channels == 2:
        return "stereo"
    return f"{fmt.channels}c"


def output_channels(fmt: AudioFormat, source_channels: int) -> int:
    """How many channels an output of `fmt` has (as `verify_output` checks it)."""
    return fmt.channels if fmt.channels is not None else min(max(source_channels, 1), 2)


def mix_filter(mix: str) -> str:
    """The downmix to `mix`, in float.

    The sample format is pinned because swresample scales a downmix matrix down to avoid
    clipping when it works in 16-bit but not in float: left unpinned, a stereo-to-mono
    downmix is 3 dB louder in a float chain (the meter's) than in an s16 one (an encode
    that negotiated s16), and the gain measured on one would be wrong for the other.
    """
    return f"aformat=sample_fmts=fltp:channel_layouts={mix}"


def _filter_name(index: int) -> str:
    return f"ebur128@afmeter{index}"


def meter_chain(mixes: Iterable[str]) -> tuple[str, dict[str, str]]:
    """The `-af` chain that measures each mix in one pass, and filter instance name -> mix.

    The meters run in series: each `aformat` downmixes what the previous meter passed on,
    so mixes go from the widest to the narrowest (mono last). `AS_DECODED` measures the
    audio as decoded and must come alone or first.
    """
    ordered = sorted(dict.fromkeys(mixes), key=lambda mix: (mix != AS_DECODED, mix == "mono"))
    parts: list[str] = []
    names: dict[str, str] = {}
    for index, mix in enumerate(ordered):
        if mix != AS_DECODED:
            parts.append(mix_filter(mix))
        name = _filter_name(index)
        # framelog=verbose: the per-100 ms lines go below the report's info level. No
        # `peak=true`: its 192 kHz resampling of everything cost more than the decode; the
        # true peak comes from `media.true_peak` on the same decode's PCM instead.
        parts.append(f"{name}=framelog=verbose")
        names[name] = mix
    return ",".join(parts), names


_SUMMARY = re.compile(r"^\[(?P<name>[^\]]+?) @ 0x[0-9a-f]+\] Summary:", re.MULTILINE)
_NUMBER = r"(-?(?:inf|nan|\d+(?:\.\d+)?))"
_FIELDS = {
    "integrated": re.compile(rf"\bI:\s+{_NUMBER} LUFS"),
    "threshold": re.compile(rf"\bI:\s+\S+ LUFS\s+(?:\[[^\]]*\]\s*)?Threshold:\s+{_NUMBER} LUFS"),
    "lra": re.compile(rf"\bLRA:\s+{_NUMBER} LU\b"),
    "true_peak": re.compile(rf"True peak:\s+(?:\[[^\]]*\]\s*)?Peak:\s+{_NUMBER} dBFS"),
}


def parse_meter_log(
    text: str, names: Mapping[str, str], true_peaks: Mapping[str, float] | None = None
) -> dict[str, LoudnessStats]:
    """The ebur128 summaries in an ffmpeg log, by mix (`names`: filter instance -> mix).

    The true peak is the summary's own when the meter ran with `peak=true`, else the
    linear value `true_peaks` holds for the mix (`media.true_peak`, in dB here). A meter
    whose summary or true peak is missing or incomplete is left out; the caller decides
    whether that is an error."""
    found: dict[str, LoudnessStats] = {}
    heads = list(_SUMMARY.finditer(text))
    for position, head in enumerate(heads):
        mix = names.get(head.group("name"))
        if mix is None:
            continue
        end = heads[position + 1].start() if position + 1 < len(heads) else len(text)
        block = text[head.end() : end]
        values: dict[str, float] = {}
        for key, pattern in _FIELDS.items():
            match = pattern.search(block)
            if match is not None:
                values[key] = float(match.group(1))
        if "true_peak" not in values and true_peaks is not None and mix in true_peaks:
            linear = true_peaks[mix]
            values["true_peak"] = 20 * math.log10(linear) if linear > 0 else -math.inf
        if values.keys() >= _FIELDS.keys():
            found[mix] = LoudnessStats(
                integrated_lufs=values["integrated"],
                lra_lu=values["lra"],
                true_peak_dbtp=values["true_peak"],
                threshold_lufs=values["threshold"],
            )
    return found


def _clamp(value: float, bounds: tuple[float, float]) -> float:
    low, high = bounds
    if math.isnan(value):
        return low
    return min(high, max(low, value))


def is_silence(stats: LoudnessStats) -> bool:
    """Nothing above BS.1770's absolute gate (-70 LUFS): no loudness to bring to a target.
    The normalisation leaves such audio alone, and an output of it cannot be on target."""
    return not stats.integrated_lufs > _SILENCE_LUFS


def normalisation_gain_db(
    stats: LoudnessStats,
    fmt: AudioFormat,
    *,
    source_channels: int,
    target: LoudnessTarget = DEFAULT_TARGET,
) -> float:
    """The gain `normalisation_filter` applies to an output of `fmt` (0 for silence);
    `stats` is the measurement of `mix_for(fmt)`. The peaks above the limiter's ceiling
    (`target.true_peak_dbtp - TRUE_PEAK_MARGIN_DB`) are then held there."""
    if not stats.integrated_lufs > _SILENCE_LUFS:
        return 0.0
    channels = output_channels(fmt, source_channels)
    return target.integrated_for(channels) - stats.integrated_lufs


def normalisation_filter(
    stats: LoudnessStats,
    fmt: AudioFormat,
    *,
    source_channels: int,
    source_sample_rate: int,
    target: LoudnessTarget = DEFAULT_TARGET,
    limiter: Literal["alimiter", "loudnorm"] = "alimiter",
    oversample: bool = True,
) -> str:
    """The ffmpeg filter chain that brings an output of `fmt` to `target`.

    `stats` must be the measurement of `mix_for(fmt)` (the decode check's
    `loudness[mix_for(fmt)]`). The chain is: the format's downmix (so the gain applies to
    what was measured), then `volume=<gain>dB` when the true peak stays under the limit
    minus `TRUE_PEAK_MARGIN_DB`, else that gain and `alimiter` at 4x the rate (or, with
    `limiter="loudnorm"`, the second pass of `loudnorm` with the measured values and
    `linear=true`; see the module's docstring for why that is not the default), then
    `aresample` to the format's rate (the source's for formats that keep it). Silence
    gets no gain.

    `oversample=False` runs `alimiter` at the output's own rate instead of 4x it: it holds
    the samples, not the inter-sample peaks, at the ceiling, for a sixth of the CPU. The
    flow encodes that way first and falls back to the oversampled chain only when the
    post-encode check finds the true peak over the limit (`needs_limiter` says whether a
    chain limits at all).
    """
    channels = output_channels(fmt, source_channels)
    rate = fmt.sample_rate or source_sample_rate
    mix = mix_for(fmt)
    parts = [mix_filter(mix)]
    target_i = target.integrated_for(channels)
    aim_tp = target.true_peak_dbtp - TRUE_PEAK_MARGIN_DB
    if stats.integrated_lufs > _SILENCE_LUFS:
        gain = normalisation_gain_db(stats, fmt, source_channels=source_channels, target=target)
        if not needs_limiter(stats, fmt, source_channels=source_channels, target=target):
            parts.append(f"volume={gain:.2f}dB")
        elif limiter == "alimiter":
            ceiling = aim_tp if oversample else aim_tp - FAST_LIMITER_HEADROOM_DB
            limit = max(_ALIMITER_MIN_LIMIT, min(1.0, 10 ** (ceiling / 20)))
            parts.append(f"volume={gain:.2f}dB")
            if oversample:
                parts.append(f"aresample={_OVERSAMPLING * rate}")
            parts.append(
                f"alimiter=limit={limit:.4f}:attack={_LIMITER_ATTACK_MS}"
                f":release={_LIMITER_RELEASE_MS}:level=false"
            )
        else:
            lra = max(
                _LOUDNORM_MIN_LRA, math.ceil(stats.lra_lu) if math.isfinite(stats.lra_lu) else 0
            )
            options = {
                "I": _clamp(target_i, _LOUDNORM_I),
                "TP": _clamp(aim_tp, _LOUDNORM_TP),
                "LRA": _clamp(lra, _LOUDNORM_LRA),
                "measured_I": _clamp(stats.integrated_lufs, _LOUDNORM_MEASURED_I),
                "measured_LRA": _clamp(stats.lra_lu, _LOUDNORM_MEASURED_LRA),
                "measured_TP": _clamp(stats.true_peak_dbtp, _LOUDNORM_MEASURED_TP),
                "measured_thresh": _clamp(stats.threshold_lufs, _LOUDNORM_MEASURED_THRESH),
                # The first pass's target_offset corrects loudnorm's own re-measurement;
                # we measure with ebur128 instead, so none (the post-encode check catches
                # a miss).
                "offset": 0.0,
            }
            settings = ":".join(f"{key}={value:.2f}" for key, value in options.items())
            parts.append(f"loudnorm={settings}:linear=true:print_format=none")
    parts.append(f"aresample={rate}")
    return ",".join(parts)


def needs_limiter(
    stats: LoudnessStats,
    fmt: AudioFormat,
    *,
    source_channels: int,
    target: LoudnessTarget = DEFAULT_TARGET,
) -> bool:
    """Does `normalisation_filter` put a limiter after the gain (the source's true peak
    plus the gain would pass the limit minus `TRUE_PEAK_MARGIN_DB`)? Not for silence."""
    if not stats.integrated_lufs > _SILENCE_LUFS:
        return False
    gain = normalisation_gain_db(stats, fmt, source_channels=source_channels, target=target)
    return stats.true_peak_dbtp + gain > target.true_peak_dbtp - TRUE_PEAK_MARGIN_DB


def fast_limiter_holds(stats: LoudnessStats, target: LoudnessTarget = DEFAULT_TARGET) -> bool:
    """Is an output made with the limiter at its own rate far enough under the limit to
    keep (`FAST_LIMITER_MARGIN_DB`)? `stats` is its post-encode measurement."""
    limit = target.true_peak_dbtp + TRUE_PEAK_TOLERANCE_DB - FAST_LIMITER_MARGIN_DB
    return stats.true_peak_dbtp <= limit


def measure_loudness(path: Path, *, max_duration_s: float | None = None) -> LoudnessStats:
    """Measure an encoded output as it decodes (ebur128, no downmix): the post-encode
    meter. Raises `media.probe.BadAudioError` if it does not decode, ValueError if ffmpeg
    gave no summary."""
    from media.probe import check_decodes  # probe imports this module

    report = check_decodes(Path(path), max_duration_s=max_duration_s, loudness_mixes=[AS_DECODED])
    return report.loudness[AS_DECODED]


def check_loudness(
    stats: LoudnessStats, target: LoudnessTarget = DEFAULT_TARGET, *, channels: int = 2
) -> LoudnessCheck:
    """Is a measured output on target? Integrated within 1 LU of the target for its
    channel count, true peak at most the limit + 0.1 dB. The message names the figures."""
    want_i = target.integrated_for(channels)
    limit = target.true_peak_dbtp + TRUE_PEAK_TOLERANCE_DB
    problems: list[str] = []
    peak_ok = stats.true_peak_dbtp <= limit
    if abs(stats.integrated_lufs - want_i) > INTEGRATED_TOLERANCE_LU:
        problems.append(
            f"integrated loudness {stats.integrated_lufs:.1f} LUFS, target {want_i:.1f} LUFS "
            f"(tolerance {INTEGRATED_TOLERANCE_LU:.0f} LU)"
        )
    if not peak_ok:
        problems.append(
            f"true peak {stats.true_peak_dbtp:.1f} dBTP, limit {target.true_peak_dbtp:.1f} dBTP "
            f"(tolerance {TRUE_PEAK_TOLERANCE_DB} dB)"
        )
    if problems:
        return LoudnessCheck(False, "loudness off target: " + "; ".join(problems), peak_ok=peak_ok)
    return LoudnessCheck(
        True,
        f"loudness on target: {stats.integrated_lufs:.1f} LUFS (target {want_i:.1f}), "
        f"true peak {stats.true_peak_dbtp:.1f} dBTP (limit {target.true_peak_dbtp:.1f}), "
        f"LRA {stats.lra_lu:.1f} LU",
    )
