"""The flow's encode step with real ffmpeg: the post-encode loudness check fails a miss as
permanent with the figures, and a silent source (nothing to normalise) passes, measured.
Loudness is read back with ffmpeg's ebur128 run here, not with the step's meter."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from domain.contracts import ErrorKind
from flows.errors import ProcessingError
from flows.progress import ProgressPlan, WorkflowProgressReporter
from flows.steps.encoding import encode_format
from media.loudness import LoudnessStats, LoudnessTarget
from media.probe import probe_source_measured
from tests.support.loudness_meters import ebur128_direct

MIXES = ["mono|stereo", "mono"]


def reporter(formats: list[str]) -> WorkflowProgressReporter:
    sent: list[dict[str, Any]] = []
    return WorkflowProgressReporter("t", "w", ProgressPlan.for_run(formats, False), sent.append)


def test_a_silent_source_is_encoded_and_measured_not_held_to_the_target(
    silent_wav: Path, tmp_path: Path
) -> None:
    info, loudness = probe_source_measured(silent_wav, MIXES)
    out = encode_format.fn(
        silent_wav, info, "mp3_64", tmp_path, reporter(["mp3_64"]),
        source_loudness=loudness, target=LoudnessTarget(),
    )  # fmt: skip
    assert out.loudness is not None and out.loudness.integrated_lufs == -70.0
    assert ebur128_direct(out.path)[0] == -70.0  # still silence: no gain was made up


def test_an_output_off_target_fails_permanent_with_the_figures(
    mono_wav: Path, tmp_path: Path
) -> None:
    """A measurement that lies (the source claimed 10 LU louder than it is) makes an
    output 10 LU too quiet: the second meter catches it."""
    info, loudness = probe_source_measured(mono_wav, MIXES)
    real = loudness["mono|stereo"]
    wrong = LoudnessStats(
        real.integrated_lufs + 10, real.lra_lu, real.true_peak_dbtp + 10, real.threshold_lufs
    )
    with pytest.raises(ProcessingError) as failed:
        encode_format.fn(
            mono_wav, info, "flac", tmp_path, reporter(["flac"]),
            source_loudness={"mono|stereo": wrong}, target=LoudnessTarget(),
        )  # fmt: skip
    assert failed.value.kind is ErrorKind.PERMANENT
    assert failed.value.reason.startswith("flac: loudness off target: integrated loudness -2")
    assert "target -19.0 LUFS" in failed.value.reason  # mono source, mono output
    measured = ebur128_direct(tmp_path / "flac.flac")[0]
    assert measured == pytest.approx(-29.0, abs=1.0)
