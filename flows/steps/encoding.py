"""Encode the source into one output format and check the result by decoding it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.formats import get_format
from flows.progress import WorkflowProgressReporter
from flows.steps.options import step
from media.encode import encode
from media.probe import AudioInfo, verify_output


@dataclass(frozen=True)
class EncodedOutput:
    """One checked output file, ready to upload."""

    format_name: str
    path: Path
    info: AudioInfo


@step("encode", task_run_name="encode-{format_name}")
def encode_format(
    source: Path,
    source_info: AudioInfo,
    format_name: str,
    workdir: Path,
    reporter: WorkflowProgressReporter,
) -> EncodedOutput:
    """One ffmpeg process straight from the source file: flat memory whatever the length."""
    fmt = get_format(format_name)
    step = f"encode:{format_name}"
    dest = workdir / f"{fmt.name}.{fmt.extension}"
    reporter.update(step, 0.0, f"encoding {format_name}")
    encode(
        source,
        dest,
        fmt,
        duration_s=source_info.duration_s,
        on_progress=lambda fraction: reporter.update(
            step, fraction, f"encoding {format_name} ({int(fraction * 100)}%)"
        ),
    )
    info = verify_output(dest, fmt, source_info)
    reporter.finish_step(step, f"encoded {format_name}")
    return EncodedOutput(format_name=format_name, path=dest, info=info)
