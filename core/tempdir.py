"""The temp root (`AUDIOFLOW_TEMP_DIR`), made safe to use under a shared `/tmp`.

The default root is `/tmp/audioflow`, a name any local user could create first. A root
owned by someone else, or writable by others, would let them swap a run's source file or
an upload between its check and its use, or read them. So the root is created private
(0700) and refused when it is a symlink, not ours, or writable by group or others.
"""

from __future__ import annotations

import contextlib
import os
import stat
from pathlib import Path

from core.settings import SettingsError

__all__ = ["UPLOAD_SPOOL_PREFIX", "private_temp_root"]

#: Files of `POST /uploads` bodies being received start with this (in the temp root).
UPLOAD_SPOOL_PREFIX = "audioflow-upload-"


def private_temp_root(root: Path) -> Path:
    """Create `root` (mode 0700) if missing and check that only this user controls it."""
    root.parent.mkdir(parents=True, exist_ok=True)
    with contextlib.suppress(FileExistsError):
        root.mkdir(mode=0o700)
    info = os.lstat(root)
    if stat.S_ISLNK(info.st_mode) or not stat.S_ISDIR(info.st_mode):
        raise SettingsError(f"AUDIOFLOW_TEMP_DIR {root} must be a folder, not a link or a file")
    if info.st_uid != os.geteuid():
        raise SettingsError(
            f"AUDIOFLOW_TEMP_DIR {root} belongs to another user (uid {info.st_uid}); "
            "remove it or point AUDIOFLOW_TEMP_DIR at a folder of this user"
        )
    if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        raise SettingsError(
            f"AUDIOFLOW_TEMP_DIR {root} is writable by other users (mode "
            f"{stat.S_IMODE(info.st_mode):o}); make it 0700"
        )
    return root
