"""The reprocessing run sweeps the temp folders of runs that are no longer live, asking the
real Prefect server for each run's state; the folder of a live run is never touched."""

from __future__ import annotations

import os
import time
import uuid
from dataclasses import replace
from pathlib import Path

from prefect.states import Cancelled, Completed, Crashed, Failed, Pending, Running, State

from cli.stack import free_port
from core.settings import Settings
from domain import prefect_gateway
from flows.steps.passes import sweep_temp_folders
from flows.workspace import create_run_dir, prefect_run_state, server_tag, sweep_run_dirs
from tests.prefect_fixtures import prefect_client


def _flow_run(settings: Settings, state: State) -> str:
    """A real run of the audio-processing deployment (no worker picks it up), put in `state`."""
    info = prefect_gateway.start_flow_run(
        settings.prefect.api_url,
        settings.prefect.audio_deployment,
        {
            "task_id": str(uuid.uuid4()),
            "workflow_id": str(uuid.uuid4()),
            "episode_id": "ep-sweep",
            "audio_key": "uploads/x/a.mp3",
            "encoding_formats": ["mp3_64"],
            "transcribe": False,
        },
        idempotency_key=f"sweep-test-{uuid.uuid4()}",
        name="sweep-test",
        tags=["test"],
    )
    with prefect_client(settings.prefect.api_url) as client:
        if state.type.value != "SCHEDULED":
            client.set_flow_run_state(uuid.UUID(info.id), state, force=True)
    return info.id


def _leftover(root: Path, run_id: str, prefect_api_url: str) -> Path:
    """A run folder as a killed run leaves it: the source and a half-written output."""
    folder = create_run_dir(root, run_id, "ep-sweep", prefect_api_url)
    (folder / "source.mp3").write_bytes(b"\xff" * 4096)
    (folder / ".wav.wav.abc.part").write_bytes(b"\0" * 4096)
    return folder


def test_folders_of_finished_killed_and_vanished_runs_go_live_ones_stay(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "temp"
    api = settings.prefect.api_url
    dead = {
        "completed": _leftover(root, _flow_run(settings, Completed()), api),
        "failed": _leftover(root, _flow_run(settings, Failed(message="x")), api),
        "crashed (worker killed)": _leftover(
            root, _flow_run(settings, Crashed(message="kill")), api
        ),
        "cancelled": _leftover(root, _flow_run(settings, Cancelled()), api),
        "deleted from Prefect": _leftover(root, str(uuid.uuid4()), api),
    }
    live = {
        "running": _leftover(root, _flow_run(settings, Running()), api),
        "pending": _leftover(root, _flow_run(settings, Pending()), api),
    }
    # Not run folders: a run outside Prefect, an upload being spooled, anything else.
    others = [
        create_run_dir(root, None, "ep-local", settings.prefect.api_url),
        root / "audioflow-upload-abc",
        root / "notes",
    ]
    others[1].write_bytes(b"x")
    others[2].mkdir()
    # An upload spool file a killed API process left a day ago goes; a fresh one stays.
    stale_spool = root / "audioflow-upload-killed"
    stale_spool.write_bytes(b"x" * 4096)
    day_ago = time.time() - 24 * 3600 - 60
    os.utime(stale_spool, (day_ago, day_ago))

    removed = sweep_temp_folders.fn(replace(settings, temp_dir=root))

    assert sorted(removed) == sorted([stale_spool.name, *(f.name for f in dead.values())])
    assert not stale_spool.exists()
    for why, folder in dead.items():
        assert not folder.exists(), why
    for why, folder in live.items():
        assert folder.is_dir() and len(list(folder.iterdir())) == 2, why
    for path in others:
        assert path.exists()


def test_nothing_is_removed_when_prefect_cannot_be_asked(
    settings: Settings, tmp_path: Path
) -> None:
    root = tmp_path / "temp"
    api = settings.prefect.api_url
    finished = _leftover(root, _flow_run(settings, Completed()), api)
    nowhere = f"http://127.0.0.1:{free_port()}/api"  # nothing listens there
    report = sweep_run_dirs(root, prefect_run_state(nowhere), api)
    assert report.removed == [] and report.kept == [finished.name]
    assert len(report.errors) == 1
    assert finished.is_dir()


def test_odd_names_and_symlinks_are_left_alone(settings: Settings, tmp_path: Path) -> None:
    """Only real folders named `run-<uuid>-...` are candidates; a symlink named like the
    folder of a finished run is not followed (its target stays)."""
    root = tmp_path / "temp"
    root.mkdir()
    finished_id = _flow_run(settings, Completed())
    tag = server_tag(settings.prefect.api_url)
    outside = tmp_path / "precious"
    outside.mkdir()
    (outside / "keep.txt").write_text("keep")
    (root / f"run-{tag}-{finished_id}-link").symlink_to(outside)
    (root / f"run-{tag}-not-a-uuid-x").mkdir()
    (root / f"run-{tag}-{finished_id.upper()}-x").mkdir()
    (root / f"run-{tag}-{finished_id}-file").write_text("not a folder")

    report = sweep_run_dirs(
        root, prefect_run_state(settings.prefect.api_url), settings.prefect.api_url
    )

    assert report.removed == []
    assert (outside / "keep.txt").read_text() == "keep"
    assert len(list(root.iterdir())) == 4


def test_another_servers_run_folders_are_not_judged(settings: Settings, tmp_path: Path) -> None:
    """Two Prefect servers' workers on one machine share the temp root. A run of the other
    server is "no such run" to this one, which must not read as gone: its folder stays,
    whatever this server says of the id."""
    root = tmp_path / "temp"
    other = "http://127.0.0.1:1/api"  # another stack's server (never asked)
    live_elsewhere = _leftover(root, str(uuid.uuid4()), other)
    finished_here = _flow_run(settings, Completed())
    same_id_elsewhere = _leftover(root, finished_here, other)
    mine = _leftover(root, finished_here, settings.prefect.api_url)

    removed = sweep_temp_folders.fn(replace(settings, temp_dir=root))

    assert removed == [mine.name]
    assert live_elsewhere.is_dir() and len(list(live_elsewhere.iterdir())) == 2
    assert same_id_elsewhere.is_dir()
