"""`audioflow up` in the foreground, found by other commands, stopped by SIGTERM; and a large
upload streamed through the API with bounded memory."""

from __future__ import annotations

import json
import os
import signal
import stat
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from cli.stack import Stack, free_port
from tests.e2e.conftest import HEADERS

pytestmark = pytest.mark.slow
AUDIOFLOW = str(Path(sys.executable).parent / "audioflow")


def _vm_hwm_kb(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    raise AssertionError("no VmHWM")


def test_up_serves_is_found_by_other_commands_and_stops_on_sigterm(tmp_path: Path) -> None:
    home = tmp_path / "up-home"
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AUDIOFLOW_", "PREFECT_"))}
    env.pop("DATABASE_URL", None)
    env["AUDIOFLOW_HOME"] = str(home)
    api_port, prefect_port = free_port(), free_port()
    up = subprocess.Popen(
        [AUDIOFLOW, "up", "--api-port", str(api_port), "--prefect-port", str(prefect_port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        stack_file = home / "stack.json"
        deadline = time.monotonic() + 180
        while not stack_file.exists():
            assert up.poll() is None, up.stdout.read() if up.stdout else ""
            assert time.monotonic() < deadline, "audioflow up did not come up"
            time.sleep(0.5)
        urls = json.loads(stack_file.read_text())
        assert urls["api_url"] == f"http://127.0.0.1:{api_port}"
        assert httpx.get(f"{urls['api_url']}/health", timeout=10).json() == {"status": "ok"}
        ui = httpx.get(urls["prefect_url"], timeout=10)
        assert ui.status_code == 200 and "<html" in ui.text.lower()  # the Prefect UI is served

        # Safe by default: generated secrets, private, and required (the old stack had no
        # API key, the public `dev-internal-token`, and an open Prefect server).
        secrets_file = home / "secrets.json"
        assert stat.S_IMODE(secrets_file.stat().st_mode) == 0o600
        generated = json.loads(secrets_file.read_text())
        api = urls["api_url"]
        assert httpx.get(f"{api}/tasks", timeout=10).status_code == 401
        keyed = {"X-API-Key": generated["api_key"]}
        assert httpx.get(f"{api}/tasks", headers=keyed, timeout=10).status_code == 200
        evil_host = keyed | {"Host": "rebound.example:8000"}
        assert httpx.get(f"{api}/tasks", headers=evil_host, timeout=10).status_code == 400
        progress = httpx.post(
            f"{api}/internal/workflow-progress",
            json={"taskId": str(uuid.uuid4()), "workflowId": str(uuid.uuid4())},
            headers={"Authorization": "Bearer dev-internal-token"},
            timeout=10,
        )
        assert progress.status_code == 401
        prefect_api = f"{urls['prefect_url']}/api"
        anonymous = httpx.post(f"{prefect_api}/deployments/filter", json={}, timeout=10)
        assert anonymous.status_code == 401
        user, password = generated["prefect_auth_string"].split(":", 1)
        authed = httpx.post(
            f"{prefect_api}/deployments/filter", json={}, auth=(user, password), timeout=10
        )
        assert authed.status_code == 200 and {d["name"] for d in authed.json()} >= {
            "audio-processing",
            "reprocessing",
        }

        # Another command in another shell finds the stack with no flags.
        listed = subprocess.run(
            [AUDIOFLOW, "tasks", "--json"], env=env, capture_output=True, text=True, timeout=60
        )
        assert listed.returncode == 0, listed.stderr
        assert json.loads(listed.stdout) == []
    finally:
        up.send_signal(signal.SIGTERM)
        output, _ = up.communicate(timeout=60)
    assert up.returncode == 0, output
    assert "Prefect UI" in output and "stopped." in output
    assert not (home / "stack.json").exists()
    leftover = subprocess.run(["pgrep", "-f", str(home)], capture_output=True, text=True).stdout
    assert leftover.split() == []


def test_large_upload_streams_with_bounded_memory(stack: Stack, tmp_path: Path) -> None:
    big = tmp_path / "long.wav"  # ~160 MB of real audio: 15 minutes of 16-bit stereo
    subprocess.run(
        [
            "ffmpeg",
            "-v",
            "error",
            "-y",
            "-f",
            "lavfi",
            "-i",
            "sine=frequency=220:duration=900",
            "-ac",
            "2",
            "-ar",
            "44100",
            str(big),
        ],
        check=True,
    )
    size = big.stat().st_size
    api_pid = stack.process("api").popen.pid
    before_kb = _vm_hwm_kb(api_pid)

    def chunks() -> Iterator[bytes]:
        with big.open("rb") as fh:
            while chunk := fh.read(1024 * 1024):
                yield chunk

    response = httpx.post(
        f"{stack.api_url}/uploads",
        params={"filename": "long.wav"},
        content=chunks(),
        headers=HEADERS | {"Content-Length": str(size)},
        timeout=300,
    )
    assert response.status_code == 201, response.text
    body = response.json()
    assert body["size"] == size and abs(body["durationS"] - 900) < 1
    grown_mb = (_vm_hwm_kb(api_pid) - before_kb) / 1024
    # The body is spooled to disk chunk by chunk: the API's peak memory barely moves.
    assert grown_mb < 60, (
        f"API peak RSS grew by {grown_mb:.0f} MB for a {size / 2**20:.0f} MB upload"
    )
