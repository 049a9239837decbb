"""Upload a run's checked outputs to object storage, under its attempt's own folder (core.keys)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

from core.storage import get_store
from flows.progress import WorkflowProgressReporter
from flows.steps.options import step


@dataclass(frozen=True)
class PlannedUpload:
    """One local file and the key it goes to."""

    key: str
    path: Path
    content_type: str


@step("upload-outputs")
def upload_outputs(
    uploads: list[PlannedUpload], reporter: WorkflowProgressReporter
) -> dict[str, int]:
    """Put every file (multipart for large ones); returns key -> size.

    A retry re-puts every file: puts are idempotent overwrites of the run's own keys.
    Before each object the API is asked whether the workflow is still live
    (`reporter.checkpoint`): once it is terminal, nothing more is uploaded.
    """
    store = get_store()
    sizes: dict[str, int] = {}
    total = sum(u.path.stat().st_size for u in uploads) or 1
    done = 0
    for upload in uploads:
        reporter.checkpoint("upload", f"uploading {upload.key}")
        sizes[upload.key] = store.put_file(upload.key, upload.path, upload.content_type)
        done += sizes[upload.key]
        reporter.update("upload", done / total, f"uploaded {upload.key}")
    reporter.finish_step("upload", f"uploaded {len(uploads)} files to {store.describe()}")
    return sizes
