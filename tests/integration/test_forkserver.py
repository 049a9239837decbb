"""`flows.forkserver` and `flows.launch`: a run started through the fork server behaves,
to the worker that watches the launcher, like the cold `python -m prefect.engine` it
replaces: its own process, the launcher's stdio, cwd and environment, the same exit code,
signals passed on, and no run left behind when the launcher is killed outright.

Real processes throughout; the forked run executes `tests.support.stand_in_engine` in
place of `prefect.engine` (the flows' own runs through the server are covered by every
e2e test, whose workers start under it)."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from flows.launch import SOCKET_ENV
from tests.support.waiting import wait_for

BOUND_S = 30.0
ROOT = Path(__file__).resolve().parents[2]
#: The "worker" the server starts: prints the socket it was given, then waits to be stopped.
WORKER = f"import os; print(os.environ[{SOCKET_ENV!r}], flush=True); import signal; signal.pause()"


def _alive(pid: int) -> bool:
    """Whether `pid` is a live process (a zombie counts as gone)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


class Server:
    def __init__(self, process: subprocess.Popen[str], path: str) -> None:
        self.process = process
        self.path = path

    def launch(self, *argv: str, cwd: Path, mark: str = "") -> subprocess.Popen[str]:
        env = {**os.environ, SOCKET_ENV: self.path, "STAND_IN_MARK": mark}
        return subprocess.Popen(
            [sys.executable, "-m", "flows.launch", *argv],
            cwd=cwd,
            env={**env, "PYTHONPATH": str(ROOT)},
            stdout=subprocess.PIPE,
            text=True,
        )


@pytest.fixture
def server() -> Iterator[Server]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "flows.forkserver",
            "--engine",
            "tests.support.stand_in_engine",
            "--",
            sys.executable,
            "-c",
            WORKER,
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    assert process.stdout is not None
    path = process.stdout.readline().strip()
    assert path, "the fork server's worker was not given a socket"
    try:
        yield Server(process, path)
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(BOUND_S)


def _report(launcher: subprocess.Popen[str]) -> dict[str, object]:
    assert launcher.stdout is not None
    line = launcher.stdout.readline()
    assert line, "the run wrote nothing to the launcher's stdout"
    return json.loads(line)


def test_a_run_gets_the_launchers_stdio_cwd_environment_and_exit_code(
    server: Server, tmp_path: Path
) -> None:
    launcher = server.launch("exit:7", "more", cwd=tmp_path, mark="run-1")
    report = _report(launcher)
    assert launcher.wait(BOUND_S) == 7
    assert report["argv"] == ["exit:7", "more"]
    assert report["cwd"] == str(tmp_path)
    assert report["mark"] == "run-1"
    # Forked by the server, not started by the launcher.
    assert report["ppid"] == server.process.pid
    assert report["pid"] != launcher.pid


def test_a_run_ends_after_its_threads_and_exit_handlers_like_a_cold_one(
    server: Server, tmp_path: Path
) -> None:
    launcher = server.launch("linger", cwd=tmp_path)
    _report(launcher)
    assert launcher.wait(BOUND_S) == 6
    assert launcher.stdout is not None
    assert launcher.stdout.read().splitlines() == ["thread finished", "exit handler ran"]


def test_runs_are_separate_processes_and_each_gets_its_own_code(
    server: Server, tmp_path: Path
) -> None:
    launchers = [server.launch(f"exit:{code}", cwd=tmp_path) for code in (0, 3, 5)]
    pids = {_report(launcher)["pid"] for launcher in launchers}
    assert [launcher.wait(BOUND_S) for launcher in launchers] == [0, 3, 5]
    assert len(pids) == 3


def test_sigterm_to_the_launcher_reaches_the_run_and_its_code_comes_back(
    server: Server, tmp_path: Path
) -> None:
    launcher = server.launch("trap-term", cwd=tmp_path)
    run = int(_report(launcher)["pid"])  # type: ignore[call-overload]
    launcher.send_signal(signal.SIGTERM)  # how Prefect's process worker cancels a run
    assert launcher.wait(BOUND_S) == 143
    wait_for("the run's process to end", lambda: not _alive(run), BOUND_S)


