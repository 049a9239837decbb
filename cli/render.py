"""Human-readable output: a progress bar, task tables and a task's result."""

from __future__ import annotations

import sys
from typing import Any, TextIO


class ProgressBar:
    """Redraws one line on a terminal; prints a line per change elsewhere (CI logs)."""

    def __init__(self, out: TextIO = sys.stdout, width: int = 30) -> None:
        self.out = out
        self.width = width
        self.tty = out.isatty()

    def update(self, task: dict[str, Any]) -> None:
        progress = int(task.get("progress") or 0)
        filled = self.width * progress // 100
        bar = "#" * filled + "." * (self.width - filled)
        step = task.get("currentStep") or task["status"]
        line = f"[{bar}] {progress:3d}%  {task['status']:<10} {step}"
        if self.tty:
            self.out.write("\r" + line.ljust(100))
            if task["status"] in {"done", "failed", "cancelled"}:
                self.out.write("\n")
        else:
            self.out.write(line + "\n")
        self.out.flush()


def table(rows: list[list[str]], headers: list[str]) -> str:
    """A plain aligned text table."""
    widths = [max(len(str(x)) for x in col) for col in zip(headers, *rows, strict=False)]
    lines = ["  ".join(h.ljust(w) for h, w in zip(headers, widths, strict=True))]
    lines.append("  ".join("-" * w for w in widths))
    for row in rows:
        lines.append("  ".join(str(c).ljust(w) for c, w in zip(row, widths, strict=True)))
    return "\n".join(lines)


def tasks_table(tasks: list[dict[str, Any]]) -> str:
    rows = [
        [
            t["id"],
            t["status"],
            f"{t['progress']}%",
            t.get("episodeId") or "",
            t.get("currentStep") or "",
            t["createdAt"][:19],
            (t.get("error") or "")[:60],
        ]
        for t in tasks
    ]
    return table(rows, ["task", "status", "progress", "episode", "step", "created", "error"])


def _loudness(figures: dict[str, Any] | None) -> str:
    """`-16.0 LUFS, -1.4 dBTP` from an output's measured loudness ('' when not measured)."""
    if not figures or figures.get("integratedLufs") is None:
        return ""
    peak = figures.get("truePeakDbtp")
    text = f"{figures['integratedLufs']:.1f} LUFS"
    return text + (f", {peak:.1f} dBTP" if peak is not None else "")


def task_details(task: dict[str, Any], storage: str | None = None) -> str:
    """Everything a person wants to know about one task, outputs first."""
    lines = [
        f"task      {task['id']}  ({task['status']}, {task['progress']}%, "
        f"attempt {task['attempts']})",
        f"workflow  {task.get('workflowId')}  "
        + (
            f"(Prefect flow run {task['workflowInstanceId']})"
            if task.get("workflowInstanceId")
            else "(its Prefect flow run is being created)"
        ),
        f"episode   {task.get('episodeId')}",
    ]
    if task.get("error"):
        lines.append(f"error     {task['error']} [{task.get('errorKind') or 'unknown'}]")
    result = task.get("result") or {}
    outputs = result.get("outputs") or {}
    if outputs:
        # A result the reconciler rebuilt from the store has only keys and sizes.
        rows = [
            [
                name,
                f"{o['size'] / 1024:.0f} KiB" if o.get("size") is not None else "",
                f"{o['durationS']:.2f} s" if o.get("durationS") is not None else "",
                f"{o['bitrateKbps']} kb/s" if o.get("bitrateKbps") else "",
                f"{o['codec']} {o.get('channels')}ch {o.get('sampleRate')} Hz"
                if o.get("codec")
                else "",
                _loudness(o.get("loudness")),
                o["key"],
            ]
            for name, o in outputs.items()
        ]
        headers = ["format", "size", "duration", "bitrate", "codec", "loudness", "key"]
        lines += ["", table(rows, headers)]
    transcript = result.get("transcript")
    if transcript:
        # A result the reconciler rebuilt from the store has only the keys.
        about = []
        if transcript.get("language"):
            probability = transcript.get("languageProbability")
            about.append(
                f"language {transcript['language']}"
                + (f" ({probability:.0%} sure)" if probability is not None else "")
            )
        if transcript.get("segments") is not None:
            about.append(f"{transcript['segments']} segments")
        if transcript.get("droppedSegments"):
            about.append(f"{transcript['droppedSegments']} dropped as likely hallucinations")
        lines += ["", f"transcript  {', '.join(about)}".rstrip()]
        lines += [f"  > {line}" for line in transcript.get("firstLines", [])]
        lines += [f"  {name:<5} {key}" for name, key in transcript["keys"].items()]
    files = []
    chapters = result.get("chapters")
    if chapters:
        about = [f"{chapters['count']} chapters"] if chapters.get("count") is not None else []
        about += [f"from the {chapters['origin']}"] if chapters.get("origin") else []
        detail = f"  ({', '.join(about)})" if about else ""
        files.append(f"chapters    {chapters['key']}{detail}")
    waveform = result.get("waveform")
    if waveform:
        files.append(f"waveform    {waveform['key']}")
    if files:
        lines += ["", *files]
    where = storage or result.get("storage")
    if where:
        lines += ["", f"files are in {where}"]
    return "\n".join(lines)
