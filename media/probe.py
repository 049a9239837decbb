"""Audio probing and verification: is this file usable audio, and is an output what we asked?

Three checks, from cheap to thorough:

* `probe(path)` runs ffprobe on the file's headers (milliseconds, whatever the length) and
  returns an `AudioInfo` for the first audio stream, so a video with a soundtrack is fine.
  It refuses, with a reason a person understands, an empty file, a file that is not media
  at all (a text file named `.mp3`), media without audio, and audio of unknown length.
* `check_decodes(path)` decodes the whole first audio stream to nowhere. Headers can lie:
  an upload cut off half-way still carries the header of the complete file (an MP3's Xing
  frame count, FLAC's STREAMINFO, an MP4 `moov` written first), so ffprobe reports the full
  length and even ffmpeg exits 0, having decoded only what is there. Decoding is cheap next
  to encoding (measured: 4.8 CPU-seconds and 55 MB for an hour of 128 kbit/s MP3, against
  ~40 s to encode it to MP3 and ~90 s to AAC), so `probe_source` always does it.
* `probe_source(path)` = both: it refuses a source whose decodable audio is clearly shorter
  than its header promises (truncated or damaged upload) and returns the *decoded* duration,
  the length every encoder will actually produce, which `verify_output` then compares with.
  It also refuses a source longer than `AUDIOFLOW_MAX_DURATION_S`, from the header first
  and again while decoding (see `media.limits`).

`check_decodes(path, loudness_mixes=[...])` and `probe_source_measured` also measure
loudness (EBU R128, `media.loudness`) in that same decode: one pass over the audio. The
true peak of each mix is measured in this process (`media.true_peak`, in a thread) on a
further output of the same ffmpeg process, the mix as 32-bit float WAV on a pipe. Given
a `media.waveform.WaveformBuilder`, the same ffmpeg process also writes a second output,
the audio as 16 kHz mono 16-bit PCM to a pipe, read by a thread into the builder (which
keeps only the pixels): the waveform costs no second read or decode either.

Every run reads exactly one file with an allowed demuxer (`media.containers`): a
playlist, a concat list or an image sequence is refused (UnsupportedContainerError).

`verify_output(path, fmt, source)` checks an encoded file against its `AudioFormat`.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import logging
import os
import subprocess
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any

from core.formats import KEEP_CHANNELS_UP_TO_STEREO, AudioFormat
from media import limits
from media.containers import input_args, refused_demuxer, what_it_is
from media.limits import PROBE_TIMEOUT_S, decode_timeout_s, duration_cap_args
from media.loudness import AS_DECODED, LoudnessStats, meter_chain, mix_filter, parse_meter_log
from media.tools import ffmpeg, ffprobe, media_url, read_tail
from media.true_peak import WavTruePeak

if TYPE_CHECKING:
    from media.waveform import WaveformBuilder

__all__ = [
    "DURATION_TOLERANCE_S",
    "AudioInfo",
    "BadAudioError",
    "DecodeReport",
    "OutputCheckError",
    "SourceTooLongError",
    "UnsupportedContainerError",
    "check_decodes",
    "probe",
    "probe_source",
    "probe_source_measured",
    "verify_output",
]

log = logging.getLogger(__name__)

#: How far an output's duration may be from the source's (encoder priming and padding,
#: frame rounding: measured at most ~0.05 s here for every registered format).
DURATION_TOLERANCE_S = 0.5
#: How far a CBR output's bitrate may be from the target (MP3 reports the frame-header rate,
#: so this only absorbs container overhead on very short files).
BITRATE_TOLERANCE = 0.05
#: A source whose decodable audio falls short of its header by more than this (seconds, or
#: this fraction of the length, whichever is larger) is treated as truncated.
TRUNCATION_TOLERANCE_S = 1.0
TRUNCATION_TOLERANCE_FRACTION = 0.01

# ffprobe warns this when the duration is a guess from the first frames' bitrate (an MP3
# without a Xing header, a WAV whose header and size disagree). Such a duration cannot be
# used to detect truncation; the decoded one replaces it.
_ESTIMATED_DURATION_WARNING = "Estimating duration from bitrate"


class BadAudioError(ValueError):
    """The file is not usable audio; the message says why in plain words. Not retryable."""


class UnsupportedContainerError(BadAudioError):
    """The file is media of a kind we refuse to open (a playlist, a file list, an image
    sequence, a stream description: see `media.containers`)."""


class SourceTooLongError(BadAudioError):
    """The source is longer than `AUDIOFLOW_MAX_DURATION_S`, by its header or its decode."""


class OutputCheckError(RuntimeError):
    """An encoded output differs from its format or from the source; lists what differed."""


@dataclass(frozen=True)
class AudioInfo:
    """What a file holds, as far as audioflow cares: its first audio stream."""

    #: Length in seconds (the decoded length when it comes from `probe_source`).
    duration_s: float
    #: ffprobe `codec_name` (`mp3`, `aac`, `opus`, `flac`, `pcm_s16le`, ...).
    codec: str
    #: Stream bitrate in kbit/s (container average if the stream has none); None if unknown.
    bitrate_kbps: float | None
    channels: int
    sample_rate: int
    #: ffprobe `format_name` (`mp3`, `ogg`, `mov,mp4,m4a,3gp,3g2,mj2`, `wav`, ...).
    container: str


@dataclass(frozen=True)
class DecodeReport:
    """The result of decoding a file's first audio stream in full."""

    #: Seconds of audio that actually decoded.
    decoded_s: float
    #: How many error lines the decoder printed (damaged frames it skipped).
    error_lines: int
    #: The last few of them, for logs.
    errors_tail: str
    #: Loudness of each mix asked for (`loudness_mixes`), by mix; empty if none was.
    loudness: Mapping[str, LoudnessStats] = field(default_factory=dict)


