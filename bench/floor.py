"""The floor: the same work as the flow, done by plain processes with no orchestration.

Encoding runs the flow's own ffmpeg command lines (`media.encode.build_command`) side
by side, one process per format, as the flow does. Transcription runs the configured engine
alone (`bench.transcriber`). Both are timed sequentially (encodes, then transcription: what
the flow does) and in parallel (all at once); the floor is the faster of the two, so the
flow is compared with the best schedule of its own work, not with its own schedule.
"""

from __future__ import annotations

import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

from bench.audio import OUT_DIR
from core.formats import get_format
from media.encode import build_command


@dataclass(frozen=True)
class ChildUsage:
    """Wall and CPU seconds of one finished child process."""

    wall_s: float
    cpu_s: float


@dataclass(frozen=True)
class TranscriberResult:
    """What `bench.transcriber` reported, plus its process's CPU time."""

    load_s: float
    transcribe_s: float
    segments: int
    words: int
    maxrss_mb: float
    cpu_s: float
    #: Voice activity detection on; seconds of audio, and of them decoded by the model.
    vad: bool = True
    audio_s: float = 0.0
    decoded_s: float = 0.0
    #: The transcript's text (for WER against the episode's script).
    text: str = ""

    @property
    def total_s(self) -> float:
        return self.load_s + self.transcribe_s

    @property
    def realtime_factor(self) -> float:
        """Seconds of audio per second of transcription (model loading not counted):
        above 1 is faster than real time."""
        return self.audio_s / self.transcribe_s if self.transcribe_s else 0.0


@dataclass(frozen=True)
class Floor:
    """Floor measurements for one source file and set of formats."""

    source: Path
    formats: tuple[str, ...]
    encode: list[ChildUsage]
    encode_wall_s: float
    transcribe: TranscriberResult | None
    parallel_wall_s: float | None

    @property
    def sequential_s(self) -> float:
        return self.encode_wall_s + (self.transcribe.total_s if self.transcribe else 0.0)

    @property
    def best_s(self) -> float:
        if self.parallel_wall_s is None:
            return self.sequential_s
        return min(self.sequential_s, self.parallel_wall_s)

    @property
    def cpu_s(self) -> float:
        """CPU seconds of the floor's processes (the transcriber's includes its imports)."""
        return sum(u.cpu_s for u in self.encode) + (
            self.transcribe.cpu_s if self.transcribe else 0.0
        )

    def best_of(self, other: Floor) -> Floor:
        """Each part at its faster measurement: on a shared machine, the slower of two
        identical measurements is the one other people's work got into."""
        t = self.transcribe
        if other.transcribe and (t is None or other.transcribe.total_s < t.total_s):
            t = other.transcribe
        walls = [w for w in (self.parallel_wall_s, other.parallel_wall_s) if w is not None]
        faster_encode = self if self.encode_wall_s <= other.encode_wall_s else other
        return Floor(
            source=self.source,
            formats=self.formats,
            encode=faster_encode.encode,
            encode_wall_s=faster_encode.encode_wall_s,
            transcribe=t,
            parallel_wall_s=min(walls) if walls else None,
        )

    @property
    def best_schedule(self) -> str:
        if self.parallel_wall_s is not None and self.parallel_wall_s < self.sequential_s:
            return "parallel"
        return "sequential"


def _wait(pid: int, started: float) -> ChildUsage:
    """Reap `pid`, returning its wall time since `started` and its CPU time."""
    _pid, status, usage = os.wait4(pid, 0)
    code = os.waitstatus_to_exitcode(status)
    if code != 0:
        raise RuntimeError(f"floor process {pid} exited with {code}")
    return ChildUsage(
        wall_s=time.monotonic() - started,
        cpu_s=usage.ru_utime + usage.ru_stime,
    )


def _start_encoders(source: Path, formats: tuple[str, ...], workdir: Path) -> list[int]:
    pids = []
    for name in formats:
        fmt = get_format(name)
        cmd = build_command(source, workdir / f"{name}.{fmt.extension}", fmt)
        proc = subprocess.Popen(
            cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
        )
        pids.append(proc.pid)
        # os.wait4 reaps it; keep Popen from trying again (and warning) when collected.
        proc.returncode = 0
    return pids


