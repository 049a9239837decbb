"""`python -m flows.forkserver -- WORKER ARGV...`: a warm parent for flow runs.

Each flow run of a process work pool used to start `python -m prefect.engine`, a new
interpreter that imported Prefect, the flow and their libraries (2-6 s of CPU on this
2-core machine, more than a short episode's whole encode: bench/ scenario 7). This
process imports them once, starts the Prefect worker (WORKER ARGV) as its child with
`AUDIOFLOW_FORKSERVER` naming a socket in a private directory, and serves that socket:
the pools' command, `python -m flows.launch` (`flows/launch.py`), hands it the run's
argv, cwd, environment and stdio, and it forks a copy of itself that runs
`prefect.engine` exactly as the cold command would. So each run still has a process of
its own (cancel, crash and kill are per run, as before), only without the start-up.

Why fork and not threads in one long-lived process: Prefect cancels a run by signalling
its process, and a crash or a leak in one episode must not take others with it. Why the
worker is its child: stopping the worker's process group (`audioflow worker`, the stack)
stops this server and every run it forked, as it stopped the worker's runs before.

The server stays single-threaded (forking a process that has threads is unsafe), reads
only requests from its own user (SO_PEERCRED), and kills a run whose launcher is gone.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib
import os
import runpy
import selectors
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import NoReturn

from flows.launch import INT, MAX_REQUEST_BYTES, SOCKET_ENV, read_exactly

#: What every episode's run needs, imported once here instead of once per run. (The
#: maintenance pool's worker runs cold: a few runs an hour, and its flow's database
#: libraries would only grow this process.)
PRELOAD = (
    "prefect.engine",
    "prefect.flow_engine",
    "prefect.deployments.steps",
    "flows.audio_processing",
)
#: How long a connected launcher may take to send its request.
REQUEST_TIMEOUT_S = 10.0
#: `struct ucred` (pid, uid, gid) as SO_PEERCRED returns it.
PEERCRED = struct.Struct("3i")


@dataclass
class Request:
    """One flow run to start: the launcher's argv, cwd, environment and stdio."""

    argv: list[str]
    cwd: str
    env: dict[str, str]
    fds: list[int]


