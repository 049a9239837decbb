"""Results: one row per figure (measured, baseline from the same run, ratio, target, verdict),
the terminal table, and bench/RESULTS.md with the machine, the date and each scenario's load.

Targets are reported, never asserted: a benchmark that fails the build on a noisy shared
machine gets switched off; one that says "FAIL by 0.3x, and here is why" gets read.
"""

from __future__ import annotations

import contextlib
import os
import platform
import subprocess
import sys
import time
import traceback
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from importlib import metadata
from pathlib import Path

RESULTS_PATH = Path(__file__).resolve().parent / "RESULTS.md"

METHOD = (
    "One stack for every scenario, started by `cli.stack.running_stack` as the e2e tests and "
    "`audioflow up` start it (one process worker with its shipped limit of 2 concurrent runs "
    "and one transcription slot, API under one uvicorn worker), on throwaway PostgreSQL "
    "databases for the app and for Prefect's server (as the README advises for production) "
    "and the local object store.",
    "Deliberate differences from a bare `running_stack`: the `reprocessing` deployment's "
    "5-minute schedule is paused (a maintenance run inside a timed run would add a process "
    "start to it), and `AUDIOFLOW_API_KEY` is set, as in production.",
    "Sources are generated speech (one espeak-ng clip, looped by stream copy) as 192 kbit/s "
    "stereo 44.1 kHz MP3, placed straight into the local store.",
    "Memory is sampled from /proc every 0.2 s over the worker's process tree (VmRSS, and each "
    "process's VmHWM); tree figures are sums of RSS, so shared pages count more than once.",
    "Profiles (py-spy, `--nonblocking`) are taken in extra runs, never in timed ones.",
)


@dataclass
class Row:
    """One figure. Strings, formatted by the scenario, because units differ per row."""

    metric: str
    measured: str
    baseline: str = ""
    ratio: str = ""
    target: str = ""
    verdict: str = ""  # PASS, FAIL, or empty for figures without a target
    gap: str = ""


@dataclass
class ScenarioResult:
    """What one scenario measured, with the machine load around it."""

    key: str
    title: str
    sizes: str = ""
    rows: list[Row] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    sections: list[tuple[str, str]] = field(default_factory=list)
    load_start: tuple[float, float, float] = (0.0, 0.0, 0.0)
    load_end: tuple[float, float, float] = (0.0, 0.0, 0.0)
    started: float = 0.0
    ended: float = 0.0
    error: str | None = None

    def add(self, *rows: Row) -> None:
        self.rows.extend(rows)

    def section(self, heading: str, body: str) -> None:
        self.sections.append((heading, body))


def verdict(ok: bool) -> str:
    return "PASS" if ok else "FAIL"


@contextlib.contextmanager
def scenario(results: list[ScenarioResult], key: str, title: str) -> Iterator[ScenarioResult]:
    """Time a scenario and record the load average around it; a failure is recorded, not
    raised, so one broken scenario does not cost the figures of the others."""
    result = ScenarioResult(key=key, title=title)
    results.append(result)
    result.started = time.time()
    result.load_start = os.getloadavg()
    print(f"\n== {key}. {title} (load {_load(result.load_start)})", flush=True)
    try:
        yield result
    except Exception as exc:
        result.error = f"{type(exc).__name__}: {exc}"
        print(traceback.format_exc(), file=sys.stderr, flush=True)
    finally:
        result.ended = time.time()
        result.load_end = os.getloadavg()
        print(
            f"== {key} took {result.ended - result.started:.0f} s "
            f"(load {_load(result.load_end)})",
            flush=True,
        )


def _load(load: tuple[float, float, float]) -> str:
    return " / ".join(f"{x:.2f}" for x in load)


# -- the machine -----------------------------------------------------------------------------


def _first_line(argv: list[str]) -> str:
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10).stdout
    except (OSError, subprocess.SubprocessError):
        return "?"
    return out.splitlines()[0] if out else "?"


