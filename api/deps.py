"""Dependency providers: services built once at start-up, handed to handlers by name."""

from __future__ import annotations

from litestar.datastructures import State

from domain.tasks import TaskService
from domain.uploads import UploadService
from domain.workflows import WorkflowService


def provide_task_service(state: State) -> TaskService:
    """The process's TaskService."""
    service: TaskService = state.task_service
    return service


def provide_workflow_service(state: State) -> WorkflowService:
    """The process's WorkflowService."""
    service: WorkflowService = state.workflow_service
    return service


def provide_upload_service(state: State) -> UploadService:
    """The process's UploadService."""
    service: UploadService = state.upload_service
    return service
