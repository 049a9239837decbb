"""Peak memory of a process tree, sampled from /proc by a background thread.

The worker runs each flow run in a child Python process, which starts ffmpeg children that
live for seconds to minutes. Nothing in the app reports their memory, so a thread walks
the tree under a root pid every `interval_s` (0.2 s) and reads each process's VmRSS and
VmHWM (the kernel's own high-water mark, so a peak between two samples is not lost while
the process lives). Processes are keyed by (pid, start time) so a reused pid is a new
process, and each gets a role from its command line (flow run, encode of a format, the
source check, the transcription decoder...) so that peaks can be reported per step.

psutil is not a dependency of the project; /proc is all this needs (Linux only).
"""

from __future__ import annotations

import os
import re
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path

PAGE_KB = os.sysconf("SC_PAGE_SIZE") // 1024
CLK_TCK = os.sysconf("SC_CLK_TCK")

#: The encoder's temporary output: `.../.mp3_128.mp3.<random>.part`.
_ENCODE_PART = re.compile(r"/\.([A-Za-z0-9_]+)\.[A-Za-z0-9]+\.[^/]*\.part$")

ProcKey = tuple[int, int]  # (pid, start time in clock ticks)


@dataclass
class ProcInfo:
    """One process seen in the tree, with its peaks."""

    pid: int
    ppid: int
    role: str
    cmdline: str
    first_seen: float
    last_seen: float
    hwm_kb: int = 0
    max_rss_kb: int = 0
    cpu_s: float = 0.0
    #: When the process was first seen running a new program (Prefect 3.9's workspace
    #: supervisor execs into the engine in place: same pid, new command line).
    exec_seen: float | None = None


@dataclass
class Sample:
    """One pass over the tree: wall time and RSS (kB) of each live process."""

    t: float
    rss_kb: dict[ProcKey, int]


def classify(cmdline: list[str], is_root: bool) -> str:
    """A short role name for a process of the worker's tree, from its command line."""
    if is_root:
        return "worker"
    if not cmdline:
        return "?"
    exe = Path(cmdline[0]).name
    joined = " ".join(cmdline)
    if exe == "ffprobe":
        return "ffprobe"
    if exe == "ffmpeg":
        if "f32le" in cmdline:
            return "ffmpeg:transcribe-decode"
        if "null" in cmdline:
            return "ffmpeg:source-check"
        match = _ENCODE_PART.search(cmdline[-1])
        return f"ffmpeg:encode:{match.group(1)}" if match else "ffmpeg"
    if "_workspace_supervisor" in joined:
        return "flow-supervisor"  # Prefect 3.9's per-run process; it execs into the engine
    if "flows.launch" in joined:
        return "run-launcher"  # the pools' command; forks the run from the fork server
    if "flows.forkserver" in joined:
        return "flow-run"  # forked from the fork server (the root): the server's cmdline
    if "worker start" in joined:
        return "prefect-worker"  # the Prefect worker under the fork server
    if "prefect.engine" in joined or exe.startswith("python"):
        return "flow-run"
    return exe


def _read_stat(pid: int) -> tuple[int, int, float] | None:
    """(ppid, start time, cpu seconds) from /proc/pid/stat, or None if it is gone."""
    return _read_stat_path(Path(f"/proc/{pid}/stat"))


def _read_stat_path(path: Path) -> tuple[int, int, float] | None:
    try:
        raw = path.read_bytes()
    except OSError:
        return None
    # The command name may contain spaces and parentheses: split after the last ')'.
    fields = raw[raw.rfind(b")") + 2 :].split()
    ppid, utime, stime, start = int(fields[1]), int(fields[11]), int(fields[12]), int(fields[19])
    return ppid, start, (utime + stime) / CLK_TCK


def cpu_seconds(pid: int) -> float | None:
    """CPU seconds (user + system) a process has used so far; None if it is gone."""
    stat = _read_stat(pid)
    return stat[2] if stat is not None else None


def thread_cpu_seconds(pid: int, tid: int) -> float | None:
    """CPU seconds one thread of a process has used so far (`tid == pid`: its main thread,
    where an ASGI server runs its event loop); None if it is gone."""
    stat = _read_stat_path(Path(f"/proc/{pid}/task/{tid}/stat"))
    return stat[2] if stat is not None else None


def named_cpu_seconds(name: str) -> float:
    """CPU seconds used so far by every process whose command name is `name` (`postgres`:
    the server and all its backends, whichever database they serve), with their children
    that ended (a backend that exits moves its time to the server's)."""
    ticks = 0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if (entry / "comm").read_text().strip() != name:
                continue
            raw = (entry / "stat").read_bytes()
        except OSError:
            continue
        fields = raw[raw.rfind(b")") + 2 :].split()
        ticks += sum(int(f) for f in fields[11:15])  # utime, stime, cutime, cstime
    return ticks / CLK_TCK


