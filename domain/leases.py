"""Leasing the next due row of a queue table: how the polling threads that work through one
(the flow-run dispatcher) share it across threads and processes. The webhook sender leases
batches, with their events' bodies, in its own statements (`domain.webhooks`).

A claim takes the first due row with `SELECT ... FOR UPDATE SKIP LOCKED` (rows another
transaction is claiming are passed over, not waited for) and moves the row's due time past
the lease, so no other claim takes it until the lease runs out: a worker that dies
mid-job leaves its row to be taken again then.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Column, ColumnElement, Table, or_, select, update
from sqlalchemy.orm import Session

__all__ = ["lease_next_due"]


def lease_next_due(
    session: Session,
    table: Table,
    *conditions: ColumnElement[bool],
    due: Column[Any],
    order_by: ColumnElement[Any],
    now: datetime,
    lease_s: float,
) -> Any | None:
    """In the caller's transaction: the id of the first row of `table` by `order_by` that
    meets `conditions` and is due (`due` unset or not after `now`), its `due` moved to
    `now + lease_s`; None when no row is due."""
    row_id = session.scalar(
        select(table.c.id)
        .where(*conditions, or_(due.is_(None), due <= now))
        .order_by(order_by)
        .limit(1)
        .with_for_update(skip_locked=True)
    )
    if row_id is not None:
        session.execute(
            update(table)
            .where(table.c.id == row_id)
            .values({due: now + timedelta(seconds=lease_s)})
        )
    return row_id
