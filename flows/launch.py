"""`python -m flows.launch FLOW_RUN_ID`: start a flow run in a warm process.

The work pools start each flow run with this command (prefect.yaml). With
`AUDIOFLOW_FORKSERVER` naming the socket of this machine's fork server
(`flows.forkserver`, started by `audioflow worker` beside the Prefect worker), the run is
forked from a process that has already imported Prefect and the flows: the ~2-6 s of
`python -m prefect.engine` start-up that short episodes paid (bench/ scenario 7) is gone,
while every run still gets a process of its own. This process stays the one the worker
watches: its exit status is the run's, a SIGTERM/SIGINT it gets (the worker cancelling
the run) is passed on to the run's process, and if it is killed outright the fork server
kills the run's process too. Without the variable, or when the server does not answer,
it becomes `python -m prefect.engine` (exec), exactly what the pools ran before.

It imports only the standard library, so that it starts in a few milliseconds.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import struct
import sys
from types import FrameType

#: Names the fork server's socket; set by `flows.forkserver` for the worker it starts.
SOCKET_ENV = "AUDIOFLOW_FORKSERVER"
#: Byte layout of the integers on the socket (a request's length, a pid, a wait status).
INT = struct.Struct("!i")
#: The largest request the server reads (argv, cwd and the run's whole environment).
MAX_REQUEST_BYTES = 1 << 20
#: The signals passed on to the run's process (how Prefect's process worker cancels).
FORWARDED_SIGNALS = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP)


def request_bytes(argv: list[str], cwd: str, env: dict[str, str]) -> bytes:
    """What the launcher sends after the length: the run's argv, cwd and environment."""
    return json.dumps({"argv": argv, "cwd": cwd, "env": env}).encode()


def read_exactly(sock: socket.socket, size: int) -> bytes:
    """`size` bytes from `sock`; EOFError when it closes first."""
    chunks = bytearray()
    while len(chunks) < size:
        chunk = sock.recv(size - len(chunks))
        if not chunk:
            raise EOFError("the fork server closed the connection")
        chunks += chunk
    return bytes(chunks)


def _cold_start(argv: list[str]) -> None:
    """Replace this process with the plain engine (what prefect.yaml ran before)."""
    sys.stdout.flush()
    sys.stderr.flush()
    os.execv(sys.executable, [sys.executable, "-m", "prefect.engine", *argv])


def _connect(path: str) -> socket.socket | None:
    sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    try:
        sock.connect(path)
    except OSError as exc:
        sock.close()
        print(
            f"audioflow: fork server at {path} does not answer ({exc}); starting the engine cold",
            file=sys.stderr,
            flush=True,
        )
        return None
    return sock


def _exit_like(status: int) -> None:
    """End this process the way the run's process ended (code or signal)."""
    sys.stdout.flush()
    sys.stderr.flush()
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        with contextlib.suppress(OSError, ValueError):  # SIGKILL's cannot be set (nor needs to)
            signal.signal(sig, signal.SIG_DFL)
        os.kill(os.getpid(), sig)
    os._exit(os.waitstatus_to_exitcode(status) if os.WIFEXITED(status) else 1)


def main(argv: list[str]) -> None:
    path = os.environ.get(SOCKET_ENV)
    sock = _connect(path) if path else None
    if sock is None:
        _cold_start(argv)
        return
    child: list[int] = []
    pending: list[int] = []

    def forward(signum: int, _frame: FrameType | None) -> None:
        if child:
            with contextlib.suppress(ProcessLookupError):
                os.kill(child[0], signum)
        else:
            pending.append(signum)

    for sig in FORWARDED_SIGNALS:
        signal.signal(sig, forward)
    payload = request_bytes(argv, os.getcwd(), dict(os.environ))
    try:
        socket.send_fds(sock, [INT.pack(len(payload))], [0, 1, 2])
        sock.sendall(payload)
        child.append(INT.unpack(read_exactly(sock, INT.size))[0])
    except (OSError, EOFError) as exc:
        print(
            f"audioflow: fork server refused the run ({exc}); starting the engine cold",
            file=sys.stderr,
            flush=True,
        )
        sock.close()
        for sig in FORWARDED_SIGNALS:
            signal.signal(sig, signal.SIG_DFL)
        _cold_start(argv)
        return
    for signum in pending:
        forward(signum, None)
    try:
        status = INT.unpack(read_exactly(sock, INT.size))[0]
    except (OSError, EOFError) as exc:
        # The server died with the run in flight: it can no longer tell us how the run
        # ends, so end it rather than leave it running unwatched.
        print(
            f"audioflow: lost the fork server ({exc}); stopping the run",
            file=sys.stderr,
            flush=True,
        )
        with contextlib.suppress(ProcessLookupError):
            os.kill(child[0], signal.SIGKILL)
        os._exit(1)
    _exit_like(status)


if __name__ == "__main__":
    main(sys.argv[1:])
