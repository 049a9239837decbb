"""`make demo`, exactly as the README says, on a fresh AUDIOFLOW_HOME — twice in a row."""

from __future__ import annotations

import os
import re
import subprocess
from pathlib import Path

import pytest

from cli.stack import PROJECT_DIR
from flows.audio.probe import probe
from flows.transcription.wer import wer

pytestmark = pytest.mark.slow
SAMPLE_TEXT = (PROJECT_DIR / "samples" / "sample-episode.txt").read_text()


def _make_demo(home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIOFLOW_", "PREFECT_"))}
    env.pop("DATABASE_URL", None)
    env["AUDIOFLOW_HOME"] = str(home)
    return subprocess.run(
        ["make", "demo"],
        cwd=PROJECT_DIR,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def test_make_demo_processes_the_sample_and_can_run_again(tmp_path: Path) -> None:
    home = tmp_path / "audioflow-home"
    first = _make_demo(home)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert re.search(r"\(done, 100%", out), out
    assert "mp3_128" in out and "mp3_320" in out and "language en" in out

    storage = home / "storage"
    for name, kbps in (("mp3_128", 128), ("mp3_320", 320)):
        path = storage / "episodes" / "sample-episode" / "audio" / f"{name}.mp3"
        info = probe(path)
        assert info.codec == "mp3" and abs(info.duration_s - 23.0) < 0.5
        assert info.bitrate_kbps is not None and abs(info.bitrate_kbps - kbps) < 8
    transcript = storage / "episodes" / "sample-episode" / "transcript" / "transcript.txt"
    assert wer(SAMPLE_TEXT, transcript.read_text()) < 0.35

    second = _make_demo(home)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert re.search(r"\(done, 100%", second.stdout)
    # Nothing left running: every process the demo started is gone.
    leftover = subprocess.run(
        ["pgrep", "-f", str(home)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftover == []
