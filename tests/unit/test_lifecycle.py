"""The lifecycle table, pair by pair, and the progress hot path's SQL made from it.

The expected moves are written out here by hand, apart from `domain.lifecycle`, and every
(writer, from, to) triple the enums allow is checked against them: a status or writer added
to an enum fails `test_every_status_and_writer_is_classified` until this file says what it
may do.
"""

from __future__ import annotations

import itertools
import re
import uuid
from typing import Any, cast

import pytest
from sqlalchemy import Table
from sqlalchemy.dialects import postgresql

from db.models import TaskStatus, Workflow, WorkflowStatus
from domain import lifecycle
from domain import workflows as workflows_module
from domain.lifecycle import TaskAction, Writer

Q, R = WorkflowStatus.QUEUED, WorkflowStatus.RUNNING
C, F, X, K = (
    WorkflowStatus.COMPLETED,
    WorkflowStatus.FAILED,
    WorkflowStatus.CRASHED,
    WorkflowStatus.CANCELLED,
)

#: Every workflow status, as the table must see it.
LIVE = {Q, R}
TERMINAL = {C, F, X, K}

#: writer -> the moves it may make, "from -> to" ("new": a row that does not exist yet).
ALLOWED: dict[Writer, set[str]] = {
    Writer.NEW_ATTEMPT: {"new -> queued"},
    Writer.REPORT: {
        "queued -> queued",  # a plain report before the running hook
        "queued -> running",
        "queued -> completed",
        "queued -> failed",
        "queued -> crashed",
        "queued -> cancelled",
        "running -> running",
        "running -> completed",
        "running -> failed",
        "running -> crashed",
        "running -> cancelled",
    },
    Writer.CANCEL: {"queued -> cancelled", "running -> cancelled"},
    Writer.DISPATCHER: {
        "queued -> failed",  # could not start the flow run
        "failed -> queued",  # its run found by the idempotency key after all
    },
    Writer.RECONCILER: {
        "queued -> running",  # the running hook was missed
        "queued -> completed",
        "queued -> failed",
        "queued -> crashed",
        "queued -> cancelled",
        "running -> completed",
        "running -> failed",
        "running -> crashed",
        "running -> cancelled",
        # Prefect's late Completed (outputs checked) lifts any terminal row, nothing else does.
        "completed -> completed",
        "failed -> completed",
        "crashed -> completed",
        "cancelled -> completed",
    },
}

TASK_STATUS = {
    Q: TaskStatus.PENDING,
    R: TaskStatus.PROCESSING,
    C: TaskStatus.DONE,
    F: TaskStatus.FAILED,
    X: TaskStatus.FAILED,
    K: TaskStatus.CANCELLED,
}

#: task status -> the actions allowed in it.
TASK_ACTIONS: dict[TaskStatus, set[TaskAction]] = {
    TaskStatus.PENDING: {TaskAction.CANCEL},
    TaskStatus.PROCESSING: {TaskAction.CANCEL},
    TaskStatus.DONE: {TaskAction.REPROCESS},
    TaskStatus.FAILED: {TaskAction.RETRY, TaskAction.REPROCESS},
    TaskStatus.CANCELLED: {TaskAction.RETRY, TaskAction.REPROCESS},
}

FROM_STATUSES: list[WorkflowStatus | None] = [None, *WorkflowStatus]


def _name(status: WorkflowStatus | None) -> str:
    return "new" if status is None else status.value


def test_every_status_and_writer_is_classified() -> None:
    assert set(WorkflowStatus) == LIVE | TERMINAL and not LIVE & TERMINAL
    assert set(ALLOWED) == set(Writer)
    assert set(TASK_STATUS) == set(WorkflowStatus)
    assert set(TASK_ACTIONS) == set(TaskStatus)
    assert lifecycle.TERMINAL_WORKFLOW_STATUSES == TERMINAL
    assert lifecycle.LIVE_WORKFLOW_STATUSES == LIVE
    names = {_name(s) for s in FROM_STATUSES}
    for moves in ALLOWED.values():  # no typo in the hand-written moves
        for move in moves:
            current, new = move.split(" -> ")
            assert current in names and new in names - {"new"}, move


