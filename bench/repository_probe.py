"""What a repository call costs: `python -m bench.repository_probe N`.

advanced-alchemy's repositories (`db/repositories.py`) against the hand-written queries they
replaced (copied below from the last commit that had them, as the baseline), in the same
run on a throwaway PostgreSQL database of 1000 tasks: N lookups by id (a read session each,
as `TaskService.get` does), N lookups with a row lock (a write transaction each, as every
writer does) and N/4 pages of `GET /tasks` (count and page of 50, filtered by status).
Batches of the two alternate, so both see the same machine; wall and CPU microseconds per
call are medians of 5 batches, printed as one JSON line. No HTTP.
"""

from __future__ import annotations

import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import timedelta

from alembic import command
from alembic.config import Config
from sqlalchemy import func, select
from sqlalchemy.orm import Session

from bench.harness import temporary_database
from cli.stack import PROJECT_DIR
from core.settings import DatabaseSettings
from db.base import utcnow
from db.engine import build_engine, build_session_factory
from db.models import Task, TaskStatus
from db.repositories import TaskRepository

ROWS = 1000


def handwritten_get(
    session: Session, task_id: uuid.UUID, *, for_update: bool = False
) -> Task | None:
    """The baseline: `TaskRepository.get` as it was hand-written."""
    stmt = select(Task).where(Task.id == task_id)
    if for_update:
        stmt = stmt.with_for_update()
    return session.scalars(stmt).one_or_none()


def handwritten_find(
    session: Session, status: TaskStatus, limit: int, offset: int
) -> tuple[list[Task], int]:
    """The baseline: `TaskRepository.find` as it was hand-written (the filters used here)."""
    stmt = select(Task).where(Task.status == status)
    total = session.scalar(select(func.count()).select_from(stmt.subquery())) or 0
    if offset >= total:
        return [], total
    page = session.scalars(
        stmt.order_by(Task.created_at.desc(), Task.id).limit(limit).offset(offset)
    ).all()
    return list(page), total


def _pairs(
    n: int, old: Callable[[int], object], new: Callable[[int], object]
) -> dict[str, dict[str, float]]:
    """Median microseconds per call of 5 alternating batches of each (after a warm-up)."""
    for fn in (old, new):
        for i in range(max(n // 10, 1)):
            fn(i)
    samples: dict[str, dict[str, list[float]]] = {
        name: {"wall_us": [], "cpu_us": []} for name in ("handwritten", "advanced_alchemy")
    }
    for _ in range(5):
        for name, fn in (("handwritten", old), ("advanced_alchemy", new)):
            w0, c0 = time.perf_counter(), time.process_time()
            for i in range(n):
                fn(i)
            samples[name]["wall_us"].append((time.perf_counter() - w0) / n * 1e6)
            samples[name]["cpu_us"].append((time.process_time() - c0) / n * 1e6)
    return {
        name: {key: round(statistics.median(values), 1) for key, values in figures.items()}
        for name, figures in samples.items()
    }


def main(n: int) -> None:
    with temporary_database("audioflow_bench_repository") as url:
        config = Config(str(PROJECT_DIR / "alembic.ini"))
        config.attributes["url"] = url
        command.upgrade(config, "head")
        engine = build_engine(DatabaseSettings(url=url))
        factory = build_session_factory(engine)
        start = utcnow()
        with factory.begin() as session:
            for i in range(ROWS):
                at = start - timedelta(seconds=i)
                session.add(
                    Task(
                        type="audio_processing",
                        status=TaskStatus.DONE if i % 2 else TaskStatus.FAILED,
                        episode_id=f"ep-{i}",
                        payload={"episodeId": f"ep-{i}"},
                        created_at=at,
                        updated_at=at,
                    )
                )
        with factory() as session:
            ids = list(session.scalars(select(Task.id)))

        def old_get(i: int) -> object:
            with factory() as session:
                return handwritten_get(session, ids[i % ROWS])

        def new_get(i: int) -> object:
            with factory() as session:
                return TaskRepository(session).get_one_or_none(id=ids[i % ROWS])

        def old_lock(i: int) -> object:
            with factory.begin() as session:
                return handwritten_get(session, ids[i % ROWS], for_update=True)

        def new_lock(i: int) -> object:
            with factory.begin() as session:
                return TaskRepository(session).get_one_or_none(
                    id=ids[i % ROWS], with_for_update=True
                )

        def old_page(i: int) -> tuple[list[Task], int]:
            with factory() as session:
                return handwritten_find(session, TaskStatus.DONE, 50, (i % 10) * 50)

        def new_page(i: int) -> tuple[list[Task], int]:
            with factory() as session:
                return TaskRepository(session).find(
                    status=TaskStatus.DONE, limit=50, offset=(i % 10) * 50
                )

        for i in range(10):  # the two return the same rows
            assert [t.id for t in old_page(i)[0]] == [t.id for t in new_page(i)[0]]
        figures = {
            "get": _pairs(n, old_get, new_get),
            "get_for_update": _pairs(n, old_lock, new_lock),
            "page_of_50": _pairs(max(n // 4, 1), old_page, new_page),
        }
        engine.dispose()
    print(json.dumps(figures))


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 2000)
