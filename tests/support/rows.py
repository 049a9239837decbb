"""What the database holds, counted the same way by every test that checks nothing was
written (a refused request must leave no task and no workflow behind)."""

from __future__ import annotations

from sqlalchemy import func, select
from sqlalchemy.orm import Session, sessionmaker

from db.models import Task, Workflow


def count_rows(session_factory: sessionmaker[Session]) -> int:
    """Rows in `tasks` plus rows in `workflows`."""
    with session_factory() as session:
        return (session.scalar(select(func.count()).select_from(Task)) or 0) + (
            session.scalar(select(func.count()).select_from(Workflow)) or 0
        )
