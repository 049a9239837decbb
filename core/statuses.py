"""The status names of tasks and workflows: the words the API, the database and the flows share.

Plain enums with no dependency, so that a flow process can learn which statuses are
terminal (`domain.lifecycle`) without loading SQLAlchemy. The rules about them (which
status may follow which, for which writer, and what a task shows for each workflow status)
live in `domain.lifecycle`; the columns that store them in `db.models`.
"""

from __future__ import annotations

from enum import StrEnum


class TaskStatus(StrEnum):
    """Lifecycle of a task row, as clients see it (it follows its current workflow's)."""

    PENDING = "pending"
    PROCESSING = "processing"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"


class WorkflowStatus(StrEnum):
    """Lifecycle of one workflow instance; mirrors Prefect's flow-run states."""

    QUEUED = "queued"
    RUNNING = "running"
    COMPLETED = "completed"
    FAILED = "failed"
    CRASHED = "crashed"
    CANCELLED = "cancelled"
