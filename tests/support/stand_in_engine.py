"""A stand-in for `prefect.engine` under `flows.forkserver --engine`: what a run does is
its first argument, so the tests drive the fork server's fork, signal and exit paths
without a Prefect server. It reports on its stdout (the launcher's, passed by the server)."""

from __future__ import annotations

import json
import os
import signal
import sys

if __name__ == "__main__":
    action = sys.argv[1]
    if action == "trap-term":
        # Like the engine: a SIGTERM handler that ends the run with a code of its own
        # (set before the report, so a test that signals after reading it finds it set).
        signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    print(
        json.dumps(
            {
                "pid": os.getpid(),
                "ppid": os.getppid(),
                "cwd": os.getcwd(),
                "mark": os.environ.get("STAND_IN_MARK"),
                "argv": sys.argv[1:],
            }
        ),
        flush=True,
    )
    if action == "linger":
        # Like Prefect's log and event workers: a thread still writing, and an exit handler
        # that drains a queue. Both must finish before the run's process ends.
        import atexit
        import threading
        import time

        def late_writer() -> None:
            time.sleep(0.5)
            print("thread finished", flush=True)

        threading.Thread(target=late_writer).start()
        atexit.register(lambda: print("exit handler ran", flush=True))
        sys.exit(6)
    if action.startswith("exit:"):
        sys.exit(int(action.removeprefix("exit:")))
    while True:
        signal.pause()
