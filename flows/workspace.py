"""The flows' temporary folders: one root, one folder per run named after it, room checked
before the work, and the leftovers of dead runs swept.

Every run of `audio-processing` works in
`{AUDIOFLOW_TEMP_DIR}/run-{server tag}-{flow run id}-{episode}-xxxx` and removes it when it
ends. A worker killed with SIGKILL (or a machine that lost power) cannot, so the
reprocessing flow sweeps the folders whose run Prefect no longer counts as live
(`sweep_run_dirs`). Liveness is Prefect's state of the run named in the folder, not an age
or a process id: an age bound would remove the folder of a long episode still encoding, and
a process id means nothing on another machine or after a restart (ids are reused).

The server tag names the Prefect server the run belongs to (`server_tag`), and a sweep only
judges the folders of its own server: to another server's sweep a live run is "a run I do
not have", which must not read as "gone" (two stacks on one machine, staging beside
production, a test suite's several servers share the default temp root).

Before encoding, the run checks that its folder's disk has room for what the requested
formats will need (`ensure_room_for_outputs`); a full disk there is transient, as it may
have room later or on another worker.
"""

from __future__ import annotations

import hashlib
import logging
import re
import shutil
import tempfile
import time
import uuid
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypedDict, Unpack

from core.formats import get_format
from core.tempdir import UPLOAD_SPOOL_PREFIX, private_temp_root
from domain.contracts import ErrorKind
from flows.errors import ProcessingError
from media.probe import AudioInfo

log = logging.getLogger(__name__)

#: Run folders start with this, then their Prefect server's tag and the flow run's id.
RUN_DIR_PREFIX = "run-"
_RUN_DIR = re.compile(
    rf"^{RUN_DIR_PREFIX}([0-9a-f]{{8}})-"
    r"([0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12})-"
)
#: Prefect state types after which a run never touches its folder again.
FINISHED_STATES = frozenset({"COMPLETED", "FAILED", "CANCELLED", "CRASHED"})
#: An upload spool file untouched this long belongs to an API process that died mid-upload
#: (a live upload writes to it all along; 2 GB at 1 Mbit/s takes under 5 hours).
STALE_SPOOL_AGE_S = 24 * 3600
#: Transcript files (JSON, VTT, SRT, text, HTML) per second of audio, generously: the JSON
#: carries every word with its times and probability (about 160 bytes a word), so speech
#: at 3 words a second needs about 600 bytes a second of all five; 1000 leaves room for a
#: very fast talker's 4 (`tests/unit/test_transcript_estimate.py` renders that).
TRANSCRIPT_BYTES_PER_S = 1000
#: The waveform JSON per pixel: two values of at most 4 characters, each with ", ".
WAVEFORM_BYTES_PER_PIXEL = 12
#: A chapter in the chapters JSON, generously (title and URL are usually short).
CHAPTER_BYTES = 2048
#: A small file's fixed part (JSON keys, a file system block).
SMALL_FILE_BYTES = 4096


def server_tag(prefect_api_url: str) -> str:
    """Eight hex digits naming a Prefect server (from its API URL) in run folder names."""
    return hashlib.sha256(prefect_api_url.rstrip("/").encode()).hexdigest()[:8]


def create_run_dir(
    root: Path, flow_run_id: str | None, episode_id: str, prefect_api_url: str
) -> Path:
    """A new, private folder for one run under `root` (created if missing).

    Without a flow run (a test calling the flow's function directly) the folder is named
    `local-...` and the sweep never touches it. The root must be this user's alone
    (`core.tempdir`).
    """
    private_temp_root(root)
    label = re.sub(r"[^A-Za-z0-9._-]", "_", episode_id)[:40]
    prefix = (
        f"{RUN_DIR_PREFIX}{server_tag(prefect_api_url)}-{flow_run_id}-" if flow_run_id else "local-"
    )
    return Path(tempfile.mkdtemp(prefix=f"{prefix}{label}-", dir=root))


def run_id_of(folder: Path, prefect_api_url: str) -> str | None:
    """The flow run id in the name of a run folder of this Prefect server; None for
    anything else (another server's run folders included)."""
    match = _RUN_DIR.match(folder.name)
    if match is None or match.group(1) != server_tag(prefect_api_url):
        return None
    return match.group(2)


# -- room before the work ------------------------------------------------------------------


def free_bytes(folder: Path) -> int:
    """Bytes this process may still write on the disk holding `folder`."""
    return shutil.disk_usage(folder).free


def ensure_free_space(folder: Path, needed: int, purpose: str) -> None:
    """Fail the attempt, as transient, when `folder`'s disk has less than `needed` bytes free."""
    free = free_bytes(folder)
    if free < needed:
        log.warning("%s: %d bytes needed for %s, %d free", folder, needed, purpose, free)
        raise ProcessingError(
            f"not enough temporary disk space on this worker for {purpose}: "
            f"{needed} bytes needed, {free} bytes free",
            ErrorKind.TRANSIENT,
        )


