"""`audioflow demo` / `make demo`: the main job on embedded defaults, start to finish.

Starts a local Prefect server, the API and a worker (SQLite, local-folder storage) under
AUDIOFLOW_HOME, uploads the bundled sample episode through the API, creates an
`audio_processing` task, follows it with a progress bar, prints the result, checks the
outputs, and stops everything it started.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from cli.client import ApiClient, CliError
from cli.render import ProgressBar, task_details
from cli.stack import PROJECT_DIR, StackError, running_stack
from core.settings import audioflow_home

SAMPLE = PROJECT_DIR / "samples" / "sample-episode.mp3"
FORMATS = ["mp3_128", "mp3_320"]


def run_demo(home: Path | None = None, sample: Path = SAMPLE) -> dict[str, Any]:
    """Run the demo; returns the finished task. Raises CliError if any part failed."""
    home = home or audioflow_home()
    started = time.monotonic()
    print(f"audioflow demo: starting the embedded stack in {home} ...", flush=True)
    try:
        with running_stack(home) as stack:
            print(
                f"  stack up in {time.monotonic() - started:.1f} s: API {stack.api_url}, "
                f"Prefect {stack.prefect_url}",
                flush=True,
            )
            client = ApiClient(stack.api_url, stack.env["AUDIOFLOW_API_KEY"])
            uploaded = client.upload(sample)
            print(f"  uploaded {sample.name} -> {uploaded['key']} ({uploaded['durationS']:.1f} s)")
            task = client.create_task(
                {
                    "episodeId": "sample-episode",
                    "audioKey": uploaded["key"],
                    "encodingFormats": FORMATS,
                    "transcribe": True,
                    "language": "en",
                }
            )
            print(f"  task {task['id']} created; following it:", flush=True)
            job_started = time.monotonic()
            final = client.wait(task["id"], ProgressBar().update, timeout_s=900)
            elapsed = time.monotonic() - job_started
            storage_dir = Path(stack.env["AUDIOFLOW_STORAGE_DIR"])
    except StackError as exc:
        raise CliError(f"the stack did not start: {exc}", code=1) from exc
    print()
    print(task_details(final, storage=str(storage_dir)))
    if final["status"] != "done":
        raise CliError(f"the demo task ended {final['status']}: {final.get('error')}", code=1)
    missing = [key for key in _keys(final["result"]) if not (storage_dir / key).is_file()]
    if missing:
        raise CliError(f"outputs missing from {storage_dir}: {', '.join(missing)}", code=1)
    print(f"\nprocessed in {elapsed:.1f} s; demo finished in {time.monotonic() - started:.1f} s")
    return final


def _keys(result: dict[str, Any]) -> list[str]:
    keys = [o["key"] for o in result.get("outputs", {}).values()]
    keys += list((result.get("transcript") or {}).get("keys", {}).values())
    return keys


def main() -> int:
    try:
        run_demo()
    except CliError as exc:
        print(f"demo failed: {exc}", file=sys.stderr)
        return exc.code
    return 0
