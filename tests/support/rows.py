"""What the database holds, counted the same way by every test that checks nothing was
written (a refused request must leave no task and no workflow behind)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Task, TaskStatus, Workflow, WorkflowStatus


def count_rows(session_factory: sessionmaker[Session]) -> int:
    """Rows in `tasks` plus rows in `workflows`."""
    with session_factory() as session:
        return (session.scalar(select(func.count()).select_from(Task)) or 0) + (
            session.scalar(select(func.count()).select_from(Workflow)) or 0
        )


def pending_task(
    session_factory: sessionmaker[Session], episode_id: str = "ep-events"
) -> tuple[Task, Workflow]:
    """A pending task with one queued workflow, as `POST /tasks` leaves it."""
    with session_factory.begin() as session:
        task = Task(
            type="audio_processing",
            status=TaskStatus.PENDING,
            episode_id=episode_id,
            payload={"episodeId": episode_id},
        )
        session.add(task)
        session.flush()
        workflow = Workflow(
            name="audio-processing",
            deployment_name="audio-processing/audio-processing",
            task_id=task.id,
            attempt=1,
            status=WorkflowStatus.QUEUED,
            progress=0,
            parameters={},
            corrections=[],
        )
        session.add(workflow)
        session.flush()
        task.workflow_id = workflow.id
        task.attempts = 1
    return task, workflow
