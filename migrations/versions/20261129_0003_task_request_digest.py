"""task request digest

An idempotent repeat of `POST /tasks` is compared with the request as first made. The
stored payload is not that request any more once a reprocess has added formats to it, so
the request's digest is kept at creation. Rows made before have none: they are compared
with their payload, as before.

Revision ID: 0003_request_digest
Revises: 0002
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0003_request_digest"
down_revision: str | None = "0002"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.add_column(sa.Column("request_digest", sa.String(64), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("tasks") as batch_op:
        batch_op.drop_column("request_digest")
