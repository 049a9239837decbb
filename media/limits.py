"""Bounds on the work one source can cause: its length, and how long each ffmpeg may run.

A 3 KB playlist or a header that lies must not hold a worker (or an API thread) for hours,
so every ffprobe/ffmpeg run on user data has a timeout scaled to the source's length as its
header states it, capped by `AUDIOFLOW_MAX_DURATION_S`, and every decode stops producing
output just past that cap (`duration_cap_args`), whatever the header said.

Timeouts come from speeds measured on the development machine (2 cores, shared, ffmpeg 5.1,
2026-11-29) on a 10-minute 128 kbit/s stereo MP3: decoding to nowhere took 0.0015 s per
second of audio; encoding took at most 0.031 s per second (aac_128; MP3 0.014, Opus 0.013,
FLAC 0.0035, WAV 0.0014). Encodes share the cores: two flows per worker, each encoding
every requested format side by side, can put 14 ffmpeg processes on 2 cores, so AAC alone
may need 0.031 x 7 = 0.22 s per second of audio there. The factors below leave 30x
(decode) and 16x (encode, 2.3x over that worst case) headroom, for heavier source codecs,
high sample rates, more channels and a loaded machine; the base covers process start-up
and a short file's fixed costs. A timeout is a failure with a reason.
"""

from __future__ import annotations

from core.settings import get_settings

__all__ = [
    "DECODE_BASE_S",
    "DECODE_S_PER_S",
    "ENCODE_BASE_S",
    "ENCODE_S_PER_S",
    "PROBE_TIMEOUT_S",
    "decode_timeout_s",
    "duration_cap_args",
    "encode_timeout_s",
    "max_duration_s",
]

#: ffprobe reads headers only: milliseconds whatever the length.
PROBE_TIMEOUT_S = 30.0
#: Decoding (to nowhere, or to 16 kHz PCM for Whisper): base + factor x seconds of audio.
DECODE_BASE_S = 30.0
DECODE_S_PER_S = 0.05
#: Encoding one output format: base + factor x seconds of audio.
ENCODE_BASE_S = 60.0
ENCODE_S_PER_S = 0.5
#: A decode is cut this far past the limit, so that "reached the cut" means "too long".
_CAP_MARGIN_S = 1.0


def max_duration_s() -> float:
    """The longest source accepted (`AUDIOFLOW_MAX_DURATION_S`), in seconds."""
    return get_settings().media.max_duration_s


def _bounded(duration_s: float | None, limit_s: float | None) -> float:
    """The length to scale a timeout by: the stated one, never more than the limit; the
    limit itself when the length is unknown."""
    cap = max_duration_s() if limit_s is None else limit_s
    if duration_s is None or duration_s <= 0:
        return cap
    return min(duration_s, cap)


def decode_timeout_s(duration_s: float | None, limit_s: float | None = None) -> float:
    """Seconds a full decode of `duration_s` of audio may take (unknown: the limit's)."""
    return DECODE_BASE_S + DECODE_S_PER_S * _bounded(duration_s, limit_s)


def encode_timeout_s(duration_s: float | None, limit_s: float | None = None) -> float:
    """Seconds encoding `duration_s` of audio into one format may take."""
    return ENCODE_BASE_S + ENCODE_S_PER_S * _bounded(duration_s, limit_s)


def duration_cap_args(limit_s: float) -> list[str]:
    """Output options that stop ffmpeg just past `limit_s` seconds of audio: a source that
    decodes that far is too long, whatever its header claimed."""
    return ["-t", f"{limit_s + _CAP_MARGIN_S:.3f}"]
