"""workflow dispatch outbox

`POST /tasks` no longer waits for Prefect: the API commits the task and its queued workflow,
and a dispatcher creates the flow run afterwards. `dispatch_after` is the dispatcher's lease
and back-off; the partial index holds only the workflows still waiting for a flow run.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0002"
down_revision: str | None = "0001"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

UNDISPATCHED = sa.text("instance_id IS NULL AND status = 'queued'")


def upgrade() -> None:
    with op.batch_alter_table("workflows") as batch_op:
        batch_op.add_column(sa.Column("dispatch_after", sa.DateTime(timezone=True), nullable=True))
    op.create_index(
        "ix_workflows_undispatched",
        "workflows",
        ["created_at"],
        postgresql_where=UNDISPATCHED,
        sqlite_where=UNDISPATCHED,
    )


def downgrade() -> None:
    op.drop_index("ix_workflows_undispatched", table_name="workflows")
    with op.batch_alter_table("workflows") as batch_op:
        batch_op.drop_column("dispatch_after")