class _Transcriber:
    """`bench.transcriber` started and waiting at its `ready` line."""

    def __init__(self, source: Path, env: dict[str, str] | None = None) -> None:
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "bench.transcriber", str(source)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            text=True,
            cwd=Path(__file__).resolve().parent.parent,
            env={**os.environ, **env} if env else None,
        )
        assert self.proc.stdout is not None and self.proc.stdin is not None
        line = self.proc.stdout.readline().strip()
        if line != "ready":
            self.proc.kill()
            raise RuntimeError(f"bench.transcriber did not start: {line!r}")

    def go(self) -> None:
        assert self.proc.stdin is not None
        self.proc.stdin.write("go\n")
        self.proc.stdin.flush()

    def result(self) -> TranscriberResult:
        assert self.proc.stdout is not None
        line = self.proc.stdout.readline()
        usage_before = resource.getrusage(resource.RUSAGE_CHILDREN)
        self.proc.wait()
        usage_after = resource.getrusage(resource.RUSAGE_CHILDREN)
        if self.proc.returncode != 0 or not line:
            raise RuntimeError(f"bench.transcriber failed with {self.proc.returncode}")
        data = json.loads(line)
        return TranscriberResult(
            load_s=data["load_s"],
            transcribe_s=data["transcribe_s"],
            segments=data["segments"],
            words=data["words"],
            maxrss_mb=data["maxrss_mb"],
            vad=data["vad"],
            audio_s=data["audio_s"],
            decoded_s=data["decoded_s"],
            text=data["text"],
            cpu_s=(usage_after.ru_utime + usage_after.ru_stime)
            - (usage_before.ru_utime + usage_before.ru_stime),
        )


def transcribe_alone(source: Path, *, vad: bool) -> TranscriberResult:
    """The engine alone on `source` with voice activity detection on or off (the rest of
    its settings as the floor's), nothing else running."""
    alone = _Transcriber(source, {"AUDIOFLOW_WHISPER_VAD": "true" if vad else "false"})
    alone.go()
    return alone.result()


def encode_side_by_side(source: Path, formats: tuple[str, ...]) -> tuple[float, list[ChildUsage]]:
    """Every format at once, one ffmpeg each (as the flow does): wall time and per-process use."""
    with tempfile.TemporaryDirectory(dir=OUT_DIR, prefix="floor-") as tmp:
        started = time.monotonic()
        pids = _start_encoders(source, formats, Path(tmp))
        usages = [_wait(pid, started) for pid in pids]
        return time.monotonic() - started, usages


def encode_back_to_back(sources: list[Path], format_name: str) -> tuple[float, list[ChildUsage]]:
    """One format of every source, one ffmpeg at a time (the flow's command line, as in
    `encode_side_by_side`): the wall time of the whole series and each process's use."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    fmt = get_format(format_name)
    usages = []
    with tempfile.TemporaryDirectory(dir=OUT_DIR, prefix="floor-") as tmp:
        started = time.monotonic()
        for n, source in enumerate(sources):
            one_started = time.monotonic()
            cmd = build_command(source, Path(tmp) / f"{n}.{fmt.extension}", fmt)
            proc = subprocess.Popen(
                cmd, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
            proc.returncode = 0  # os.wait4 reaps it (see `_start_encoders`)
            usages.append(_wait(proc.pid, one_started))
        return time.monotonic() - started, usages


def measure_floor(
    source: Path, formats: tuple[str, ...], *, transcribe: bool = True, parallel: bool = True
) -> Floor:
    """Encode side by side, then transcribe alone; then (if asked) everything at once."""
    OUT_DIR.mkdir(parents=True, exist_ok=True)
    encode_wall, usages = encode_side_by_side(source, formats)
    transcription: TranscriberResult | None = None
    parallel_wall: float | None = None
    if transcribe:
        alone = _Transcriber(source)
        alone.go()
        transcription = alone.result()
        if parallel:
            together = _Transcriber(source)
            with tempfile.TemporaryDirectory(dir=OUT_DIR, prefix="floor-") as tmp:
                started = time.monotonic()
                pids = _start_encoders(source, formats, Path(tmp))
                together.go()
                together.result()
                for pid in pids:
                    _wait(pid, started)
                parallel_wall = time.monotonic() - started
    return Floor(
        source=source,
        formats=formats,
        encode=usages,
        encode_wall_s=encode_wall,
        transcribe=transcription,
        parallel_wall_s=parallel_wall,
    )
