"""Services: the rules and the transactions. Controllers call these; these call repositories."""

from api.services.tasks import TaskService
from api.services.workflows import ProgressUpdate, WorkflowService

__all__ = ["ProgressUpdate", "TaskService", "WorkflowService"]
