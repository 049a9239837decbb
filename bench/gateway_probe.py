"""How much of `POST /tasks` is the API's Prefect client itself: `python -m bench.gateway_probe N`.

`domain.prefect_gateway` keeps one `SyncPrefectClient` per process; it used to build one per
call, and building one creates an SSL context (loading the CA bundle) even for a plain-HTTP
URL. This probe, run with the stack's environment while nothing else loads it, times N calls
each of: building a client; creating a flow run with a new client per call (the old way,
the baseline); and creating a flow run as the API does now (`start_flow_run`, shared client,
retry bound). Wall and CPU milliseconds (medians) as one JSON line.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from typing import Any

from domain import prefect_gateway
from domain.contracts import AudioProcessingParameters

DEPLOYMENT = "audio-processing/audio-processing"


def _parameters() -> dict[str, Any]:
    return AudioProcessingParameters(
        task_id=uuid.uuid4(),
        workflow_id=uuid.uuid4(),
        episode_id="bench-probe",
        audio_key="uploads/bench/probe.mp3",
        encoding_formats=["mp3_128"],
        transcribe=False,
        language="en",
    ).flow_run_parameters()


def _timed(n: int, call: Callable[[], object]) -> dict[str, float]:
    wall, cpu = [], []
    for _ in range(n):
        w0, c0 = time.perf_counter(), time.process_time()
        call()
        wall.append(time.perf_counter() - w0)
        cpu.append(time.process_time() - c0)
    return {"wall_ms": statistics.median(wall) * 1000, "cpu_ms": statistics.median(cpu) * 1000}


def main(n: int) -> None:
    url = os.environ["PREFECT_API_URL"]

    def build() -> None:
        prefect_gateway._new_client(url, 10.0).__exit__(None, None, None)

    def create_as_shipped() -> None:
        prefect_gateway.start_flow_run(
            url, DEPLOYMENT, _parameters(), idempotency_key=str(uuid.uuid4()),
            name=f"probe-{uuid.uuid4().hex[:6]}", tags=["bench-probe"],
        )

    create_as_shipped()  # imports, the shared client and the deployment-id cache, untimed
    with prefect_gateway._client(url, 10.0) as shared:
        deployment_id = prefect_gateway._deployment_id(shared, DEPLOYMENT)

    def create_new_client() -> None:
        client = prefect_gateway._new_client(url, 10.0)
        try:
            client.create_flow_run_from_deployment(
                deployment_id, parameters=_parameters(), idempotency_key=str(uuid.uuid4()),
                name=f"probe-{uuid.uuid4().hex[:6]}", tags=["bench-probe"],
            )
        finally:
            client.__exit__(None, None, None)

    results = {
        "build_client": _timed(n, build),
        "create_new_client": _timed(n, create_new_client),
        "create_reused_client": _timed(n, create_as_shipped),
    }
    prefect_gateway.close_clients()
    print(json.dumps(results))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 20)
