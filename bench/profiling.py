"""Sampling profiles with py-spy, attached to running processes of the stack, and summaries.

py-spy attaches from outside (no change to the app, no restart), follows new child
processes (`--subprocesses`: each flow run is a new process), and with `--nonblocking`
does not pause the target, so the profiled run is barely slowed. Profiles are taken in
separate, extra runs, never in the timed ones. Raw collapsed stacks are kept under
`bench/out/profiles/`; RESULTS.md gets a summary: self time by package and the heaviest
frames by inclusive time.

py-spy is optional: without it the summaries say so and everything else still runs.
(It is in the dev extra, so `make bench` installs it.)
"""

from __future__ import annotations

import contextlib
import re
import shutil
import signal
import subprocess
import sys
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from bench.audio import OUT_DIR

PROFILE_DIR = OUT_DIR / "profiles"
_FRAME = re.compile(r"^(?P<func>.*?) \((?P<file>[^()]*?)(?::\d+)?\)$")
_SITE = re.compile(r".*/(?:site|dist)-packages/")
_PROJECT = str(Path(__file__).resolve().parent.parent) + "/"


def py_spy() -> str | None:
    """The py-spy executable next to this interpreter, or on PATH; None if absent."""
    local = Path(sys.executable).parent / "py-spy"
    if local.exists():
        return str(local)
    return shutil.which("py-spy")


@dataclass
class Profile:
    """A finished recording: where it is and what it says (empty if it could not run)."""

    path: Path
    problem: str | None = None
    stacks: Counter[str] = field(default_factory=Counter)

    @property
    def samples(self) -> int:
        return sum(self.stacks.values())


def _package(path: str) -> str:
    """`sqlalchemy`, `litestar`, `audioflow:api`, `stdlib:json`... for a frame's file."""
    site = _SITE.match(path)  # first: the venv lives inside the project directory
    if site:
        top = path[site.end() :].split("/")[0]
        return top.removesuffix(".py")
    if path.startswith(_PROJECT):
        return "audioflow:" + path[len(_PROJECT) :].split("/")[0]
    if path.startswith("<"):
        return path
    name = Path(path).name.removesuffix(".py")
    parent = Path(path).parent.name
    return f"stdlib:{parent if parent and not parent.startswith('python3') else name}"


def _frames(line: str) -> tuple[list[tuple[str, str]], int]:
    stack, _, count = line.rpartition(" ")
    frames = []
    for raw in stack.split(";"):
        match = _FRAME.match(raw)
        if match:  # skips py-spy's "process 123:..." and "thread ..." pseudo-frames
            frames.append((match["func"], match["file"]))
    return frames, int(count)


#: Frames on nearly every stack (thread and event-loop plumbing, import machinery, CLI entry
#: points): left out of the inclusive table so that the frames that explain the time show.
_PLUMBING = re.compile(
    r"(threading\.py|concurrent/futures/|asyncio/|<frozen |contextlib\.py|runpy|"
    r"click/|cyclopts/|anyio/_backends|uvicorn/(main|server|_compat)\.py|prefect/cli/|"
    r"/bin/(prefect|uvicorn)$)"
)


def _short(file: str) -> str:
    site = _SITE.match(file)
    if site:
        return file[site.end() :]
    if file.startswith(_PROJECT):
        return file[len(_PROJECT) :]
    return re.sub(r"^.*/lib/python3\.\d+/", "", file)


@contextlib.contextmanager
def record(
    pid: int, name: str, *, subprocesses: bool = False, rate: int = 100
) -> Iterator[Profile]:
    """Profile `pid` (and its children) while the block runs; the Profile fills on exit."""
    PROFILE_DIR.mkdir(parents=True, exist_ok=True)
    profile = Profile(PROFILE_DIR / f"{name}.txt")
    exe = py_spy()
    if exe is None:
        profile.problem = "py-spy is not installed (pip install py-spy)"
        yield profile
        return
    argv = [exe, "record", "--pid", str(pid), "--rate", str(rate), "--format", "raw",
            "--output", str(profile.path), "--nonblocking", "--full-filenames"]
    if subprocesses:
        argv.append("--subprocesses")
    log = profile.path.with_suffix(".log").open("w")
    proc = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    try:
        yield profile
    finally:
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=60)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
        log.close()
        if profile.path.exists():
            for line in profile.path.read_text(errors="replace").splitlines():
                stack, _, count = line.rpartition(" ")
                if stack and count.isdigit():
                    profile.stacks[stack] += int(count)
        if not profile.stacks:
            profile.problem = (
                f"py-spy recorded nothing (see {profile.path.with_suffix('.log')})"
            )


def by_package(profile: Profile) -> list[tuple[str, float]]:
    """Share of samples whose innermost Python frame is in each package (self time)."""
    counts: Counter[str] = Counter()
    for line, count in profile.stacks.items():
        frames, _ = _frames(f"{line} {count}")
        if frames:
            counts[_package(frames[-1][1])] += count
    total = sum(counts.values()) or 1
    return [(pkg, n / total) for pkg, n in counts.most_common()]


def inclusive(
    profile: Profile, *, only: str | None = None, top: int = 12
) -> list[tuple[str, float]]:
    """Heaviest frames by inclusive share (each frame counted once per sample), without
    the plumbing frames every stack has.

    `only` keeps frames whose file path contains it (e.g. the project directory).
    """
    counts: Counter[str] = Counter()
    total = 0
    for line, count in profile.stacks.items():
        frames, _ = _frames(f"{line} {count}")
        total += count
        seen = set()
        for func, file in frames:
            if only is not None and only not in file:
                continue
            if _PLUMBING.search(file):
                continue
            label = f"{func} ({_short(file)})"
            if label not in seen:
                seen.add(label)
                counts[label] += count
    total = total or 1
    return [(label, n / total) for label, n in counts.most_common(top)]


def summary_markdown(profile: Profile, *, project_only: bool = False, top: int = 12) -> str:
    """A few lines of markdown: self time by package, then the heaviest frames."""
    if profile.problem:
        return f"_No profile: {profile.problem}._"
    packages = ", ".join(f"{pkg} {share:.0%}" for pkg, share in by_package(profile)[:10])
    lines = [
        f"{profile.samples} samples (raw stacks: `{_short(str(profile.path))}`).",
        "",
        f"Self time by package: {packages}.",
        "",
        "| inclusive | frame |",
        "|---:|---|",
    ]
    only = _PROJECT if project_only else None
    for label, share in inclusive(profile, only=only, top=top):
        lines.append(f"| {share:.0%} | `{label}` |")
    return "\n".join(lines)