@dataclass
class ForkServer:
    """The accept/fork/reap loop; `serve()` returns a Request in a forked child."""

    listener: socket.socket
    worker: subprocess.Popen[bytes]
    runs: dict[int, socket.socket] = field(default_factory=dict)
    worker_status: int | None = None

    def serve(self) -> Request | None:
        """Serve until the worker exits; in a forked child, return that child's request."""
        wake_read, wake_write = socket.socketpair()
        wake_read.setblocking(False)
        wake_write.setblocking(False)
        signal.set_wakeup_fd(wake_write.fileno(), warn_on_full_buffer=False)
        signal.signal(signal.SIGCHLD, lambda *_: None)
        signal.signal(signal.SIGTERM, self._stop)
        signal.signal(signal.SIGINT, self._stop)
        selector = selectors.DefaultSelector()
        selector.register(self.listener, selectors.EVENT_READ, "accept")
        selector.register(wake_read, selectors.EVENT_READ, "wake")
        self._reap(selector)
        while self.worker_status is None:
            for key, _ in selector.select(timeout=1.0):
                if key.data == "wake":
                    _drain(wake_read)
                elif key.data == "accept":
                    request = self._accept(selector)
                    if request is not None:
                        for sock in (wake_read, wake_write, self.listener):
                            sock.close()
                        selector.close()
                        return request
                else:
                    self._launcher_gone(selector, key.fileobj, key.data)
            self._reap(selector)
        signal.set_wakeup_fd(-1)
        selector.close()
        return None

    @staticmethod
    def _stop(signum: int, _frame: object) -> None:
        """The worker, in this process group, got the same signal: serve its runs until it
        exits (its own grace period), then stop."""

    def _accept(self, selector: selectors.BaseSelector) -> Request | None:
        try:
            conn, _ = self.listener.accept()
        except OSError:
            return None
        try:
            request = _read_request(conn)
        except (OSError, EOFError, ValueError) as exc:
            print(f"forkserver: refused a request: {exc}", file=sys.stderr, flush=True)
            conn.close()
            return None
        sys.stdout.flush()
        sys.stderr.flush()
        pid = os.fork()
        if pid == 0:
            for sock in self.runs.values():
                sock.close()
            conn.close()
            return request
        for fd in request.fds:
            os.close(fd)
        try:
            conn.sendall(INT.pack(pid))
        except OSError:
            os.kill(pid, signal.SIGKILL)
        self.runs[pid] = conn
        selector.register(conn, selectors.EVENT_READ, pid)
        return None

    def _launcher_gone(self, selector: selectors.BaseSelector, conn: object, pid: int) -> None:
        """The launcher sends nothing after its request: readable means it is gone (killed
        outright, so it could not pass the signal on). Its run must not go on unwatched."""
        assert isinstance(conn, socket.socket)
        selector.unregister(conn)
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)

    def _reap(self, selector: selectors.BaseSelector) -> None:
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                return
            if pid == 0:
                return
            if pid == self.worker.pid:
                self.worker_status = status
                self.worker.returncode = os.waitstatus_to_exitcode(status)
                continue
            conn = self.runs.pop(pid, None)
            if conn is None:
                continue
            with contextlib.suppress(KeyError, ValueError):
                selector.unregister(conn)
            with contextlib.suppress(OSError):
                conn.sendall(INT.pack(status))
            conn.close()

    def stop_runs(self, timeout_s: float = 10.0) -> None:
        """The worker is gone: end the runs it was watching (SIGTERM, then SIGKILL)."""
        for sig in (signal.SIGTERM, signal.SIGKILL):
            for pid in list(self.runs):
                with contextlib.suppress(ProcessLookupError):
                    os.kill(pid, sig)
            deadline = time.monotonic() + timeout_s
            while self.runs and time.monotonic() < deadline:
                try:
                    pid, _ = os.waitpid(-1, os.WNOHANG)
                except ChildProcessError:
                    self.runs.clear()
                    break
                if pid and pid in self.runs:
                    self.runs.pop(pid).close()
                elif not pid:
                    time.sleep(0.05)
            if not self.runs:
                return


def _drain(sock: socket.socket) -> None:
    try:
        while sock.recv(4096):
            pass
    except BlockingIOError:
        pass


def _read_request(conn: socket.socket) -> Request:
    """The launcher's request; ValueError when it is not from this user or malformed."""
    import json

    creds = conn.getsockopt(socket.SOL_SOCKET, socket.SO_PEERCRED, PEERCRED.size)
    _pid, uid, _gid = PEERCRED.unpack(creds)
    if uid != os.getuid():
        raise ValueError(f"connection from uid {uid}, not this server's user")
    conn.settimeout(REQUEST_TIMEOUT_S)
    header, fds, _flags, _addr = socket.recv_fds(conn, INT.size, 3)
    try:
        if len(header) != INT.size or len(fds) != 3:
            raise ValueError("no request header with three file descriptors")
        size = INT.unpack(header)[0]
        if not 0 < size <= MAX_REQUEST_BYTES:
            raise ValueError(f"request of {size} bytes")
        body = json.loads(read_exactly(conn, size))
        argv, cwd, env = body["argv"], body["cwd"], body["env"]
        if not (
            isinstance(argv, list)
            and all(isinstance(arg, str) for arg in argv)
            and isinstance(cwd, str)
            and isinstance(env, dict)
            and all(isinstance(k, str) and isinstance(v, str) for k, v in env.items())
        ):
            raise ValueError("malformed request")
    except BaseException:
        for fd in fds:
            os.close(fd)
        raise
    conn.settimeout(None)
    return Request(argv=argv, cwd=cwd, env=env, fds=fds)