def machine() -> dict[str, str]:
    """What the figures depend on: CPU, cores, memory, kernel, Python and key packages."""
    cpu = "?"
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    mem_gb = os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 1024**3
    versions = []
    for package in ("prefect", "litestar", "uvicorn", "sqlalchemy", "faster-whisper",
                    "ctranslate2", "httpx"):
        with contextlib.suppress(metadata.PackageNotFoundError):
            versions.append(f"{package} {metadata.version(package)}")
    commit = _first_line(["git", "-C", str(RESULTS_PATH.parent), "rev-parse", "--short", "HEAD"])
    dirty = _first_line(["git", "-C", str(RESULTS_PATH.parent.parent), "status", "--porcelain",
                         "--", "api", "core", "db", "flows", "cli", "prefect.yaml"])
    return {
        "commit": commit + (" (with uncommitted app changes)" if dirty not in ("", "?") else ""),
        "cpu": f"{cpu}, {os.cpu_count()} cores (affinity {len(os.sched_getaffinity(0))})",
        "memory": f"{mem_gb:.1f} GiB",
        "kernel": platform.release(),
        "python": platform.python_version(),
        "ffmpeg": _first_line(["ffmpeg", "-version"]).replace(" Copyright", "").split(" (c)")[0],
        "postgresql": _first_line(["psql", "--version"]),
        "packages": ", ".join(versions),
    }


# -- output ----------------------------------------------------------------------------------

_COLUMNS = ("scenario", "metric", "measured", "baseline (same run)", "ratio", "target",
            "result", "gap")


def _cells(result: ScenarioResult, row: Row) -> tuple[str, ...]:
    return (result.key, row.metric, row.measured, row.baseline, row.ratio, row.target,
            row.verdict, row.gap)


def table_text(results: list[ScenarioResult]) -> str:
    """The summary table for a terminal."""
    rows: list[tuple[str, ...]] = [_COLUMNS]
    for result in results:
        if result.error:
            rows.append((result.key, result.title, "ERROR", result.error[:60], "", "", "", ""))
        rows.extend(_cells(result, row) for row in result.rows)
    widths = [min(48, max(len(r[i]) for r in rows)) for i in range(len(_COLUMNS))]
    out = []
    for n, row in enumerate(rows):
        out.append("  ".join(cell[: widths[i]].ljust(widths[i]) for i, cell in enumerate(row)))
        if n == 0:
            out.append("  ".join("-" * w for w in widths))
    return "\n".join(out)


def _md(cell: str) -> str:
    return cell.replace("|", "\\|")


def table_markdown(results: list[ScenarioResult]) -> str:
    lines = ["| " + " | ".join(_COLUMNS) + " |", "|" + "---|" * len(_COLUMNS)]
    for result in results:
        if result.error:
            lines.append(f"| {result.key} | {_md(result.title)} | **ERROR** | "
                         f"{_md(result.error)} | | | | |")
        for row in result.rows:
            lines.append("| " + " | ".join(_md(c) for c in _cells(result, row)) + " |")
    return "\n".join(lines)


def write_results(
    results: list[ScenarioResult],
    *,
    mode: str,
    scaled: list[str],
    started: float,
    path: Path = RESULTS_PATH,
) -> Path:
    """Write RESULTS.md: machine, date, mode, the table, then each scenario's details."""
    info = machine()
    when = datetime.fromtimestamp(started, UTC).strftime("%Y-%m-%d %H:%M UTC")
    lines = [
        "# audioflow benchmark results",
        "",
        f"Generated by `python -m bench` ({mode}) on {when}; the run took "
        f"{(time.time() - started) / 60:.1f} min. Every ratio is against a baseline measured "
        "in the same run on the same machine. Targets are reported, never asserted.",
        "",
        "## Machine",
        "",
        *[f"- **{key}**: {value}" for key, value in info.items()],
        "- **load average** (1/5/15 min) at the start and end of each scenario: see each "
        "scenario below. Other engineers run tests on this machine, so a 1-minute load above "
        "2 means the benchmark shared the two cores.",
        "",
    ]
    if scaled:
        lines += ["## Scaled down", "", *[f"- {item}" for item in scaled], ""]
    lines += ["## Method", "", *[f"- {item}" for item in METHOD], ""]
    lines += ["## Summary", "", table_markdown(results), ""]
    for result in results:
        lines += [
            f"## {result.key}. {result.title}",
            "",
            f"- **ran**: {result.sizes or '-'}",
            f"- **time**: {datetime.fromtimestamp(result.started, UTC):%H:%M:%S} to "
            f"{datetime.fromtimestamp(result.ended, UTC):%H:%M:%S} UTC "
            f"({result.ended - result.started:.0f} s)",
            f"- **load average** start {_load(result.load_start)}, "
            f"end {_load(result.load_end)}",
        ]
        if result.error:
            lines.append(f"- **error**: `{result.error}`")
        lines += [f"- {note}" for note in result.notes]
        lines.append("")
        for heading, body in result.sections:
            lines += [f"### {heading}", "", body.rstrip(), ""]
    path.write_text("\n".join(lines))
    return path
