"""Encoding one source file into one output format with ffmpeg, streaming, with progress.

Why it is built this way:

* One ffmpeg process per format, reading the source file directly. ffmpeg decodes,
  resamples and encodes frame by frame, so memory stays flat (a few MB, whatever the
  episode length) and nothing is written but the output: no intermediate WAV, no PCM
  buffer in Python. (pydub's `AudioSegment` would hold the whole episode as PCM in the
  worker: ~2.5 GB for a 4-hour stereo podcast.)
* Only the first audio stream is mapped (`-map 0:a:0`, `-vn`): cover art, video tracks and
  subtitles of the upload are dropped. Source tags and chapters are dropped too
  (`-map_metadata -1 -map_chapters -1`): outputs are derived files whose metadata the
  platform owns, and stray tags can carry the uploader's private data.
* Progress comes from `-progress pipe:1` (key=value blocks about twice a second) and is
  passed on as a fraction of the known duration; throttling is the caller's business.
* stderr goes to an unnamed temporary file, not a pipe, so a chatty ffmpeg can never block
  on a full pipe while we read stdout; its tail becomes the EncodeError message.
* The output is written to a hidden temporary file next to `dest` and renamed over it only
  after ffmpeg succeeded: a failed, cancelled or timed-out encode never leaves a partial
  file at `dest`. Any exception in the Python side (a KeyboardInterrupt, a failing progress
  callback, a flow cancellation) kills the child and removes the temporary file.
* An optional `audio_filter` (loudness normalisation from `media.loudness`) is joined to the
  format's own `-af` chain, before it, so ffmpeg gets one chain (two `-af` options would
  silently drop the first). Before: the normalisation does its own downmix, the one its
  measurement was made on, after which the format's downmix has nothing left to do.
"""

from __future__ import annotations

import logging
import os
import re
import subprocess
import tempfile
import threading
from collections.abc import Callable
from pathlib import Path

from core.formats import AudioFormat
from media import limits
from media.containers import input_args
from media.tools import ToolMissingError, ffmpeg, media_url, read_tail

__all__ = ["EncodeError", "build_command", "encode"]

log = logging.getLogger(__name__)

#: The `[mp3float @ 0x55d4...] ` prefix of ffmpeg's log lines: noise for a person.
_ADDRESS = re.compile(r"^\[[^\]]* @ 0x[0-9a-f]+\] ")

ProgressCallback = Callable[[float], None]

#: Options before the input: quiet, machine-readable progress on stdout, no stdin.
_GLOBAL_ARGS = ("-nostdin", "-hide_banner", "-v", "error", "-y", "-progress", "pipe:1", "-nostats")
#: Options after the input: first audio stream only, no source tags or chapters.
_SELECT_ARGS = ("-vn", "-sn", "-dn", "-map", "0:a:0", "-map_metadata", "-1", "-map_chapters", "-1")


class EncodeError(RuntimeError):
    """ffmpeg failed or was stopped; `stderr_tail` holds its last messages."""

    def __init__(self, message: str, *, returncode: int | None = None, stderr_tail: str = ""):
        super().__init__(message)
        self.returncode = returncode
        self.stderr_tail = stderr_tail


def _output_args(fmt: AudioFormat, audio_filter: str | None) -> list[str]:
    """`fmt`'s output options with `audio_filter` put in front of its `-af` chain (or added
    as one, before the codec options, if the format has none)."""
    args = list(fmt.ffmpeg_args)
    if not audio_filter:
        return args
    if "-af" in args:
        index = args.index("-af") + 1
        args[index] = f"{audio_filter},{args[index]}"
        return args
    return ["-af", audio_filter, *args]


def build_command(
    source: Path,
    dest: Path,
    fmt: AudioFormat,
    *,
    max_duration_s: float | None = None,
    audio_filter: str | None = None,
) -> list[str]:
    """The ffmpeg command line that encodes `source` into `dest` as `fmt`.

    `audio_filter` (e.g. `media.loudness.normalisation_filter`) runs before the format's
    own filters (its downmix) and the encoder.

    The source is opened with the container allow-list (`media.containers`) and the
    output stops just past `max_duration_s` (default `AUDIOFLOW_MAX_DURATION_S`): sources
    are checked before they are encoded, this is the bound if a check was skipped.
    """
    limit = limits.max_duration_s() if max_duration_s is None else max_duration_s
    return [
        ffmpeg(),
        *_GLOBAL_ARGS,
        *input_args(),
        "-i",
        media_url(source),
        *_SELECT_ARGS,
        *_output_args(fmt, audio_filter),
        *limits.duration_cap_args(limit),
        media_url(dest),
    ]


class _Progress:
    """Turns `-progress` lines into monotonically rising fractions for a callback."""

    def __init__(self, duration_s: float | None, callback: ProgressCallback | None) -> None:
        self.duration_s = duration_s if duration_s and duration_s > 0 else None
        self.callback = callback
        self.last = 0.0

    def feed(self, line: str) -> None:
        if self.callback is None or self.duration_s is None:
            return
        key, _, value = line.strip().partition("=")
        # out_time_ms is in microseconds too (ffmpeg bug #7345); either may say N/A.
        if key not in ("out_time_us", "out_time_ms"):
            return
        try:
            micros = int(value)
        except ValueError:
            return
        fraction = min(1.0, max(0.0, micros / 1_000_000 / self.duration_s))
        if fraction > self.last:
            self.last = fraction
            self.callback(fraction)

    def finish(self) -> None:
        if self.callback is not None and self.last < 1.0:
            self.last = 1.0
            self.callback(1.0)


