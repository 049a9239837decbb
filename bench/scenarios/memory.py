"""Scenario 2: peak memory against episode length, per step and per process.

Each episode is processed through the stack with the worker's tree sampled every 0.2 s;
samples are assigned to steps by Prefect's task-run times. What should hold: encoding is
flat (ffmpeg streams), and transcription is bounded by its 10-minute window, whatever the
length; the flow-run process's peak is compared with the engine alone (the floor's
transcriber, whose model and window are the same).
"""

from __future__ import annotations

from bench.config import Config
from bench.floor import Floor
from bench.report import Row, ScenarioResult, verdict
from bench.scenarios.episodes import STEP_ORDER, EpisodeRun
from bench.stats import mb

TARGET_RATIO = 1.5


def _step_table(runs: list[EpisodeRun]) -> str:
    lines = [
        "| episode | step | seconds | tree RSS (sum) | flow-run process | largest ffmpeg |",
        "|---|---|---:|---:|---:|---:|",
    ]
    for run in runs:
        steps = run.steps()
        for step in STEP_ORDER:
            if step not in steps:
                continue
            start, end = steps[step]
            roles = run.sampler.peak_by_role_mb(start, end)
            ffmpeg = max((v for k, v in roles.items() if k.startswith("ffmpeg")), default=0.0)
            lines.append(
                f"| {run.minutes:g} min | {step} | {end - start:.1f} | "
                f"{mb(run.sampler.peak_total_mb(start, end))} | {mb(roles.get('flow-run'))} | "
                f"{mb(ffmpeg) if ffmpeg else '-'} |"
            )
    return "\n".join(lines)


def _role_table(runs: list[EpisodeRun]) -> str:
    roles = sorted({role for run in runs for role in run.sampler.hwm_by_role_mb()})
    lines = ["| process (peak VmHWM) | " + " | ".join(f"{r.minutes:g} min" for r in runs) + " |",
             "|---|" + "---:|" * len(runs)]
    for role in roles:
        cells = [mb(run.sampler.hwm_by_role_mb().get(role)) for run in runs]
        lines.append(f"| {role} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _peak_in(run: EpisodeRun, step: str, role: str | None = None) -> float:
    window = run.steps().get(step)
    if window is None:
        return 0.0
    if role is None:
        return run.sampler.peak_total_mb(*window) or 0.0
    roles = run.sampler.peak_by_role_mb(*window)
    if role == "ffmpeg":
        return max((v for k, v in roles.items() if k.startswith("ffmpeg")), default=0.0)
    return roles.get(role, 0.0)


def report(
    runs: list[EpisodeRun], floor: Floor | None, config: Config, result: ScenarioResult
) -> None:
    runs = sorted(runs, key=lambda r: r.minutes)
    result.sizes = ", ".join(f"{r.minutes:g}" for r in runs) + " minute episodes"
    short, long = runs[0], runs[-1]
    label = f"{long.minutes:g} vs {short.minutes:g} min"
    peak_short = short.sampler.peak_total_mb() or 0.0
    peak_long = long.sampler.peak_total_mb() or 0.0
    r = peak_long / peak_short if peak_short else float("inf")
    result.add(
        Row(f"peak worker-tree RSS, {label}", f"{mb(peak_long)}", f"{mb(peak_short)}",
            f"{r:.2f}x", f"<= {TARGET_RATIO}x", verdict(r <= TARGET_RATIO),
            "" if r <= TARGET_RATIO else f"{r - TARGET_RATIO:.2f}x over"),
    )
    enc_short, enc_long = _peak_in(short, "encode"), _peak_in(long, "encode")
    result.add(Row(f"encode step, tree RSS, {label}", mb(enc_long), mb(enc_short),
                   f"{enc_long / enc_short:.2f}x" if enc_short else "-", "flat"))
    tr_short = _peak_in(short, "transcribe", "flow-run")
    tr_long = _peak_in(long, "transcribe", "flow-run")
    engine = floor.transcribe.maxrss_mb if floor and floor.transcribe else None
    result.add(Row(f"transcribe step, flow-run RSS, {label}", mb(tr_long), mb(tr_short),
                   f"{tr_long / tr_short:.2f}x" if tr_short else "-",
                   "bounded (10-min window)",
                   "",
                   f"engine alone: {mb(engine)}" if engine else ""))
    result.section("Peak RSS per step (samples every 0.2 s, assigned by Prefect task-run times)",
                   _step_table(runs))
    if long.minutes <= 10:
        result.notes.append(
            "The longest episode fits in one 10-minute transcription window, so these sizes "
            "cannot show whether transcription memory stays bounded past one window."
        )
    result.section("Peak RSS per process role (VmHWM)", _role_table(runs))
    if engine:
        result.notes.append(
            f"The engine alone (model + one window, floor run of the {config.e2e_minutes:g}-min "
            f"episode) peaked at {mb(engine)}: the flow-run process's transcription share is "
            "that plus the Prefect/flow process itself."
        )
