"""Find and kill real processes the way a crash would: by flow run, or a whole process tree."""

from __future__ import annotations

import contextlib
import os
import signal
from collections.abc import Iterator
from pathlib import Path


def _processes() -> Iterator[tuple[int, int, str]]:
    """(pid, parent pid, command name) of every process in /proc."""
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            stat = (entry / "stat").read_text()
        except OSError:
            continue
        # The command name may contain spaces and parentheses: it ends at the last ')'.
        comm = stat[stat.index("(") + 1 : stat.rindex(")")]
        ppid = int(stat[stat.rindex(")") + 2 :].split()[1])
        yield int(entry.name), ppid, comm


def _children_map() -> dict[int, list[int]]:
    children: dict[int, list[int]] = {}
    for pid, ppid, _ in _processes():
        children.setdefault(ppid, []).append(pid)
    return children


def children_named(pid: int, name: str) -> list[int]:
    """The direct children of `pid` whose command is `name` (e.g. this test's ffmpegs)."""
    return [child for child, ppid, comm in _processes() if ppid == pid and comm == name]


def descendants(pid: int) -> list[int]:
    """Every process below `pid` (children, grandchildren, ...)."""
    tree = _children_map()
    found: list[int] = []
    stack = [pid]
    while stack:
        for child in tree.get(stack.pop(), []):
            found.append(child)
            stack.append(child)
    return found


def kill_tree(pid: int) -> list[int]:
    """SIGKILL `pid` and all its descendants at once, as a machine dying would."""
    victims = [pid, *descendants(pid)]
    for victim in victims:
        with contextlib.suppress(ProcessLookupError):
            os.kill(victim, signal.SIGKILL)
    return victims


def flow_run_pids(flow_run_id: str) -> list[int]:
    """Processes started for a Prefect flow run (they carry PREFECT__FLOW_RUN_ID).

    Under the fork server these are the run's launcher (`flows.launch`, the process the
    worker watches) and the run's ffmpeg children: the forked run process itself keeps the
    server's original environment in /proc. Killing the launcher outright makes the server
    kill the run (tests/integration/test_forkserver.py), as killing the process did."""
    needle = f"PREFECT__FLOW_RUN_ID={flow_run_id}".encode()
    pids = []
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            environ = (entry / "environ").read_bytes()
        except OSError:
            continue
        if needle in environ.split(b"\0"):
            pids.append(int(entry.name))
    return pids