def _read_mem(pid: int) -> tuple[int, int] | None:
    """(VmRSS, VmHWM) in kB, or None if the process is gone (or a zombie)."""
    try:
        text = Path(f"/proc/{pid}/status").read_text()
    except OSError:
        return None
    rss = hwm = None
    for line in text.splitlines():
        if line.startswith("VmRSS:"):
            rss = int(line.split()[1])
        elif line.startswith("VmHWM:"):
            hwm = int(line.split()[1])
    return (rss, hwm) if rss is not None and hwm is not None else None


def _cmdline(pid: int) -> list[str]:
    try:
        raw = Path(f"/proc/{pid}/cmdline").read_bytes()
    except OSError:
        return []
    return [part.decode(errors="replace") for part in raw.split(b"\0") if part]


def descendants(roots: Iterable[int]) -> list[int]:
    """The given pids and every process below them (one pass over /proc)."""
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        stat = _read_stat(int(entry.name))
        if stat is not None:
            children.setdefault(stat[0], []).append(int(entry.name))
    found: list[int] = []
    stack = list(roots)
    while stack:
        pid = stack.pop()
        found.append(pid)
        stack.extend(children.get(pid, []))
    return found


@dataclass
class TreeSampler:
    """Samples the process tree under `root_pids()` until stopped; use as a context manager."""

    root_pids: Callable[[], list[int]]
    interval_s: float = 0.2
    procs: dict[ProcKey, ProcInfo] = field(default_factory=dict)
    samples: list[Sample] = field(default_factory=list)
    _stop: threading.Event = field(default_factory=threading.Event)
    _thread: threading.Thread | None = None

    def __enter__(self) -> TreeSampler:
        self._thread = threading.Thread(target=self._run, name="tree-sampler", daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *_exc: object) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def _run(self) -> None:
        while not self._stop.is_set():
            started = time.monotonic()
            self.sample_once()
            self._stop.wait(max(0.0, self.interval_s - (time.monotonic() - started)))

    def sample_once(self) -> None:
        now = time.time()
        roots = set(self.root_pids())
        rss: dict[ProcKey, int] = {}
        for pid in descendants(roots):
            stat = _read_stat(pid)
            mem = _read_mem(pid)
            if stat is None or mem is None:
                continue
            key = (pid, stat[1])
            info = self.procs.get(key)
            if info is None:
                argv = _cmdline(pid)
                info = ProcInfo(
                    pid=pid,
                    ppid=stat[0],
                    role=classify(argv, pid in roots),
                    cmdline=" ".join(argv)[:300],
                    first_seen=now,
                    last_seen=now,
                )
                self.procs[key] = info
            elif info.role == "flow-supervisor":
                argv = _cmdline(pid)
                role = classify(argv, False)
                if argv and role != info.role:
                    info.role, info.cmdline, info.exec_seen = role, " ".join(argv)[:300], now
            info.last_seen = now
            info.hwm_kb = max(info.hwm_kb, mem[1])
            info.max_rss_kb = max(info.max_rss_kb, mem[0])
            info.cpu_s = max(info.cpu_s, stat[2])
            rss[key] = mem[0]
        self.samples.append(Sample(now, rss))

    # -- summaries -------------------------------------------------------------------------

    def peak_total_mb(self, start: float = 0.0, end: float = float("inf")) -> float | None:
        """Largest sum of RSS over the whole tree in one sample within [start, end]
        (None when no sample fell in a window shorter than the interval)."""
        totals = [sum(s.rss_kb.values()) for s in self.samples if start <= s.t <= end]
        return max(totals) / 1024 if totals else None

    def peak_by_role_mb(self, start: float = 0.0, end: float = float("inf")) -> dict[str, float]:
        """Per role, the largest RSS of any one process in that role within [start, end]."""
        peaks: dict[str, int] = {}
        for sample in self.samples:
            if not start <= sample.t <= end:
                continue
            for key, kb in sample.rss_kb.items():
                role = self.procs[key].role
                peaks[role] = max(peaks.get(role, 0), kb)
        return {role: kb / 1024 for role, kb in sorted(peaks.items())}

    def hwm_by_role_mb(self) -> dict[str, float]:
        """Per role, the highest VmHWM (lifetime peak) of any one process in that role."""
        peaks: dict[str, int] = {}
        for info in self.procs.values():
            peaks[info.role] = max(peaks.get(info.role, 0), info.hwm_kb)
        return {role: kb / 1024 for role, kb in sorted(peaks.items())}

    def roles(self, prefix: str) -> list[ProcInfo]:
        """Processes whose role starts with `prefix`, in the order they appeared."""
        return sorted(
            (p for p in self.procs.values() if p.role.startswith(prefix)),
            key=lambda p: p.first_seen,
        )
