"""Scenario 1: one episode end to end (mp3_128 + mp3_320 + tiny.en transcript) against the
floor measured just before it: the same ffmpeg commands side by side plus the same engine
alone, the faster of sequential and parallel (`bench.floor`).

Issue 13: the engine alone once more, on the same episode right after the last floor, with
voice activity detection the other way round from the floor's (off, by default): real-time
factor, seconds decoded and WER against the episode's script with VAD on and off.

The gap is split along the run's timeline (Prefect's task-run times), so each second over
the floor has a name: start-up, the source check, encoding beyond the plain encode,
transcription beyond the engine alone, uploads, and the hooks at the end.
"""

from __future__ import annotations

from pathlib import Path

from bench import audio
from bench.accuracy import looped_word_errors, loops_of
from bench.config import Config
from bench.floor import Floor, TranscriberResult, measure_floor, transcribe_alone
from bench.harness import BenchStack
from bench.report import Row, ScenarioResult, verdict
from bench.scenarios.episodes import (
    FORMATS,
    PLAIN_PAYLOAD,
    EpisodeRun,
    podcast_payload,
    run_episode,
)
from bench.stats import mb, ratio, secs

TARGET_RATIO = 1.15
#: Issue 12: loudness, tags, chapters and the waveform add at most 10 % to the episode.
TARGET_PODCAST_RATIO = 1.10


def floor_rows(floor: Floor) -> list[Row]:
    t = floor.transcribe
    rows = [
        Row("floor: encode both side by side", secs(floor.encode_wall_s),
            "CPU " + " + ".join(f"{u.cpu_s:.0f}" for u in floor.encode) + " s"),
    ]
    if t is not None:
        rows.append(Row("floor: engine alone (load + transcribe)", secs(t.total_s),
                        f"load {secs(t.load_s)}, CPU {t.cpu_s:.0f} s, peak RSS "
                        f"{mb(t.maxrss_mb)}, {t.words} words"))
    rows.append(Row("floor: sequential / parallel", f"{secs(floor.sequential_s)} / "
                    f"{secs(floor.parallel_wall_s)}", f"best: {floor.best_schedule}"))
    return rows


def gap_markdown(run: EpisodeRun, floor: Floor) -> str:
    """The run's timeline next to the floor's parts."""
    t = floor.transcribe
    compare = {
        "encode step": floor.encode_wall_s,
        "transcribe step": t.total_s if t else None,
    }
    lines = ["| segment | run | floor part | over |", "|---|---:|---:|---:|"]
    for label, seconds in run.timeline():
        part = compare.get(label)
        over = seconds - part if part is not None else seconds
        lines.append(f"| {label} | {secs(seconds)} | {secs(part) if part is not None else '-'}"
                     f" | {over:+.1f} s |")
    lines.append(f"| **total** | **{secs(run.wall_s)}** | **{secs(floor.sequential_s)}** "
                 f"(sequential) | **{run.wall_s - floor.sequential_s:+.1f} s** |")
    check = run.process_span_s("ffmpeg:source-check")
    decode = run.process_span_s("ffmpeg:transcribe-decode")
    extra = []
    if check is not None:
        extra.append(f"the download step's full decode of the source (ffmpeg `-f null`) ran "
                     f"{secs(check)}")
    if decode is not None:
        extra.append(f"the transcription's ffmpeg decoder lived {secs(decode)}")
    if floor.parallel_wall_s is not None:
        extra.append(f"the parallel floor was {secs(floor.parallel_wall_s)}")
    return "\n".join(lines) + ("\n\nAlso: " + "; ".join(extra) + "." if extra else "")


def processes_markdown(run: EpisodeRun) -> str:
    """Peak RSS (VmHWM) and CPU of every process of the worker's tree during the run."""
    lines = ["| process | pid | lifetime | peak RSS (VmHWM) | CPU |", "|---|---:|---:|---:|---:|"]
    for info in sorted(run.sampler.procs.values(), key=lambda p: p.first_seen):
        lines.append(f"| {info.role} | {info.pid} | {secs(info.last_seen - info.first_seen)} | "
                     f"{mb(info.hwm_kb / 1024)} | {info.cpu_s:.1f} s |")
    lines.append(f"\nPeak of the whole tree's summed RSS at one sample: "
                 f"{mb(run.sampler.peak_total_mb())}.")
    return "\n".join(lines)


