"""A worker whose temp disk is too small, for real: a stack whose AUDIOFLOW_TEMP_DIR is a
2 MiB tmpfs. A run that would not fit fails before encoding, as transient, naming needed
and free bytes, and leaves no folder behind; a run that fits on the same disk completes."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from cli.stack import Stack, running_stack
from core.storage.s3 import S3Store
from media.probe import probe
from tests.e2e.conftest import BUCKET, create_task, follow, stack_databases, stack_env
from tests.support.audio_files import lavfi_mp3
from tests.support.small_disk import small_disk

pytestmark = pytest.mark.slow

MiB = 1024 * 1024


@pytest.fixture(scope="module")
def temp_disk(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Path]:
    with small_disk(tmp_path_factory.mktemp("small") / "temp", 2 * MiB) as mounted:
        yield mounted


@pytest.fixture(scope="module")
def small_temp_stack(
    s3_endpoint: str, e2e_store: S3Store, temp_disk: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[Stack]:
    home = tmp_path_factory.mktemp("stack-small-temp")
    with stack_databases("audioflow_e2e_temp") as dbs:
        env = stack_env(dbs, s3_endpoint, BUCKET, AUDIOFLOW_TEMP_DIR=str(temp_disk / "audioflow"))
        with running_stack(home, env=env) as running:
            yield running


@pytest.fixture(scope="module")
def thirty_seconds_stereo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """30 s of 44.1 kHz stereo noise at 128 kbit/s: 480 kB; as WAV it would be 5.3 MB."""
    path = tmp_path_factory.mktemp("src") / "noise.mp3"
    source = "anoisesrc=duration=30:color=pink:sample_rate=44100:amplitude=0.3:seed=5"
    return lavfi_mp3(path, source, channels=2)


def test_a_run_that_does_not_fit_fails_transient_one_that_fits_completes(
    small_temp_stack: Stack,
    e2e_store: S3Store,
    temp_disk: Path,
    thirty_seconds_stereo: Path,
    tmp_path: Path,
) -> None:
    e2e_store.put_file("uploads/temp-disk/noise.mp3", thirty_seconds_stereo)
    payload = {"audioR2Key": "uploads/temp-disk/noise.mp3", "transcribe": False}

    too_big = create_task(
        small_temp_stack, payload | {"episodeId": "ep-too-big", "encodingFormats": ["wav"]}
    )
    final = follow(small_temp_stack, too_big["id"])[-1]
    assert final["status"] == "failed", final
    assert final["errorKind"] == "transient", final
    match = re.search(r"(\d+) bytes needed, (\d+) bytes free", final["error"])
    assert match, final["error"]
    needed, free = int(match.group(1)), int(match.group(2))
    assert needed >= 44100 * 2 * 2 * 30 > 2 * MiB > free
    assert "wav" in final["error"]

    fits = create_task(
        small_temp_stack, payload | {"episodeId": "ep-fits", "encodingFormats": ["mp3_64"]}
    )
    done = follow(small_temp_stack, fits["id"])[-1]
    assert done["status"] == "done", done
    out = tmp_path / "mp3_64.mp3"
    e2e_store.get_file(done["result"]["outputs"]["mp3_64"]["key"], out)
    assert abs(probe(out).duration_s - 30) < 0.5

    # Both runs removed their folders; nothing is left on the small disk.
    assert [p for p in temp_disk.rglob("*") if not p.is_dir()] == []