def outputs_estimate(
    info: AudioInfo,
    format_names: Iterable[str],
    transcribe: bool,
    *,
    waveform_pixels: int = 0,
    cover_bytes: int = 0,
    chapters: int = 0,
) -> int:
    """Bytes the run's folder needs beyond the source: every format (they are encoded side
    by side, so all at once) plus the transcript files, the waveform and chapters files,
    and what tagging adds: the cover in every output, and for an M4A with chapters a
    second copy while ffmpeg remuxes it (`media.tags`)."""
    names = list(format_names)
    sizes = {
        name: get_format(name).estimated_bytes(info.duration_s, info.sample_rate, info.channels)
        for name in names
    }
    needed = sum(sizes.values())
    if transcribe:
        needed += int(TRANSCRIPT_BYTES_PER_S * info.duration_s)
    if waveform_pixels:
        needed += WAVEFORM_BYTES_PER_PIXEL * waveform_pixels + SMALL_FILE_BYTES
    if chapters:
        needed += CHAPTER_BYTES * chapters + SMALL_FILE_BYTES
        needed += sum(size for name, size in sizes.items() if get_format(name).extension == "m4a")
    needed += cover_bytes * len(names)
    return needed


class OutputExtras(TypedDict, total=False):
    """What `outputs_estimate` counts besides the formats and the transcript (all 0 if
    not given)."""

    waveform_pixels: int
    cover_bytes: int
    chapters: int


def ensure_room_for_outputs(
    workdir: Path,
    info: AudioInfo,
    format_names: Iterable[str],
    transcribe: bool,
    **extras: Unpack[OutputExtras],
) -> None:
    """Before encoding: the source is already in `workdir`; is there room for the outputs
    (`outputs_estimate` of the same arguments)?"""
    names = list(format_names)
    what = ", ".join(names) + (" and the transcript" if transcribe else "")
    needed = outputs_estimate(info, names, transcribe, **extras)
    ensure_free_space(workdir, needed, what or "the outputs")


# -- sweeping the folders of dead runs -----------------------------------------------------

#: Given a flow run id: its Prefect state type (`RUNNING`, `COMPLETED`, ...), None if Prefect
#: no longer has the run; raises if Prefect cannot be asked.
RunStateReader = Callable[[str], "str | None"]


@dataclass
class SweepReport:
    """What one sweep did, for the reprocessing run's summary."""

    removed: list[str] = field(default_factory=list)
    kept: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)


def sweep_run_dirs(root: Path, read_state: RunStateReader, prefect_api_url: str) -> SweepReport:
    """Remove the run folders of the Prefect server at `prefect_api_url` under `root` whose
    run has finished or no longer exists, and upload spool files left by an API process
    that died (untouched for a day). Other servers' run folders are not looked at.

    A folder is removed only on a definite answer: a finished state, or "no such run".
    When Prefect cannot be asked, or answers anything else (running, pending, scheduled,
    cancelling, paused), the folder is kept: never the folder of a live run.
    """
    report = SweepReport()
    if not root.is_dir():
        return report
    for folder in sorted(root.iterdir()):
        if folder.name.startswith(UPLOAD_SPOOL_PREFIX):
            _sweep_stale_spool_file(folder, report)
            continue
        run_id = run_id_of(folder, prefect_api_url)
        if run_id is None or folder.is_symlink() or not folder.is_dir():
            continue
        try:
            state = read_state(run_id)
        except Exception as exc:
            report.errors.append(f"{folder.name}: {exc}")
            report.kept.append(folder.name)
            continue
        if state is None or state in FINISHED_STATES:
            shutil.rmtree(folder, ignore_errors=True)
            report.removed.append(folder.name)
        else:
            report.kept.append(folder.name)
    return report


def _sweep_stale_spool_file(path: Path, report: SweepReport, now: float | None = None) -> None:
    """Remove an upload spool file nobody has written for `STALE_SPOOL_AGE_S`.

    Its API process is gone (a live upload writes to it, and removes it when done); which
    process wrote it is not recorded, so its age is the only test there is.
    """
    try:
        info = path.lstat()
    except FileNotFoundError:
        return
    if not path.is_file() or path.is_symlink():
        return
    if (now if now is not None else time.time()) - info.st_mtime >= STALE_SPOOL_AGE_S:
        path.unlink(missing_ok=True)
        report.removed.append(path.name)
    else:
        report.kept.append(path.name)


def prefect_run_state(api_url: str) -> RunStateReader:
    """A `RunStateReader` that asks the Prefect server through the API's gateway."""
    from core.errors import NotFoundError
    from domain import prefect_gateway

    def read(run_id: str) -> str | None:
        try:
            info = prefect_gateway.read_flow_run(api_url, str(uuid.UUID(run_id)))
        except NotFoundError:
            return None
        return info.state_type or "UNKNOWN"  # a run without a state is kept

    return read