def measure(
    bench: BenchStack, config: Config
) -> tuple[Floor, EpisodeRun, EpisodeRun, list[Floor], list[TranscriberResult]]:
    """The floor for the scenario-1 episode; the episode through the stack as a podcast
    platform sends it (loudness, tags with cover, chapters, waveform); the same job without
    those (`PLAIN_PAYLOAD`, the job as before issue 12); the floor again (encode and
    transcription only). The floor used is each part's faster measurement. Last, the engine
    alone with voice activity detection the other way round from the last floor's; the
    two engine runs (VAD on first) are returned for `vad_rows`."""
    source = audio.episode(config.e2e_minutes)
    print(f"   floor for {config.e2e_minutes:g} min ...", flush=True)
    before = measure_floor(source, FORMATS)
    _print_floor("floor before", before)
    run = run_episode(bench, config.e2e_minutes,
                      extra=podcast_payload(bench, config.e2e_minutes), label=" (podcast audio)")
    plain = run_episode(bench, config.e2e_minutes, extra=PLAIN_PAYLOAD, label=" (plain)")
    floors = [before]
    if config.floor_after:
        after = measure_floor(source, FORMATS, parallel=False)
        _print_floor("floor after", after)
        floors.append(after)
    floor = before.best_of(floors[-1])
    engine = floors[-1].transcribe
    assert engine is not None
    print(f"   engine alone, VAD {'off' if engine.vad else 'on'} ...", flush=True)
    other = transcribe_alone(source, vad=not engine.vad)
    return floor, run, plain, floors, sorted([engine, other], key=lambda t: not t.vad)


def vad_rows(engines: list[TranscriberResult], source: Path) -> list[Row]:
    """Real-time factor, seconds decoded and WER of the engine alone with VAD on and off
    (`engines`: on first), on the looped speech episode, against its script."""
    loops, last_share = loops_of(audio.duration_s(source), audio.duration_s(audio.speech_clip()))
    rows = []
    wers = {}
    for t in engines:
        errors = looped_word_errors(audio.SCRIPT, t.text, loops, last_share)
        wers[t.vad] = errors.wer
        label = "on" if t.vad else "off"
        rows.append(Row(
            f"engine alone, VAD {label}: real-time factor / WER",
            f"{t.realtime_factor:.1f}x / {errors.wer:.3f}",
            f"transcribe {secs(t.transcribe_s)} for {secs(t.audio_s)} of audio",
            "", "", "",
            f"decoded {secs(t.decoded_s)}; {errors.errors} errors in "
            f"{errors.reference_words} words; load {secs(t.load_s)}",
        ))
        print(f"   engine alone, VAD {label}: {t.realtime_factor:.1f}x real time "
              f"({t.transcribe_s:.1f} s for {t.audio_s:.1f} s), decoded {t.decoded_s:.1f} s, "
              f"WER {errors.wer:.3f}", flush=True)
    on, off = engines
    if on.vad and not off.vad:
        rows.append(Row(
            "  VAD on vs off: transcription time", secs(on.transcribe_s),
            f"off {secs(off.transcribe_s)}", ratio(on.transcribe_s, off.transcribe_s),
            "WER <= off's", verdict(wers[True] <= wers[False]),
            f"WER {wers[True] - wers[False]:+.3f}",
        ))
    return rows


def _print_floor(label: str, floor: Floor) -> None:
    print(f"   {label}: encode {floor.encode_wall_s:.1f} s, sequential {floor.sequential_s:.1f} s,"
          f" parallel {floor.parallel_wall_s or 0:.1f} s", flush=True)


def run_cpu_s(run: EpisodeRun) -> float:
    """CPU seconds of the flow run's processes (everything under the worker but itself)."""
    return sum(p.cpu_s for p in run.sampler.procs.values() if p.role != "worker")