@pytest.mark.parametrize(
    ("writer", "current", "new"),
    list(itertools.product(Writer, FROM_STATUSES, WorkflowStatus)),
    ids=lambda v: _name(v) if not isinstance(v, Writer) else v.value,
)
def test_each_move_is_allowed_or_refused_as_written(
    writer: Writer, current: WorkflowStatus | None, new: WorkflowStatus
) -> None:
    expected = f"{_name(current)} -> {new.value}" in ALLOWED[writer]
    assert lifecycle.allows(writer, current, new) is expected


@pytest.mark.parametrize("status", list(WorkflowStatus))
def test_is_terminal_and_the_task_status_for_each_workflow_status(
    status: WorkflowStatus,
) -> None:
    assert lifecycle.is_terminal(status) is (status in TERMINAL)
    assert lifecycle.task_status_for(status) is TASK_STATUS[status]
    assert lifecycle.task_is_live(TASK_STATUS[status]) is (status in LIVE)


@pytest.mark.parametrize(
    ("action", "status"), list(itertools.product(TaskAction, TaskStatus)), ids=str
)
def test_each_task_action_is_allowed_or_refused_as_written(
    action: TaskAction, status: TaskStatus
) -> None:
    assert lifecycle.task_allows(action, status) is (action in TASK_ACTIONS[status])


@pytest.mark.parametrize("status", list(WorkflowStatus))
def test_task_actions_agree_with_the_workflow_table(status: WorkflowStatus) -> None:
    """What a person may do with a task follows from its current workflow's status."""
    task_status = lifecycle.task_status_for(status)
    assert lifecycle.task_allows(TaskAction.CANCEL, task_status) is lifecycle.allows(
        Writer.CANCEL, status, K
    )
    # A new attempt only once the current one has ended; a retry only if it did not succeed.
    assert lifecycle.task_allows(TaskAction.REPROCESS, task_status) is (status in TERMINAL)
    assert lifecycle.task_allows(TaskAction.RETRY, task_status) is (status in TERMINAL - {C})


def test_rules_every_writer_keeps() -> None:
    for writer, current, new in itertools.product(Writer, FROM_STATUSES, WorkflowStatus):
        if not lifecycle.allows(writer, current, new):
            continue
        if current is R:
            assert new is not Q, writer  # a started run is never queued again
        if current in TERMINAL and writer is not Writer.RECONCILER:
            assert (writer, current, new) == (Writer.DISPATCHER, F, Q)
        if current is None:
            assert (writer, new) == (Writer.NEW_ATTEMPT, lifecycle.WAITING_FOR_RUN)


def test_derived_sets() -> None:
    assert lifecycle.PLAIN_REPORT_STATUSES == (Q, R)
    assert lifecycle.plain_report_matches(None) == (Q, R)
    assert lifecycle.plain_report_matches(R) == (R,)
    assert lifecycle.plain_report_matches(Q) == (Q,)
    for status in TERMINAL:
        assert lifecycle.plain_report_matches(status) == ()
    assert {F, X, K} == lifecycle.CORRECTABLE_TERMINAL_STATUSES
    assert {TaskStatus.PENDING, TaskStatus.PROCESSING} == lifecycle.LIVE_TASK_STATUSES
    assert lifecycle.task_statuses_for(TaskAction.RETRY) == (
        TaskStatus.FAILED,
        TaskStatus.CANCELLED,
    )


def test_the_dispatch_index_holds_the_rows_waiting_for_a_run() -> None:
    """db.models cannot import the domain, so its partial index spells the status out."""
    table = cast(Table, Workflow.__table__)
    (index,) = [i for i in table.indexes if i.name == "ix_workflows_undispatched"]
    for dialect in ("postgresql", "sqlite"):
        where = str(index.dialect_options[dialect]["where"])
        assert f"status = '{lifecycle.WAITING_FOR_RUN.value}'" in where


def test_the_flows_terminal_statuses_are_the_lifecycles() -> None:
    from flows.progress import TERMINAL_WORKFLOW_STATUSES

    assert {status.value for status in TERMINAL} == TERMINAL_WORKFLOW_STATUSES


# -- the hot path's SQL -----------------------------------------------------------------------


