"""The temp root under a shared /tmp: created private, refused when someone else controls it."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from core.settings import SettingsError
from core.tempdir import private_temp_root


def test_a_new_root_is_private(tmp_path: Path) -> None:
    root = private_temp_root(tmp_path / "audioflow")
    assert stat.S_IMODE(root.stat().st_mode) == 0o700
    assert private_temp_root(root) == root  # an existing private root is fine


def test_a_symlinked_root_is_refused(tmp_path: Path) -> None:
    target = tmp_path / "elsewhere"
    target.mkdir(mode=0o700)
    (tmp_path / "audioflow").symlink_to(target)
    with pytest.raises(SettingsError, match="link"):
        private_temp_root(tmp_path / "audioflow")


def test_a_world_writable_root_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "audioflow"
    root.mkdir()
    root.chmod(0o777)
    with pytest.raises(SettingsError, match="writable by other users"):
        private_temp_root(root)


@pytest.mark.skipif(os.geteuid() != 0, reason="giving a folder to another user needs root")
def test_a_root_of_another_user_is_refused(tmp_path: Path) -> None:
    root = tmp_path / "audioflow"
    root.mkdir(mode=0o700)
    os.chown(root, 65534, 65534)  # nobody
    with pytest.raises(SettingsError, match="another user"):
        private_temp_root(root)
