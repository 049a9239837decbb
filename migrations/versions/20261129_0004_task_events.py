"""task events

One table of what happened to each task (status changes appended, progress as one row per
task rewritten with a new id), written in the transaction of the change it records: the
source of webhook deliveries and of event streams' replay. On PostgreSQL a trigger sends
`NOTIFY audioflow_task_events` with `{"id", "taskId", "type"}` for every row written, so
other processes learn of new events when the writing transaction commits.

Revision ID: 0004_task_events
Revises: 0003_request_digest
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0004_task_events"
down_revision: str | None = "0003_request_digest"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_NOTIFY_FUNCTION = """
CREATE FUNCTION audioflow_notify_task_event() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    PERFORM pg_notify(
        'audioflow_task_events',
        json_build_object('id', NEW.id, 'taskId', NEW.task_id, 'type', NEW.type)::text
    );
    RETURN NULL;
END
$$
"""

_NOTIFY_TRIGGER = """
CREATE TRIGGER task_events_notify AFTER INSERT OR UPDATE ON task_events
FOR EACH ROW EXECUTE FUNCTION audioflow_notify_task_event()
"""


def upgrade() -> None:
    op.create_table(
        "task_events",
        sa.Column(
            "id",
            sa.BigInteger().with_variant(sa.Integer(), "sqlite"),
            sa.Identity(),
            primary_key=True,
        ),
        sa.Column("task_id", sa.Uuid(), nullable=False),
        sa.Column("type", sa.String(32), nullable=False),
        sa.Column("data", sa.JSON(), nullable=False),
        sa.Column("created_at", sa.DateTime(timezone=True), nullable=False),
        sa.ForeignKeyConstraint(
            ["task_id"], ["tasks.id"], name="fk_task_events_task_id_tasks", ondelete="CASCADE"
        ),
        sa.PrimaryKeyConstraint("id", name="pk_task_events"),
        sqlite_autoincrement=True,
    )
    op.create_index("ix_task_events_task_id_id", "task_events", ["task_id", "id"])
    op.create_index(
        "uq_task_events_progress",
        "task_events",
        ["task_id"],
        unique=True,
        postgresql_where=sa.text("type = 'task.progress'"),
        sqlite_where=sa.text("type = 'task.progress'"),
    )
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_NOTIFY_FUNCTION)
        op.execute(_NOTIFY_TRIGGER)


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute("DROP TRIGGER IF EXISTS task_events_notify ON task_events")
        op.execute("DROP FUNCTION IF EXISTS audioflow_notify_task_event()")
    op.drop_index("uq_task_events_progress", table_name="task_events")
    op.drop_index("ix_task_events_task_id_id", table_name="task_events")
    op.drop_table("task_events")