def _seconds(value: Any) -> float | None:
    try:
        seconds = float(value)
    except (TypeError, ValueError):
        return None
    return seconds if seconds > 0 else None


def _integer(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError):
        return 0


def _describe_failure(stderr: str, path: Path) -> str:
    """The last ffmpeg/ffprobe message, without the file path and `[demuxer @ 0x..]` noise."""
    lines = [line for line in stderr.strip().splitlines() if line.strip()]
    if not lines:
        return "no details from ffprobe"
    last = lines[-1].replace(media_url(path), path.name).replace(str(path), path.name)
    if last.startswith("[") and "] " in last:
        last = last.split("] ", 1)[1]
    if last.startswith(f"{path.name}: "):
        last = last[len(path.name) + 2 :]
    return last.strip()


def _run_bounded(
    cmd: list[str],
    *,
    timeout_s: float,
    too_slow: str,
    stdout: int | IO[bytes],
    stderr: int | IO[bytes],
    env: Mapping[str, str] | None = None,
    pass_fds: Sequence[int] = (),
) -> subprocess.CompletedProcess[bytes]:
    """Run an ffmpeg tool on a file a client sent, no longer than `timeout_s`: a file that
    makes it hang is bad audio (BadAudioError `too_slow`), not a stuck worker. On a
    timeout `subprocess.run` has already killed the tool; the exit code is the caller's."""
    try:
        return subprocess.run(
            cmd,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
            timeout=timeout_s,
            check=False,
            env=env,
            pass_fds=tuple(pass_fds),
        )
    except subprocess.TimeoutExpired as exc:
        raise BadAudioError(too_slow) from exc


def _run_ffprobe(path: Path) -> tuple[dict[str, Any], str]:
    """ffprobe's JSON for `path` and its warnings; BadAudioError if it cannot read it."""
    path = Path(path)
    size = path.stat().st_size  # FileNotFoundError for a missing file: a caller's bug
    if size == 0:
        raise BadAudioError(f"{path.name} is empty (0 bytes)")
    return ffprobe_json(
        path,
        ["-show_format", "-show_streams"],
        level="warning",
        too_slow=f"{path.name} could not be read: ffprobe took longer than {PROBE_TIMEOUT_S:.0f} s",
        failed=f"{path.name} is not an audio or video file ffmpeg can read",
        no_result=f"{path.name} could not be read (ffprobe gave no result)",
    )


