"""What one progress report costs in the service: `python -m bench.progress_probe N`.

Runs N sequential plain reports (step, percentage, message) through
`WorkflowService.apply_progress` against a throwaway PostgreSQL database, three times:
through the shipped hot path (one autocommitted statement, both updates as CTEs, on a pool
without pre-ping), and, as baselines measured in the same run, through the hot path before
it (two prebuilt `UPDATE ... RETURNING` statements in a transaction on the main pool, which
SQLite still takes) and through the general path every report took before that (row
locks, ORM reads, flush). No HTTP: this isolates the database work from Litestar and uvicorn.
Wall and CPU milliseconds per report (medians of 5 batches) as one JSON line.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
from collections.abc import Callable

from alembic import command
from alembic.config import Config

from bench.harness import temporary_database
from cli.stack import PROJECT_DIR
from core.settings import DatabaseSettings
from db.engine import build_engine, build_session_factory
from db.models import Task, TaskStatus, Workflow, WorkflowStatus
from domain import workflows as workflows_module
from domain.workflows import ProgressUpdate, WorkflowService


def _batches(n: int, report: Callable[[int], object]) -> dict[str, float]:
    wall, cpu = [], []
    for _ in range(5):
        w0, c0 = time.perf_counter(), time.process_time()
        for i in range(n):
            report(i)
        wall.append((time.perf_counter() - w0) / n)
        cpu.append((time.process_time() - c0) / n)
    return {"wall_ms": statistics.median(wall) * 1000, "cpu_ms": statistics.median(cpu) * 1000}


def main(n: int) -> None:
    with temporary_database("audioflow_bench_progress") as url:
        config = Config(str(PROJECT_DIR / "alembic.ini"))
        config.attributes["url"] = url
        command.upgrade(config, "head")
        engine = build_engine(DatabaseSettings(url=url))
        factory = build_session_factory(engine)
        with factory.begin() as session:
            task = Task(type="audio_processing", status=TaskStatus.PROCESSING, payload={})
            session.add(task)
            session.flush()
            workflow = Workflow(
                name="audio-processing",
                deployment_name="audio-processing/audio-processing",
                task_id=task.id,
                attempt=1,
                status=WorkflowStatus.RUNNING,
                progress=0,
                parameters={},
                corrections=[],
            )
            session.add(workflow)
            session.flush()
            task.workflow_id = workflow.id
            ids = (task.id, workflow.id)
        service = WorkflowService(factory)

        def report(i: int) -> object:
            update = ProgressUpdate(*ids, progress=i % 100, step="encode:mp3_128", message="m")
            return service.apply_progress(update)

        _batches(max(n // 5, 1), report)  # warm-up: connections, compiled statements
        shipped = _batches(n, report)
        autocommit, service._autocommit = service._autocommit, None  # the two statements
        try:
            _batches(max(n // 5, 1), report)
            two_statements = _batches(n, report)
        finally:
            service._autocommit = autocommit
        plain = workflows_module._is_plain_progress
        workflows_module._is_plain_progress = lambda update: False  # the path before
        try:
            _batches(max(n // 5, 1), report)
            general = _batches(n, report)
        finally:
            workflows_module._is_plain_progress = plain
        engine.dispose()
    print(json.dumps({"shipped": shipped, "two_statements": two_statements, "general": general}))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 500)