def _sql(statement: Any) -> str:
    """The statement as PostgreSQL gets it, with the constants' values written in."""
    compiled = statement.compile(dialect=postgresql.dialect())
    sql = compiled.string
    for name, bind in compiled.binds.items():
        if isinstance(bind.value, str):
            sql = sql.replace(f"%({name})s", f"'{bind.value}'")
    return sql


def _task_case(sql: str) -> dict[str, str]:
    """The task update's CASE: workflow status -> task status."""
    (case,) = re.findall(r"UPDATE tasks SET status=CASE (.*?) END", sql)
    assert "ELSE" not in case
    return dict(re.findall(r"WHEN \(w\.status = '(\w+)'\) THEN '(\w+)'", case))


def _live_params(sql: str) -> list[str]:
    """The parameters the workflow update's status must be one of."""
    (in_list,) = re.findall(r"workflows\.status IN \((.*?)\) RETURNING", sql)
    return re.findall(r"%\((live_\d+)\)s", in_list)


def test_the_hot_path_sql_follows_the_table() -> None:
    sql = _sql(workflows_module._SINGLE_STATEMENT_PROGRESS)
    assert _task_case(sql) == {
        status.value: lifecycle.task_status_for(status).value
        for status in lifecycle.PLAIN_REPORT_STATUSES
    }
    assert _task_case(sql) == {"queued": "pending", "running": "processing"}
    assert len(_live_params(sql)) == len(lifecycle.PLAIN_REPORT_STATUSES)
    sqlite = _sql(workflows_module._PLAIN_WORKFLOW_UPDATE)
    assert _live_params(sqlite) == _live_params(sql)


def test_a_different_table_makes_different_sql() -> None:
    """The statement is generated: a table where only running rows take plain reports, and
    a running workflow shows its task as done, gives a CASE and parameters to match."""
    sql = _sql(
        workflows_module._single_statement_progress(
            plain=(R,), task_status_for={**TASK_STATUS, R: TaskStatus.DONE}
        )
    )
    assert _task_case(sql) == {"running": "done"}
    assert _live_params(sql) == ["live_0"]


@pytest.mark.parametrize("status", [None, *WorkflowStatus])
def test_the_hot_path_parameters_match_only_rows_that_keep_their_status(
    status: WorkflowStatus | None,
) -> None:
    """A report may take the hot path only when the table lets it leave the row's status as
    it is; its parameters then name exactly the statuses it may land on."""
    update = workflows_module.ProgressUpdate(uuid.uuid4(), uuid.uuid4(), status=status)
    plain = workflows_module._is_plain_progress(update)
    landing = {s for s in WorkflowStatus if lifecycle.allows(Writer.REPORT, s, status or s)}
    keeps = {s for s in landing if status is None or s is status}
    assert plain is bool(keeps)
    if plain:
        params = workflows_module._plain_params(status)
        assert workflows_module._PLAIN_PARAMS[status] == params
        assert set(params) == {f"live_{n}" for n in range(len(lifecycle.PLAIN_REPORT_STATUSES))}
        assert set(params.values()) == keeps


def test_the_status_names_spelled_out_for_the_wire_agree_with_the_table() -> None:
    """OpenAPI, the Prefect UI form and the CLI need the names as literals; they must say
    what the table says (the statuses that exist, the ones a task may be reprocessed in,
    the ones a task ends in)."""
    from typing import get_args, get_type_hints

    from api.schemas import ReprocessRequest, WorkflowStatusName
    from cli.client import TERMINAL_STATUSES
    from flows.reprocessing import ReprocessParameters

    def literal_values(annotation: Any) -> set[str]:
        return {v for arg in get_args(annotation) for v in get_args(arg) if isinstance(v, str)}

    assert set(get_args(WorkflowStatusName)) == {s.value for s in WorkflowStatus}
    reprocessable = {s.value for s in lifecycle.task_statuses_for(TaskAction.REPROCESS)}
    assert literal_values(get_type_hints(ReprocessRequest)["status"]) == reprocessable
    assert literal_values(get_type_hints(ReprocessParameters)["status"]) == reprocessable
    ended = {s.value for s in TaskStatus if not lifecycle.task_is_live(s)}
    assert ended == TERMINAL_STATUSES