def podcast_rows(run: EpisodeRun, plain: EpisodeRun) -> list[Row]:
    """What loudness, tags, chapters and the waveform add: the two runs of one job, with
    and without them, and the steps that changed (download: the source's decode check now
    also meters loudness and feeds the waveform; encode: the gain/limiter, the post-encode
    meter and the tag writes)."""
    r = run.wall_s / plain.wall_s
    rows = [
        Row("podcast audio (loudness, tags, chapters, waveform) vs without",
            secs(run.wall_s), f"without {secs(plain.wall_s)}", ratio(run.wall_s, plain.wall_s),
            f"<= {TARGET_PODCAST_RATIO}x", verdict(r <= TARGET_PODCAST_RATIO),
            f"{run.wall_s - plain.wall_s:+.1f} s"),
    ]
    for step in ("download", "encode", "transcribe", "upload"):
        with_s, without_s = run.step_s(step), plain.step_s(step)
        if with_s is not None and without_s is not None:
            rows.append(Row(f"  {step} step, with / without", secs(with_s), secs(without_s),
                            ratio(with_s, without_s), "", "", f"{with_s - without_s:+.1f} s"))
    rows.append(Row("  CPU seconds of the flow run, with / without", f"{run_cpu_s(run):.0f} s",
                    f"{run_cpu_s(plain):.0f} s", ratio(run_cpu_s(run), run_cpu_s(plain))))
    return rows


def report(
    floor: Floor,
    run: EpisodeRun,
    plain: EpisodeRun,
    floors: list[Floor],
    engines: list[TranscriberResult],
    config: Config,
    result: ScenarioResult,
) -> None:
    result.sizes = (f"one {config.e2e_minutes:g}-minute speech episode, mp3_128 + mp3_320 + "
                    "transcript (faster-whisper tiny.en), as a podcast platform sends it "
                    "(default loudness, tags with a cover, chapters, waveform) and the same "
                    "job without those; floor measured just before and just after them, each "
                    "part at its faster measurement; then the engine alone with voice activity "
                    "detection the other way round from the floor's (issue 13)")
    best = floor.best_s
    r = run.wall_s / best
    result.add(
        Row(
            f"end to end, {config.e2e_minutes:g} min episode",
            secs(run.wall_s),
            f"floor {secs(best)} ({floor.best_schedule})",
            ratio(run.wall_s, best),
            f"<= {TARGET_RATIO}x",
            verdict(r <= TARGET_RATIO),
            "" if r <= TARGET_RATIO
            else f"{r - TARGET_RATIO:.2f}x ({run.wall_s - TARGET_RATIO * best:.0f} s) over",
        ),
        *floor_rows(floor),
        Row("CPU seconds: flow run's processes vs floor's", f"{run_cpu_s(run):.0f} s",
            f"floor {floor.cpu_s:.0f} s", ratio(run_cpu_s(run), floor.cpu_s),
            "", "", "less sensitive to other load than wall time"),
        Row("peak RSS: worker tree (sum) / flow-run process",
            f"{mb(run.sampler.peak_total_mb())} / "
            f"{mb(run.sampler.hwm_by_role_mb().get('flow-run'))}",
            "worker " + mb(run.sampler.hwm_by_role_mb().get("worker"))),
    )
    result.add(*podcast_rows(run, plain))
    result.add(*vad_rows(engines, floor.source))
    result.section("Where the time goes (timeline of the run against the floor)",
                   gap_markdown(run, floor))
    result.notes.append(
        "Floor measurements (encode / engine / sequential / parallel, s): " + "; ".join(
            f"{label} {f.encode_wall_s:.1f} / "
            f"{f.transcribe.total_s if f.transcribe else 0:.1f} / {f.sequential_s:.1f} / "
            + (f"{f.parallel_wall_s:.1f}" if f.parallel_wall_s is not None else "-")
            for label, f in zip(("before", "after"), floors, strict=False)
        )
    )
    result.section("Every process of the worker during the run", processes_markdown(run))
