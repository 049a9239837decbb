"""A real, tiny filesystem for disk-full tests: a tmpfs mounted for the test, then unmounted.

ENOSPC is never faked: the kernel refuses the write. Mounting needs root (the test
machine's user); without it the fixture fails with the reason instead of skipping, so a
run that cannot exercise the full-disk paths does not pass silently.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


def free_bytes(path: Path) -> int:
    """Bytes an unprivileged writer may still use on the filesystem holding `path`."""
    stats = os.statvfs(path)
    return stats.f_bavail * stats.f_frsize


@contextmanager
def small_disk(mountpoint: Path, size_bytes: int) -> Iterator[Path]:
    """Mount a tmpfs of `size_bytes` at `mountpoint` (created) and unmount it afterwards."""
    mountpoint.mkdir(parents=True, exist_ok=True)
    mounted = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={size_bytes},mode=0755", "tmpfs", str(mountpoint)],
        capture_output=True,
        text=True,
    )
    if mounted.returncode != 0:
        raise RuntimeError(
            f"cannot mount a {size_bytes}-byte tmpfs at {mountpoint} (the disk-full tests "
            f"need root): {mounted.stderr.strip()}"
        )
    try:
        yield mountpoint
    finally:
        # Lazy unmount: a file still open by a dying subprocess must not fail the teardown.
        subprocess.run(["umount", "-l", str(mountpoint)], check=True)
        shutil.rmtree(mountpoint, ignore_errors=True)