def run_engine(request: Request, engine: str = "prefect.engine") -> NoReturn:
    """In the forked child: become the launcher's `python -m prefect.engine ARGV`."""
    signal.set_wakeup_fd(-1)
    for sig in (signal.SIGCHLD, signal.SIGTERM, signal.SIGINT):
        signal.signal(sig, signal.SIG_DFL)
    for target, fd in enumerate(request.fds):
        os.dup2(fd, target)
        os.close(fd)
    os.chdir(request.cwd)
    os.environ.clear()
    os.environ.update(request.env)
    # Settings read at import time in this server are read again from the run's environment.
    if "prefect.context" in sys.modules:
        sys.modules["prefect.context"].refresh_global_settings_context()
    if "core.settings" in sys.modules:
        sys.modules["core.settings"].get_settings.cache_clear()
    import random

    random.seed()
    sys.argv = [sys.modules[engine].__file__ or engine, *request.argv]
    code = 0
    with warnings.catch_warnings():
        # runpy notes that prefect.engine is already imported (by this server, on purpose).
        warnings.filterwarnings("ignore", category=RuntimeWarning, module="runpy")
        try:
            runpy.run_module(engine, run_name="__main__", alter_sys=True)
        except SystemExit as exc:
            if isinstance(exc.code, str):
                print(exc.code, file=sys.stderr)
            code = exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 1)
        except KeyboardInterrupt:
            _end_run(0, signal.SIGINT)  # as Python ends on an unhandled Ctrl-C: by SIGINT
        except BaseException:
            traceback.print_exc()
            code = 1
    _end_run(code)


def _end_run(code: int, sig: int | None = None) -> NoReturn:
    """End a forked run as the interpreter would, minus its teardown.

    Waits for the run's non-daemon threads and runs the exit handlers (Prefect drains its
    log and event queues there, so the UI gets the last task states and logs), flushes
    stdio, then leaves with `os._exit`. Skipped: freeing every object of a process that
    holds Prefect, pydantic and numpy, which bench/ saw take 3-9 s per run on a busy
    2-core machine, with the run's worker slot held all that time.
    """
    for thread in threading.enumerate():
        if thread is not threading.main_thread() and not thread.daemon:
            thread.join()
    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    if sig is not None:
        signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(code)


def _bind() -> tuple[socket.socket, Path]:
    """A listening socket in a fresh directory that only this user can enter (mkdtemp)."""
    path = Path(tempfile.mkdtemp(prefix="audioflow-forkserver-")) / "runs.sock"
    listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    listener.bind(str(path))
    listener.listen(64)
    listener.setblocking(False)
    return listener, path


def _parse(argv: list[str]) -> tuple[str, list[str]]:
    """(engine module, worker argv) from `[--engine MODULE] -- WORKER ARGV...`."""
    engine = "prefect.engine"
    if argv[:1] == ["--engine"] and len(argv) > 1:
        engine, argv = argv[1], argv[2:]
    if len(argv) < 2 or argv[0] != "--":
        raise SystemExit("usage: python -m flows.forkserver [--engine MODULE] -- WORKER ARGV...")
    return engine, argv[1:]


def main(argv: list[str]) -> int:
    """Preload, start the worker with the socket's path, serve; the worker's exit code.

    `--engine` names the module a run executes as `__main__` (`prefect.engine`; tests
    give a stand-in to drive the fork, signal and exit paths without a Prefect server).
    """
    engine, worker_argv = _parse(argv)
    for name in (*PRELOAD, engine) if engine == "prefect.engine" else (engine,):
        importlib.import_module(name)
    listener, path = _bind()
    worker = subprocess.Popen(worker_argv, env={**os.environ, SOCKET_ENV: str(path)})
    server = ForkServer(listener=listener, worker=worker)
    request = server.serve()
    if request is not None:
        run_engine(request, engine)
    listener.close()
    path.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        path.parent.rmdir()
    server.stop_runs()
    status = server.worker_status or 0
    return os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