def ffprobe_json(
    path: Path,
    show: list[str],
    *,
    level: str,
    too_slow: str,
    failed: str,
    no_result: str,
) -> tuple[dict[str, Any], str]:
    """ffprobe's JSON (`show`: what to print) for `path` under the container allow-list and
    the probe timeout, and its stderr. The messages name what the caller was reading:
    `failed` gets ffmpeg's reason appended; a refused container says what the file is."""
    cmd = [ffprobe(), "-v", level, "-print_format", "json", *show, *input_args(), media_url(path)]
    done = _run_bounded(
        cmd,
        timeout_s=PROBE_TIMEOUT_S,
        too_slow=too_slow,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    stderr = done.stderr.decode("utf-8", "replace")
    _refuse_other_containers(stderr, path)
    if done.returncode != 0:
        raise BadAudioError(f"{failed} ({_describe_failure(stderr, path)})")
    try:
        data = json.loads(done.stdout or b"{}")
    except json.JSONDecodeError as exc:
        raise BadAudioError(no_result) from exc
    return data, stderr


def _refuse_other_containers(stderr: str, path: Path) -> None:
    """UnsupportedContainerError, saying what the file is, if ffmpeg's whitelist refused it."""
    demuxer = refused_demuxer(stderr)
    if demuxer is not None:
        raise UnsupportedContainerError(f"{path.name} is {what_it_is(demuxer)}")


def _info_from_probe(
    path: Path, data: dict[str, Any], *, allow_unknown_duration: bool = False
) -> AudioInfo:
    """AudioInfo from ffprobe's JSON; an unknown duration is 0.0 if allowed, else refused."""
    streams: list[dict[str, Any]] = data.get("streams") or []
    fmt: dict[str, Any] = data.get("format") or {}
    audio = next((s for s in streams if s.get("codec_type") == "audio"), None)
    if audio is None:
        kinds = sorted({str(s.get("codec_type", "unknown")) for s in streams})
        found = f" (it has {', '.join(kinds)} only)" if kinds else ""
        raise BadAudioError(f"{path.name} contains no audio stream{found}")
    codec = str(audio.get("codec_name") or "")
    channels = _integer(audio.get("channels"))
    sample_rate = _integer(audio.get("sample_rate"))
    if not codec or channels <= 0 or sample_rate <= 0:
        raise BadAudioError(
            f"{path.name} has an audio stream ffmpeg cannot decode "
            f"(codec {codec or 'unknown'}, {channels} channels, {sample_rate} Hz)"
        )
    duration = _seconds(audio.get("duration")) or _seconds(fmt.get("duration"))
    if duration is None and not allow_unknown_duration:
        raise BadAudioError(
            f"{path.name}: the length of the audio is unknown (the file is damaged or not "
            "really audio)"
        )
    bitrate = _seconds(audio.get("bit_rate"))
    if bitrate is None and len(streams) == 1:
        bitrate = _seconds(fmt.get("bit_rate"))
    return AudioInfo(
        duration_s=duration or 0.0,
        codec=codec,
        bitrate_kbps=None if bitrate is None else bitrate / 1000.0,
        channels=channels,
        sample_rate=sample_rate,
        container=str(fmt.get("format_name") or "unknown"),
    )


def probe(path: Path) -> AudioInfo:
    """Read the first audio stream's properties from the file's headers (fast).

    Raises BadAudioError for an empty file, a file that is not media, media without an
    audio stream, or audio of unknown length; FileNotFoundError if there is no file.
    """
    data, _ = _run_ffprobe(Path(path))
    return _info_from_probe(Path(path), data)


def _report_setting(path: Path) -> str:
    """`FFREPORT` value writing ffmpeg's info-level log to `path` (`:`, `=` and `\\`
    escaped as its option parser wants)."""
    escaped = str(path).replace("\\", "\\\\").replace(":", "\\:").replace("=", "\\=")
    return f"file={escaped}:level=32"


def check_decodes(
    path: Path,
    *,
    timeout_s: float | None = None,
    max_duration_s: float | None = None,
    loudness_mixes: Sequence[str] = (),
    waveform: WaveformBuilder | None = None,
    waveform_filter: str = "",
) -> DecodeReport:
    """Decode the whole first audio stream to nowhere and report how much decoded.

    Catches what headers hide: damaged frames (counted in `error_lines`, tolerated by
    ffmpeg up to its default error rate) and, via `decoded_s`, truncation. Raises
    BadAudioError if ffmpeg gives up or nothing decodes. stderr goes to a temporary file,
    so a file with millions of damaged frames cannot fill a pipe or the memory.

    The decode stops just past `max_duration_s` (default `AUDIOFLOW_MAX_DURATION_S`)
    whatever the header says; reaching it raises SourceTooLongError. `timeout_s`
    (default: scaled to that limit) kills ffmpeg and raises BadAudioError.

    `loudness_mixes` (`media.loudness.mix_for` of each output format, or `AS_DECODED`)
    adds an ebur128 meter per mix to this decode, and a further output per mix (that
    mix as float WAV on a pipe) read by a `media.true_peak` meter in a thread; the
    report's `loudness` holds them.
    Their summary is written at ffmpeg's info level to a separate log (`FFREPORT`), so
    stderr, the error count and every message stay what they are without meters. A
    meter that gives no summary raises BadAudioError.

    `waveform` adds a second output to the same ffmpeg process: the decoded audio through
    `waveform_filter` (`media.waveform.mono_filter`; default ffmpeg's own downmix), as
    mono 16-bit PCM at the builder's rate, to a pipe that a thread reads into the builder
    block by block (`_pcm_reader`): memory stays flat whatever the length.
    """
    path = Path(path)
    limit = _max_duration(max_duration_s)
    if timeout_s is None:
        timeout_s = decode_timeout_s(None, limit)
    cmd = [
        ffmpeg(),
        "-nostdin",
        "-hide_banner",
        "-v",
        "error",
        "-progress",
        "pipe:1",
        "-nostats",
        *input_args(),
        "-i",
        media_url(path),
        "-map",
        "0:a:0",
        *duration_cap_args(limit),
        "-f",
        "null",
        "-",
    ]
    chain, meters = meter_chain(loudness_mixes) if loudness_mixes else ("", {})
    if chain:
        cmd[-3:-3] = ["-af", chain]
    meter_log = ""
    mixes = list(dict.fromkeys(meters.values()))
    peaks = {mix: WavTruePeak() for mix in mixes}
    workspace = tempfile.TemporaryDirectory() if meters else contextlib.nullcontext("")
    with contextlib.ExitStack() as pipes:
        errlog = pipes.enter_context(tempfile.TemporaryFile())
        workdir = pipes.enter_context(workspace)
        fds: list[int] = []
        env = None
        report_path = Path(workdir) / "meter.log"
        if meters:
            env = {**os.environ, "FFREPORT": _report_setting(report_path)}
        for mix in mixes:
            fd = pipes.enter_context(_pipe_reader(peaks[mix].feed, f"true-peak-{mix}"))
            cmd += _true_peak_output_args(mix, limit, fd)
            fds.append(fd)
        if waveform is not None:
            fd = pipes.enter_context(_pipe_reader(waveform.feed_s16le, "waveform-pcm"))
            cmd += _pcm_output_args(waveform.sample_rate, waveform_filter, limit, fd)
            fds.append(fd)
        done = _run_bounded(
            cmd,
            timeout_s=timeout_s,
            too_slow=f"{path.name} could not be decoded within {timeout_s:.0f} s",
            stdout=subprocess.PIPE,
            stderr=errlog,
            env=env,
            pass_fds=fds,
        )
        errlog.seek(0)
        error_lines = sum(1 for _ in errlog)
        tail = read_tail(errlog, max_lines=5)
        if meters and done.returncode == 0:
            meter_log = _read_summaries(report_path)
    _refuse_other_containers(tail, path)
    if done.returncode != 0:
        raise BadAudioError(
            f"{path.name} could not be decoded; it is damaged or not audio "
            f"({_describe_failure(tail, path)})"
        )
    decoded = 0.0
    for line in done.stdout.decode("ascii", "replace").splitlines():
        key, _, value = line.partition("=")
        if key in ("out_time_us", "out_time_ms"):  # both are microseconds (ffmpeg bug #7345)
            micros = _integer(value.strip())
            if micros > 0:
                decoded = micros / 1_000_000
    if decoded <= 0:
        raise BadAudioError(f"{path.name} contains no decodable audio")
    if decoded > limit:
        raise SourceTooLongError(
            f"{path.name} is longer than the limit of {limit:.0f} s of audio "
            "(AUDIOFLOW_MAX_DURATION_S); decoding was stopped there"
        )
    true_peaks = {mix: peak for mix, meter in peaks.items() if (peak := meter.finish()) is not None}
    loudness = parse_meter_log(meter_log, meters, true_peaks) if meters else {}
    missing = sorted(set(meters.values()) - set(loudness))
    if missing:
        raise BadAudioError(
            f"{path.name}: the decode gave no loudness measurement (mix {', '.join(missing)})"
        )
    return DecodeReport(
        decoded_s=decoded, error_lines=error_lines, errors_tail=tail, loudness=loudness
    )


#: Bytes read from a PCM pipe at a time (2 s of the waveform's 16 kHz 16-bit mono, 0.7 s
#: of the true-peak meters' 44.1 kHz stereo float), and the pipe's buffer asked for: fewer,
#: larger reads cost the reader thread less than ffmpeg's 4 KiB frames one by one.
_PCM_CHUNK = 256 * 1024
_PIPE_BUFFER = 1024 * 1024
#: fcntl's F_SETPIPE_SZ (Linux): Python's fcntl module names it only from 3.10 on some builds.
_F_SETPIPE_SZ = getattr(fcntl, "F_SETPIPE_SZ", 1031)


def _pcm_output_args(rate: int, mono_filter: str, limit_s: float, fd: int) -> list[str]:
    """ffmpeg output options for the waveform's PCM: the first audio stream again, through
    `mono_filter`, resampled in float and written as mono s16le to file descriptor `fd`."""
    chain = ",".join(
        part
        for part in (
            mono_filter,
            f"aresample={rate}",
            "aformat=sample_fmts=s16:channel_layouts=mono",
        )
        if part
    )
    return ["-map", "0:a:0", *duration_cap_args(limit_s), "-af", chain, "-f", "s16le", f"pipe:{fd}"]


def _true_peak_output_args(mix: str, limit_s: float, fd: int) -> list[str]:
    """ffmpeg output options for a true-peak meter's PCM: the first audio stream again, as
    the loudness meter of `mix` hears it (`media.loudness.mix_filter`, the same float
    downmix), written as 32-bit float WAV (its header names the channels) to `fd`."""
    chain = ["-af", mix_filter(mix)] if mix != AS_DECODED else []
    return [
        "-map", "0:a:0", *duration_cap_args(limit_s), *chain,
        "-c:a", "pcm_f32le", "-fflags", "+bitexact", "-f", "wav", f"pipe:{fd}",
    ]  # fmt: skip


@contextlib.contextmanager
def _pipe_reader(feed: Callable[[bytes], None], name: str) -> Iterator[int]:
    """A pipe whose write end (yielded) ffmpeg writes to, and a thread passing what
    arrives to `feed` (the waveform builder, a true-peak meter).

    On leaving, this process's copy of the write end is closed, so the thread sees the end
    of the stream once ffmpeg has exited (normally or killed by the timeout), and is
    joined. If `feed` fails, the thread keeps draining the pipe (so ffmpeg never blocks on
    a full pipe) and the error is raised here after the decode.
    """
    read_fd, write_fd = os.pipe()
    with contextlib.suppress(OSError):  # a larger buffer is an optimisation only
        fcntl.fcntl(write_fd, _F_SETPIPE_SZ, _PIPE_BUFFER)
    failures: list[BaseException] = []

    def pump() -> None:
        with os.fdopen(read_fd, "rb", buffering=_PCM_CHUNK) as pipe:
            while chunk := pipe.read(_PCM_CHUNK):
                if failures:
                    continue
                try:
                    feed(chunk)
                except BaseException as exc:  # re-raised in the caller's thread
                    failures.append(exc)

    thread = threading.Thread(target=pump, name=name, daemon=True)
    thread.start()
    try:
        yield write_fd
    finally:
        os.close(write_fd)
        thread.join()
    if failures:
        raise failures[0]


#: The meters' summaries are at the end of the report; a file with millions of damaged
#: frames makes the report as large as the error log, so only its end is read.
_SUMMARY_BYTES = 64 * 1024


def _read_summaries(report: Path) -> str:
    """The end of ffmpeg's report (where the ebur128 summaries are), decoded leniently."""
    try:
        with report.open("rb") as log_file:
            log_file.seek(0, os.SEEK_END)
            log_file.seek(max(0, log_file.tell() - _SUMMARY_BYTES))
            return log_file.read().decode("utf-8", "replace")
    except OSError:
        return ""


def _max_duration(given: float | None) -> float:
    """The length limit in force: the caller's, else `AUDIOFLOW_MAX_DURATION_S`."""
    return limits.max_duration_s() if given is None else given


def probe_source(path: Path, *, max_duration_s: float | None = None) -> AudioInfo:
    """`probe` plus a full decode: the check to run once on an uploaded source.

    A source longer than `max_duration_s` (default `AUDIOFLOW_MAX_DURATION_S`) is refused
    (SourceTooLongError): by its header before anything is decoded, else during the decode,
    which stops just past the limit. The decode's timeout scales with the header's length.

    Refuses (BadAudioError) a file whose decodable audio is shorter than its header says by
    more than max(1 s, 1 %): a truncated or damaged upload, which would otherwise be
    published silently cut. When the header's length was only estimated or is missing
    (live-recorded WebM/Matroska has none), it cannot be trusted either way and the decoded
    length is used as is. The returned duration is always the decoded one.
    """
    info, _ = _probe_and_decode(Path(path), max_duration_s, ())
    return info


def probe_source_measured(
    path: Path,
    loudness_mixes: Sequence[str],
    *,
    max_duration_s: float | None = None,
    waveform: WaveformBuilder | None = None,
    waveform_mix: str | None = None,
) -> tuple[AudioInfo, Mapping[str, LoudnessStats]]:
    """`probe_source`, with the source's loudness measured in the same decode: one
    `LoudnessStats` per mix asked for (`media.loudness.mix_for` of each output format).
    Same checks, same errors; the audio is still read and decoded once.

    With `waveform`, that decode also fills the builder with the audio as an output made
    from `waveform_mix` (`mix_for` of that output's format; default: the source's channels
    up to stereo) has it, averaged to mono (`media.waveform.mono_filter`)."""
    info, report = _probe_and_decode(
        Path(path), max_duration_s, loudness_mixes, waveform, waveform_mix
    )
    return info, report.loudness


def _probe_and_decode(
    path: Path,
    max_duration_s: float | None,
    loudness_mixes: Sequence[str],
    waveform: WaveformBuilder | None = None,
    waveform_mix: str | None = None,
) -> tuple[AudioInfo, DecodeReport]:
    """The body of `probe_source`: the checked AudioInfo and the decode's report."""
    limit = _max_duration(max_duration_s)
    data, warnings = _run_ffprobe(path)
    info = _info_from_probe(path, data, allow_unknown_duration=True)
    # An estimated or missing header length (MP3 without Xing header, a browser-recorded
    # WebM) proves nothing, neither truncation nor excess length (a VBR file's estimate
    # can be off several times either way): the decode, capped at the limit and given
    # the limit's timeout, decides then.
    estimated = _ESTIMATED_DURATION_WARNING in warnings or info.duration_s == 0.0
    if info.duration_s > limit and not estimated:
        raise SourceTooLongError(
            f"{path.name} is {info.duration_s:.0f} s long; the limit is {limit:.0f} s "
            "(AUDIOFLOW_MAX_DURATION_S)"
        )
    stated = None if estimated else info.duration_s
    waveform_filter = ""
    if waveform is not None:
        from media.waveform import mono_filter

        mix = waveform_mix or KEEP_CHANNELS_UP_TO_STEREO.rpartition("channel_layouts=")[2]
        waveform_filter = mono_filter(mix, info.channels)
    report = check_decodes(
        path,
        timeout_s=decode_timeout_s(stated, limit),
        max_duration_s=limit,
        loudness_mixes=loudness_mixes,
        waveform=waveform,
        waveform_filter=waveform_filter,
    )
    # With an estimated length the decoded one is the truth. Unless the decoder also hit
    # damaged data: a file size that promises minutes, of which a fraction of a second
    # decodes among decoding errors, is a corrupt file, not a short one.
    tolerance = max(TRUNCATION_TOLERANCE_S, TRUNCATION_TOLERANCE_FRACTION * info.duration_s)
    if report.decoded_s < info.duration_s - tolerance:
        if not estimated:
            raise BadAudioError(
                f"{path.name} looks truncated or damaged: its header says "
                f"{info.duration_s:.1f} s but only {report.decoded_s:.1f} s of audio decode"
            )
        if report.error_lines:
            raise BadAudioError(
                f"{path.name} looks damaged: its size suggests about {info.duration_s:.1f} s "
                f"but only {report.decoded_s:.1f} s of audio decode, with "
                f"{report.error_lines} decoding errors"
            )
    if report.error_lines:
        log.warning(
            "%s decoded with %d error lines (damaged frames skipped); last: %s",
            path.name,
            report.error_lines,
            report.errors_tail,
        )
    return replace(info, duration_s=report.decoded_s), report


def verify_output(path: Path, fmt: AudioFormat, source: AudioInfo) -> AudioInfo:
    """Check an encoded file against its format and its source; return its AudioInfo.

    Checked: codec; channels (the format's, else the source's capped at 2); sample rate
    (the format's, else the source's); bitrate within 5 % for constant-bitrate formats;
    duration within 0.5 s of the source. Raises OutputCheckError listing every difference.
    """
    path = Path(path)
    try:
        info = probe(path)
    except BadAudioError as exc:
        raise OutputCheckError(f"{fmt.name} output is not readable audio: {exc}") from exc
    problems: list[str] = []
    if info.codec != fmt.codec:
        problems.append(f"codec is {info.codec!r}, expected {fmt.codec!r}")
    want_channels = fmt.channels if fmt.channels is not None else min(source.channels, 2)
    if info.channels != want_channels:
        problems.append(f"{info.channels} channels, expected {want_channels}")
    want_rate = fmt.sample_rate if fmt.sample_rate is not None else source.sample_rate
    if info.sample_rate != want_rate:
        problems.append(f"sample rate {info.sample_rate} Hz, expected {want_rate} Hz")
    if fmt.constant_bitrate and fmt.bitrate_kbps is not None:
        if info.bitrate_kbps is None:
            problems.append(f"bitrate unknown, expected {fmt.bitrate_kbps} kbit/s")
        elif abs(info.bitrate_kbps - fmt.bitrate_kbps) > BITRATE_TOLERANCE * fmt.bitrate_kbps:
            problems.append(
                f"bitrate {info.bitrate_kbps:.1f} kbit/s, expected {fmt.bitrate_kbps} kbit/s"
            )
    if abs(info.duration_s - source.duration_s) > DURATION_TOLERANCE_S:
        problems.append(
            f"duration {info.duration_s:.2f} s, source is {source.duration_s:.2f} s "
            f"(tolerance {DURATION_TOLERANCE_S} s)"
        )
    if problems:
        raise OutputCheckError(f"{fmt.name} output {path.name} is wrong: " + "; ".join(problems))
    return info
