"""progress not notified

The trigger on `task_events` (0004) notifies status events only: a notifying transaction
holds a database-wide lock from its commit through its WAL flush, so one NOTIFY per
progress report serialised the progress endpoint's commits (bench scenario 6: 0.71-0.79x
its rate). Progress reaches event streams by the event hub's poll of the log instead
(`domain.event_stream`).

Revision ID: 0006_progress_not_notified
Revises: 0005_webhooks
Create Date: 2026-11-29
"""

from __future__ import annotations

from collections.abc import Sequence

from alembic import op

revision: str = "0006_progress_not_notified"
down_revision: str | None = "0005_webhooks"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

_DROP = "DROP TRIGGER IF EXISTS task_events_notify ON task_events"


def upgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_DROP)
        op.execute(
            "CREATE TRIGGER task_events_notify AFTER INSERT OR UPDATE ON task_events "
            "FOR EACH ROW WHEN (NEW.type <> 'task.progress') "
            "EXECUTE FUNCTION audioflow_notify_task_event()"
        )


def downgrade() -> None:
    if op.get_bind().dialect.name == "postgresql":
        op.execute(_DROP)
        op.execute(
            "CREATE TRIGGER task_events_notify AFTER INSERT OR UPDATE ON task_events "
            "FOR EACH ROW EXECUTE FUNCTION audioflow_notify_task_event()"
        )