#: ffmpeg messages and what they mean for a person, checked in order against stderr.
_EXPLANATIONS: tuple[tuple[str, str], ...] = (
    ("No space left on device", "no space left on the output disk"),
    ("Format not on whitelist", "the source is not one of the accepted audio containers"),
    ("Permission denied", "permission denied"),
    ("matches no streams", "the source has no audio stream"),
    ("Invalid data found when processing input", "the source is damaged or not audio"),
    ("Invalid argument", "the source is not an audio file ffmpeg can read"),
)


def _explain(stderr_tail: str) -> str:
    """One readable line from ffmpeg's stderr: a known cause if any, and its last message."""
    lines = [_ADDRESS.sub("", line).strip() for line in stderr_tail.splitlines()]
    last = next((line for line in reversed(lines) if line), "no message from ffmpeg")
    for needle, meaning in _EXPLANATIONS:
        if needle in stderr_tail:
            return f"{meaning} (ffmpeg: {last})"
    return last


def _source_duration(source: Path) -> float | None:
    """The source's duration for progress fractions when the caller did not pass one."""
    from media.probe import BadAudioError, probe

    try:
        return probe(source).duration_s
    except (BadAudioError, OSError):
        return None  # ffmpeg itself will report what is wrong with the file


def _unlink_quietly(path: Path) -> None:
    try:
        path.unlink(missing_ok=True)
    except OSError:
        log.warning("could not remove temporary file %s", path, exc_info=True)


def encode(
    source: Path,
    dest: Path,
    fmt: AudioFormat,
    *,
    duration_s: float | None = None,
    on_progress: ProgressCallback | None = None,
    timeout_s: float | None = None,
    audio_filter: str | None = None,
) -> None:
    """Encode `source` into `dest` as `fmt` with one ffmpeg process.

    `duration_s` (the source's, e.g. from `probe_source`) turns ffmpeg's position into the
    fraction passed to `on_progress`; without it the source is probed first when a callback
    is given. `on_progress` is called from this thread with rising values in (0, 1], ending
    with 1.0 on success. `timeout_s` bounds the whole encode; by default it scales with
    `duration_s` (see `media.limits`; unknown: with `AUDIOFLOW_MAX_DURATION_S`).
    `audio_filter` is an extra ffmpeg filter chain for this output (loudness
    normalisation: `media.loudness.normalisation_filter`); None encodes as before.

    Raises EncodeError (with ffmpeg's last messages) if ffmpeg fails or times out;
    `dest` is then untouched. Any exception raised while waiting, including one from
    `on_progress` or a KeyboardInterrupt, kills ffmpeg, removes the temporary file and
    propagates.
    """
    source = Path(source)
    dest = Path(dest)
    if on_progress is not None and duration_s is None:
        duration_s = _source_duration(source)
    progress = _Progress(duration_s, on_progress)
    if timeout_s is None:
        timeout_s = limits.encode_timeout_s(duration_s)

    dest.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.name}.", suffix=".part")
    os.close(fd)
    tmp = Path(tmp_name)
    cmd = build_command(source, tmp, fmt, audio_filter=audio_filter)
    timed_out = threading.Event()

    with tempfile.TemporaryFile() as errlog:
        try:
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=errlog
            )
        except FileNotFoundError as exc:
            _unlink_quietly(tmp)
            raise ToolMissingError(f"could not start ffmpeg: {exc}") from exc
        except BaseException:
            _unlink_quietly(tmp)
            raise

        def on_timeout() -> None:
            timed_out.set()
            proc.kill()

        watchdog = threading.Timer(timeout_s, on_timeout) if timeout_s else None
        try:
            if watchdog is not None:
                watchdog.daemon = True
                watchdog.start()
            assert proc.stdout is not None
            for raw in proc.stdout:
                progress.feed(raw.decode("ascii", "replace"))
            returncode = proc.wait()
        except BaseException:
            proc.kill()
            proc.wait()
            _unlink_quietly(tmp)
            raise
        finally:
            if watchdog is not None:
                watchdog.cancel()
            if proc.stdout is not None:
                proc.stdout.close()

        if returncode != 0 or timed_out.is_set():
            _unlink_quietly(tmp)
            tail = (
                read_tail(errlog)
                .replace(media_url(tmp), dest.name)
                .replace(media_url(source), source.name)
            )
            if timed_out.is_set():
                message = f"encoding {source.name} to {fmt.name} took longer than {timeout_s} s"
            else:
                message = (
                    f"ffmpeg could not encode {source.name} to {fmt.name} "
                    f"(exit status {returncode}): {_explain(tail)}"
                )
            raise EncodeError(message, returncode=returncode, stderr_tail=tail)

    if tmp.stat().st_size == 0:
        _unlink_quietly(tmp)
        raise EncodeError(f"ffmpeg wrote an empty {fmt.name} file for {source.name}")
    try:
        os.chmod(tmp, 0o644)  # mkstemp made it private; an output is an ordinary file
        os.replace(tmp, dest)
    except BaseException:
        _unlink_quietly(tmp)
        raise
    progress.finish()