def test_a_run_killed_by_a_signal_kills_its_launcher_with_the_same_signal(
    server: Server, tmp_path: Path
) -> None:
    launcher = server.launch("wait", cwd=tmp_path)
    run = int(_report(launcher)["pid"])  # type: ignore[call-overload]
    os.kill(run, signal.SIGKILL)  # the run crashes (OOM killer, segfault...)
    assert launcher.wait(BOUND_S) == -signal.SIGKILL


def test_a_launcher_killed_outright_takes_its_run_with_it(server: Server, tmp_path: Path) -> None:
    launcher = server.launch("wait", cwd=tmp_path)
    run = int(_report(launcher)["pid"])  # type: ignore[call-overload]
    launcher.kill()  # SIGKILL: the launcher cannot pass anything on
    launcher.wait(BOUND_S)
    wait_for("the orphaned run to be killed", lambda: not _alive(run), BOUND_S)
    # The server goes on serving.
    again = server.launch("exit:0", cwd=tmp_path)
    _report(again)
    assert again.wait(BOUND_S) == 0


def test_a_malformed_request_is_refused_and_the_server_keeps_serving(
    server: Server, tmp_path: Path
) -> None:
    for garbage in (b"", b"\x00\x00\x00\x05{bad}", b"\x7f\xff\xff\xff"):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as sock:
            sock.connect(server.path)
            sock.sendall(garbage)
            sock.shutdown(socket.SHUT_WR)
            # Refused: closed without a pid (a request needs the three stdio descriptors).
            try:
                answer = sock.recv(4)
            except ConnectionResetError:
                answer = b""
            assert answer == b""
    launcher = server.launch("exit:4", cwd=tmp_path)
    _report(launcher)
    assert launcher.wait(BOUND_S) == 4


def test_the_socket_is_private_and_removed_when_the_worker_exits(
    server: Server, tmp_path: Path
) -> None:
    directory = Path(server.path).parent
    assert directory.stat().st_mode & 0o777 == 0o700
    launcher = server.launch("wait", cwd=tmp_path)
    run = int(_report(launcher)["pid"])  # type: ignore[call-overload]
    # The worker exits (here: killed); the server ends its runs and its socket, and exits.
    worker = wait_for(
        "the worker process",
        lambda: [
            int(p.name)
            for p in Path("/proc").iterdir()
            if p.name.isdigit() and _ppid(int(p.name)) == server.process.pid and int(p.name) != run
        ],
        BOUND_S,
    )[0]
    os.kill(worker, signal.SIGTERM)
    assert server.process.wait(BOUND_S) == 1  # the worker died of a signal
    assert not _alive(run)
    assert not directory.exists()
    assert launcher.wait(BOUND_S) != 0


def _launch_cold(socket_path: str | None) -> subprocess.CompletedProcess[str]:
    """`python -m flows.launch` with a bad flow run id, with or without a server's socket."""
    env = {k: v for k, v in os.environ.items() if k != SOCKET_ENV}
    if socket_path is not None:
        env[SOCKET_ENV] = socket_path
    return subprocess.run(
        [sys.executable, "-m", "flows.launch", "not-a-flow-run-id"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
    )


def test_without_a_server_the_launcher_starts_the_engine_cold() -> None:
    cold = _launch_cold(None)
    # prefect.engine itself answered: it names the bad id and exits 1.
    assert cold.returncode == 1
    assert "Invalid flow run id" in cold.stdout + cold.stderr


def test_a_server_that_does_not_answer_means_a_cold_start(tmp_path: Path) -> None:
    cold = _launch_cold(str(tmp_path / "nobody.sock"))
    assert cold.returncode == 1
    assert "does not answer" in cold.stderr
    assert "Invalid flow run id" in cold.stdout + cold.stderr


def _ppid(pid: int) -> int:
    try:
        return int(Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return -1
