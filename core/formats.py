"""The output-format registries: every audio rendition and transcript file audioflow can
produce, by name.

The API validates a request's `encodingFormats` against `FORMATS`, the encoder turns an
`AudioFormat` into ffmpeg output options, the verifier checks an output against the same
record, and the object key of an output is built from its `name` and `extension`. Adding a
format is therefore one entry here and nothing else.

Transcript formats (`TRANSCRIPT_FORMATS`: name, extension, MIME type) live here too, so that
what an attempt stores can be worked out without the writers that render them
(`transcription.writers` registers one writer per entry).

`check_format_names` is the one check of requested format names: the task payload, the
flow's parameters and the reprocessing parameters all go through it.

This module is imported by the API on every request path, so it stays import-light: plain
dataclasses, no subprocess, no boto3, no ffmpeg probing at import time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

__all__ = [
    "FORMATS",
    "TRANSCRIPT_FORMATS",
    "AudioFormat",
    "TranscriptFormat",
    "UnknownFormatError",
    "check_format_names",
    "format_names",
    "get_format",
    "get_transcript_format",
]

#: ffmpeg filter that keeps mono as mono and stereo as stereo, and downmixes anything wider
#: (5.1, 7.1, ambisonics) to stereo. Used when a format leaves `channels` to the source.
KEEP_CHANNELS_UP_TO_STEREO = "aformat=channel_layouts=mono|stereo"


#: Output size estimates are multiplied by this ...
ESTIMATE_MARGIN = 1.15
#: ... and get this much on top for headers, seek tables and the like.
ESTIMATE_OVERHEAD_BYTES = 256 * 1024
#: Size of a lossless encode relative to 16-bit PCM, by codec (PCM itself: 1).
_LOSSLESS_SIZE_RATIO = {"flac": 0.7}


class UnknownFormatError(ValueError):
    """A format name is not in the registry; the message lists the names that are."""

    def __init__(self, name: str, known: list[str] | None = None, what: str = "audio") -> None:
        self.name = name
        super().__init__(
            f"unknown {what} format {name!r}; known formats: "
            f"{', '.join(format_names() if known is None else known)}"
        )


@dataclass(frozen=True)
class AudioFormat:
    """One output rendition: what ffmpeg is asked for and what the result must look like.

    The descriptive fields (`codec`, `bitrate_kbps`, `channels`, `sample_rate`) are what
    `media.probe.verify_output` checks the encoded file against; `ffmpeg_args` are
    the output options that produce it. Both are built from the same values by `_format`
    below, so they cannot disagree.
    """

    #: Registry key and the file stem of the output object (`mp3_128` -> `mp3_128.mp3`).
    name: str
    #: File extension without the dot.
    extension: str
    #: MIME type stored with the object, served to podcast clients.
    content_type: str
    #: What ffprobe reports as `codec_name` for the output's audio stream.
    codec: str
    #: Target bitrate; None for lossless formats.
    bitrate_kbps: int | None
    #: Output channel count; None keeps the source's (mono stays mono), capped at 2.
    channels: int | None
    #: Output sample rate in Hz; None keeps the source's.
    sample_rate: int | None
    #: ffmpeg output options (codec, bitrate, rate, channels, muxer), in order.
    ffmpeg_args: tuple[str, ...]
    #: True when the encoder is run at a constant bitrate, so the output's bitrate can be
    #: checked against `bitrate_kbps`; VBR/ABR encoders are only checked for codec/duration.
    constant_bitrate: bool = False

    def estimated_bytes(self, duration_s: float, source_rate: int, source_channels: int) -> int:
        """An upper estimate of the output's size, for checking disk space before encoding.

        Lossy formats take their bitrate times the duration; lossless ones their 16-bit PCM
        size (FLAC about 0.7 of it, less on speech, more on noise). A margin covers VBR
        overshoot, container headers and indexes, so that a run that passes the check does
        not run out of room halfway.
        """
        duration_s = max(0.0, duration_s)
        if self.bitrate_kbps is not None:
            payload = self.bitrate_kbps * 1000 / 8 * duration_s
        else:
            rate = self.sample_rate or source_rate
            channels = self.channels or min(max(source_channels, 1), 2)
            pcm = rate * channels * 2 * duration_s
            payload = pcm * _LOSSLESS_SIZE_RATIO.get(self.codec, 1.0)
        return int(payload * ESTIMATE_MARGIN) + ESTIMATE_OVERHEAD_BYTES


class _Codec(NamedTuple):
    """What every rendition in one codec shares: container, encoder and fixed options."""

    #: File extension without the dot.
    extension: str
    #: MIME type stored with the object.
    content_type: str
    #: The ffmpeg encoder.
    encoder: str
    #: The ffmpeg muxer (always named with `-f`: the encoder writes to a temporary file
    #: whose name does not end in the final extension).
    muxer: str
    #: Output sample rate in Hz where the encoder needs a fixed one; None keeps the source's.
    sample_rate: int | None = None
    #: Whether the encoder runs at a constant bitrate (see `AudioFormat.constant_bitrate`).
    constant_bitrate: bool = False
    #: Further output options, before the muxer.
    extra: tuple[str, ...] = ()


#: The codecs, by the name ffprobe reports for them (`AudioFormat.codec`).
_CODECS: dict[str, _Codec] = {
    # MP3: the format every podcast client plays. libmp3lame with -b:a alone is CBR; 44.1 kHz
    # is fixed because LAME refuses rates such as 96 kHz that a WAV master may have.
    "mp3": _Codec("mp3", "audio/mpeg", "libmp3lame", "mp3", 44100, constant_bitrate=True),
    # AAC in an .m4a (ffmpeg's `ipod` muxer); faststart moves the index to the front so a
    # client can start playing before the whole file has arrived.
    "aac": _Codec("m4a", "audio/mp4", "aac", "ipod", 44100, extra=("-movflags", "+faststart")),
    # Opus in Ogg (RFC 7845: media type audio/ogg, extension .opus). libopus only runs at
    # 48 kHz internally, so that rate is fixed. Opus is VBR by design: no bitrate check.
    "opus": _Codec("opus", "audio/ogg", "libopus", "ogg", 48000),
    # Lossless renditions keep the source rate. FLAC is written as 16-bit: ffmpeg would
    # otherwise pick 24-bit for decoded lossy sources, a third larger for nothing.
    "flac": _Codec("flac", "audio/flac", "flac", "flac", extra=("-sample_fmt", "s16")),
    # 16-bit PCM WAV; `-rf64 auto` switches to RF64 past 4 GiB instead of writing a
    # broken RIFF header (a 4-hour 48 kHz stereo episode is 2.7 GB, so only just below).
    "pcm_s16le": _Codec("wav", "audio/wav", "pcm_s16le", "wav", extra=("-rf64", "auto")),
}


def _format(
    name: str, codec: str, bitrate_kbps: int | None = None, channels: int | None = None
) -> AudioFormat:
    """Build an `AudioFormat` whose ffmpeg options are derived from its declared fields.

    Everything but the bitrate and the channel count comes from the codec's `_CODECS` row.
    """
    spec = _CODECS[codec]
    args: list[str] = ["-c:a", spec.encoder]
    if bitrate_kbps is not None:
        args += ["-b:a", f"{bitrate_kbps}k"]
    if spec.sample_rate is not None:
        args += ["-ar", str(spec.sample_rate)]
    if channels is not None:
        args += ["-ac", str(channels)]
    else:
        args += ["-af", KEEP_CHANNELS_UP_TO_STEREO]
    args += [*spec.extra, "-f", spec.muxer]
    return AudioFormat(
        name=name,
        extension=spec.extension,
        content_type=spec.content_type,
        codec=codec,
        bitrate_kbps=bitrate_kbps,
        channels=channels,
        sample_rate=spec.sample_rate,
        ffmpeg_args=tuple(args),
        constant_bitrate=spec.constant_bitrate,
    )


_ALL: tuple[AudioFormat, ...] = (
    _format("mp3_128", "mp3", bitrate_kbps=128),
    _format("mp3_320", "mp3", bitrate_kbps=320),
    _format("mp3_64", "mp3", bitrate_kbps=64, channels=1),
    _format("aac_128", "aac", bitrate_kbps=128),
    _format("opus_64", "opus", bitrate_kbps=64),
    _format("flac", "flac"),
    _format("wav", "pcm_s16le"),
)

#: Every format audioflow can produce, by name.
FORMATS: dict[str, AudioFormat] = {fmt.name: fmt for fmt in _ALL}


def format_names() -> list[str]:
    """The registered format names, in registry order (for error messages and API docs)."""
    return list(FORMATS)


def get_format(name: str) -> AudioFormat:
    """The format called `name`; raises `UnknownFormatError` listing the valid names."""
    fmt = FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise UnknownFormatError(str(name))
    return fmt


def check_format_names(names: list[str]) -> list[str]:
    """`names` if each is a registered audio format, once; else `ValueError` saying which.

    The one check of requested formats (task payloads, flow and reprocessing parameters),
    so every caller refuses the same names with the same words.
    """
    unknown = [name for name in names if name not in FORMATS]
    if unknown:
        raise ValueError(
            f"unknown encoding format(s): {', '.join(map(str, unknown))}; "
            f"known: {', '.join(FORMATS)}"
        )
    if len(set(names)) != len(names):
        raise ValueError("a format is listed twice")
    return names


@dataclass(frozen=True)
class TranscriptFormat:
    """One transcript file format: what is stored and how podcast apps are told about it.

    The rendering lives in `transcription.writers` (one writer per entry); the name, file
    extension and MIME type live here so that the domain can name the stored objects
    without importing the writers.
    """

    #: Registry key: the key of the file in a result's `transcript.keys`.
    name: str
    #: File extension without the dot (`transcript.{extension}`).
    extension: str
    #: MIME type, as Podcasting 2.0's `<podcast:transcript type=...>` expects it and as the
    #: object is stored.
    content_type: str


_TRANSCRIPTS: tuple[TranscriptFormat, ...] = (
    # Podcasting 2.0 JSON: `{"version", "segments": [{"startTime", "endTime", "body"}]}`.
    TranscriptFormat("json", extension="json", content_type="application/json"),
    # WebVTT: what Apple Podcasts ingests and browsers play natively.
    TranscriptFormat("vtt", extension="vtt", content_type="text/vtt"),
    TranscriptFormat("srt", extension="srt", content_type="application/x-subrip"),
    TranscriptFormat("txt", extension="txt", content_type="text/plain"),
    # HTML (Podcasting 2.0's `text/html`): paragraphs, each after its start time.
    TranscriptFormat("html", extension="html", content_type="text/html"),
)

#: Every transcript file an attempt that transcribes writes, by name (in writing order).
TRANSCRIPT_FORMATS: dict[str, TranscriptFormat] = {fmt.name: fmt for fmt in _TRANSCRIPTS}


def get_transcript_format(name: str) -> TranscriptFormat:
    """The transcript format called `name`; `UnknownFormatError` lists the valid names."""
    fmt = TRANSCRIPT_FORMATS.get(name) if isinstance(name, str) else None
    if fmt is None:
        raise UnknownFormatError(str(name), list(TRANSCRIPT_FORMATS), what="transcript")
    return fmt
