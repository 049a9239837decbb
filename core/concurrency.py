"""Names of the Prefect concurrency limits audioflow's flows take slots from.

Transcription uses every core it is given: two at once on the same machine each run at
half speed and hold a model each, so the `transcribe` task carries a tag whose Prefect
limit (`AUDIOFLOW_TRANSCRIPTION_SLOTS`, set by `audioflow deploy`) lets that many run
at a time across the pool. Encoding, download and upload are not limited.
"""

from __future__ import annotations

#: Tag on the `transcribe` task; Prefect's limit for it is the global limit `tag:<name>`.
TRANSCRIPTION_TAG = "audioflow-transcription"


def tag_limit_name(tag: str) -> str:
    """The global concurrency limit Prefect checks for a task tag."""
    return f"tag:{tag}"
