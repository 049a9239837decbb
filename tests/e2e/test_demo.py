"""`make demo`, exactly as the README says, from a fresh clone of this checkout, twice in a row.

The clone holds only what git tracks (committed work: a sample or a model that exists only
in a working tree would fail here). It shares this checkout's `.venv` (a symlink: CI
already builds the venv from scratch on its clean clone, and a second install would add
minutes), with PYTHONPATH pointing at the clone so its code, not this checkout's, runs.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
from pathlib import Path

import pytest

from cli.stack import PROJECT_DIR
from media.probe import probe
from transcription.wer import wer

pytestmark = pytest.mark.slow
SAMPLE_TEXT = (PROJECT_DIR / "samples" / "sample-episode.txt").read_text()


def _fresh_clone(tmp_path: Path) -> Path:
    clone = tmp_path / "clone"
    subprocess.run(["git", "clone", "--quiet", str(PROJECT_DIR), str(clone)], check=True)
    (clone / ".venv").symlink_to(PROJECT_DIR / ".venv")
    return clone


def _make_demo(clone: Path, home: Path) -> subprocess.CompletedProcess[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIOFLOW_", "PREFECT_"))}
    env.pop("DATABASE_URL", None)
    env["AUDIOFLOW_HOME"] = str(home)
    env["PYTHONPATH"] = str(clone)
    env.pop("PYTHONDONTWRITEBYTECODE", None)  # the .pyc files show whose code ran
    return subprocess.run(
        ["make", "demo"],
        cwd=clone,
        env=env,
        capture_output=True,
        text=True,
        timeout=900,
        stdin=subprocess.DEVNULL,
    )


def test_make_demo_processes_the_sample_and_can_run_again(tmp_path: Path) -> None:
    clone = _fresh_clone(tmp_path)
    home = tmp_path / "audioflow-home"
    first = _make_demo(clone, home)
    assert first.returncode == 0, first.stdout[-3000:] + first.stderr[-3000:]
    out = first.stdout
    assert re.search(r"\(done, 100%", out), out
    assert "mp3_128" in out and "mp3_320" in out and "language en" in out

    # The episode's manifest names the task's outputs, each under that task's own attempt.
    storage = home / "storage"
    manifest = json.loads((storage / "episodes" / "sample-episode" / "manifest.json").read_text())
    prefix = f"episodes/sample-episode/tasks/{manifest['taskId']}/a1/"
    for name, kbps in (("mp3_128", 128), ("mp3_320", 320)):
        key = manifest["outputs"][name]["key"]
        assert key == f"{prefix}audio/{name}.mp3"
        info = probe(storage / key)
        assert info.codec == "mp3" and abs(info.duration_s - 23.0) < 0.5
        assert info.bitrate_kbps is not None and abs(info.bitrate_kbps - kbps) < 8
    (text_key,) = [k for k in manifest["transcript"]["keys"].values() if k.endswith(".txt")]
    assert wer(SAMPLE_TEXT, (storage / text_key).read_text()) < 0.35

    # Python cached what it imported beside the sources it imported: the clone's.
    assert list((clone / "cli" / "__pycache__").glob("demo*.pyc")), "the clone's code did not run"

    second = _make_demo(clone, home)
    assert second.returncode == 0, second.stdout[-3000:] + second.stderr[-3000:]
    assert re.search(r"\(done, 100%", second.stdout)
    # Nothing left running: every process the demo started is gone.
    leftover = subprocess.run(
        ["pgrep", "-f", str(home)], capture_output=True, text=True, check=False
    ).stdout.split()
    assert leftover == []
