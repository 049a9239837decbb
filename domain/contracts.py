"""The messages that cross a process boundary, typed once: what the API hands a flow run,
what the flow hands back, and the words both use for a failure.

* `AudioProcessingParameters`: the audio-processing flow run's input. Its flat JSON form
  (`stored()`) is what `workflows.parameters` holds; the flow takes it as one parameter
  (`FLOW_PARAMETER`), so the Prefect UI's run form shows every field with its help text.
  Runs and rows created before it (the eight fields as separate flow parameters) are read
  through the same function, `AudioProcessingParameters.from_run_parameters`.
* `AudioProcessingResult`: the result the flow posts and the reconciler rebuilds from the
  store, stored on the workflow and the task and served as `result` (camelCase).
* `ReprocessParameters`: the reprocessing flow run's input; `POST /reprocess` takes the
  same fields (the API's request struct is derived from this model).
* `ErrorKind`: whether a failed task may be retried; stored in `tasks.error_kind` and sent
  as `errorKind`, so its values are the strings those always held.

Plain pydantic models (Prefect builds its parameter forms from pydantic), importing neither
Prefect nor Litestar.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from datetime import datetime
from enum import StrEnum
from typing import Annotated, Any, ClassVar, Literal

from pydantic import (
    AfterValidator,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
)
from pydantic.alias_generators import to_camel

from core.formats import check_format_names, format_names
from core.keys import (
    attempt_label,
    attempt_prefix,
    validate_episode_id,
    validate_key,
)

__all__ = [
    "FLOW_PARAMETER",
    "AudioOutput",
    "AudioProcessingParameters",
    "AudioProcessingResult",
    "ErrorKind",
    "ReprocessParameters",
    "SourceSummary",
    "TranscriptSummary",
    "problems",
]


class ErrorKind(StrEnum):
    """Whether trying again could help a failed task: the reconciler retries `transient`
    failures (an unreachable store, a full disk, a crash), never `permanent` ones (bad
    audio, a bad parameter)."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


def problems(exc: ValidationError, rename: Callable[[str], str] = str) -> str:
    """A `ValidationError` in one line that names each field (`encoding_formats: unknown
    encoding format(s): mp3_999; known: ...`), for a task's error or a 422's detail;
    `rename` spells field names as the reader knows them (`to_camel` for HTTP clients)."""
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(rename(p) if isinstance(p, str) else str(p) for p in error["loc"])
        where = where or "parameters"
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where}: {message}")
    return "; ".join(parts)


# -- audio processing: parameters -------------------------------------------------------

#: Name of the audio-processing flow's one parameter: a run's parameters are
#: `{FLOW_PARAMETER: AudioProcessingParameters.stored()}`.
FLOW_PARAMETER = "params"


def _episode_id(value: str) -> str:
    return validate_episode_id(value)


def _object_key(value: str) -> str:
    return validate_key(value)


class AudioProcessingParameters(BaseModel):
    """What one audio-processing attempt does. Field names are the flow's parameters of
    old, so a stored row or a run in flight from before this model reads as it is."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    task_id: uuid.UUID = Field(description="The audioflow task (database row) this run serves.")
    workflow_id: uuid.UUID = Field(description="The workflow row of this attempt.")
    episode_id: Annotated[str, AfterValidator(_episode_id)] = Field(
        description="Episode id (1-128 of A-Z a-z 0-9 . _ -); output keys start with it."
    )
    audio_key: Annotated[str, AfterValidator(_object_key)] = Field(
        description="Object key of the source audio, e.g. uploads/<id>/episode.mp3."
    )
    encoding_formats: Annotated[list[str], AfterValidator(check_format_names)] = Field(
        default_factory=list,
        description=f"Output formats, each at most once: {', '.join(format_names())}.",
    )
    transcribe: bool = Field(default=True, description="Also transcribe the speech.")
    language: str | None = Field(
        default=None,
        pattern=r"^[a-z]{2,3}$",
        description="Spoken language code such as 'en'; empty detects it.",
    )
    attempt: int | None = Field(
        default=None,
        ge=1,
        le=999_999_999,  # the folder name's bound (`core.keys.attempt_prefix`)
        description="The task's attempt number; outputs go to this attempt's own folder "
        "(runs created without it use the workflow id).",
    )

    # -- the forms it travels in ----------------------------------------------------------

    def stored(self) -> dict[str, Any]:
        """The flat JSON form: what `workflows.parameters` holds (and every run held before
        the flow took one model)."""
        return self.model_dump(mode="json")

    def flow_run_parameters(self) -> dict[str, Any]:
        """The parameters to create the flow run with."""
        return {FLOW_PARAMETER: self.stored()}

    @staticmethod
    def unwrap(parameters: Mapping[str, Any]) -> dict[str, Any]:
        """The flat form of a flow run's (or a workflow row's) parameters, whichever shape
        they were created in: `{"params": {...}}` or the fields at the top level."""
        nested = parameters.get(FLOW_PARAMETER)
        if isinstance(nested, AudioProcessingParameters):
            return nested.stored()
        if isinstance(nested, Mapping):
            return dict(nested)
        return dict(parameters)

    @classmethod
    def from_run_parameters(cls, parameters: Mapping[str, Any]) -> AudioProcessingParameters:
        """The parameters of a run or row in either shape; `ValidationError` naming the
        field when they are not valid."""
        return cls.model_validate(cls.unwrap(parameters))

    @classmethod
    def read(
        cls, parameters: Mapping[str, Any] | AudioProcessingParameters | None
    ) -> AudioProcessingParameters | None:
        """Like `from_run_parameters`, but None for parameters that are not a valid
        attempt's (a row made by hand, a run started with bad parameters): such a run
        wrote nothing, so there is nothing to expect or clean up."""
        if isinstance(parameters, AudioProcessingParameters):
            return parameters
        try:
            return cls.from_run_parameters(parameters or {})
        except ValidationError:
            return None

    @staticmethod
    def ids_of(parameters: Mapping[str, Any]) -> tuple[str, str] | None:
        """(task id, workflow id) of a run in either shape, even when other fields are
        invalid: the state hooks must report the failure of such a run too."""
        flat = AudioProcessingParameters.unwrap(parameters)
        task_id, workflow_id = flat.get("task_id"), flat.get("workflow_id")
        if not task_id or not workflow_id:
            return None
        return str(task_id), str(workflow_id)

    # -- what follows from it -------------------------------------------------------------

    @property
    def prefix(self) -> str:
        """The folder every object of this attempt lives under (`core.keys`)."""
        return attempt_prefix(
            self.episode_id, str(self.task_id), attempt_label(self.attempt, str(self.workflow_id))
        )

    def with_overrides(self, **changes: Any) -> AudioProcessingParameters:
        """A copy with some fields replaced, validated again."""
        return type(self).model_validate({**self.stored(), **changes})


# -- audio processing: result ------------------------------------------------------------


class _Wire(BaseModel):
    """camelCase on the wire and in the stored JSON, snake_case in Python."""

    model_config = ConfigDict(
        alias_generator=to_camel, populate_by_name=True, extra="forbid", frozen=True
    )


class AudioOutput(_Wire):
    """One encoded format as stored. Only `key` and `size` are known for a result the
    reconciler rebuilt from the store."""

    key: str
    size: int | None = None
    duration_s: float | None = None
    bitrate_kbps: int | None = None
    codec: str | None = None
    channels: int | None = None
    sample_rate: int | None = None


class SourceSummary(_Wire):
    """The source audio the attempt read."""

    key: str
    duration_s: float
    codec: str


class TranscriptSummary(_Wire):
    """The transcript files (transcript format name -> key) and what they say."""

    keys: dict[str, str]
    language: str | None = None
    segments: int | None = None
    first_lines: list[str] | None = None


class AudioProcessingResult(_Wire):
    """What an attempt produced: `result` on the workflow and (merged over attempts) on
    the task. Outputs are keyed by format name, transcript files by transcript format
    name, both by the flow and by the reconciler."""

    episode_id: str | None = None
    #: Where the objects live (`ObjectStore.describe()`).
    storage: str | None = None
    source: SourceSummary | None = None
    outputs: dict[str, AudioOutput] = Field(default_factory=dict)
    transcript: TranscriptSummary | None = None
    #: Rebuilt by the reconciler from the store, the flow's own report having been lost.
    reconstructed: bool = False

    def to_json(self) -> dict[str, Any]:
        """The stored and served form: camelCase, with only the fields that were given
        (a result without a transcript has no `transcript` key, as always)."""
        return self.model_dump(mode="json", by_alias=True, exclude_unset=True)


# -- reprocessing ------------------------------------------------------------------------

_EpisodeIdFilter = Annotated[str, Field(min_length=1, max_length=128)]


class ReprocessParameters(BaseModel):
    """What a reprocessing run does; every field shows in the Prefect UI's run form, and
    those before `housekeeping` are what `POST /reprocess` takes (in camelCase)."""

    model_config = ConfigDict(extra="forbid")

    reconcile: bool = Field(
        default=True, description="Compare queued/running workflows with Prefect and repair them."
    )
    retry_failed: bool = Field(
        default=True, description="Start a new attempt for tasks that failed transiently."
    )
    task_ids: list[uuid.UUID] = Field(default_factory=list, description="Reprocess these tasks.")
    episode_ids: list[_EpisodeIdFilter] = Field(
        default_factory=list, description="Reprocess the tasks of these episodes."
    )
    status: Literal["done", "failed", "cancelled"] | None = Field(
        default=None, description="Reprocess tasks with this status."
    )
    created_after: datetime | None = Field(default=None, description="Only tasks created since.")
    created_before: datetime | None = Field(default=None, description="Only tasks created before.")
    add_formats: Annotated[list[str], AfterValidator(check_format_names)] = Field(
        default_factory=list,
        description="Formats to add (only these are encoded for tasks that are done).",
    )
    dry_run: bool = Field(default=False, description="List what would happen; change nothing.")
    limit: int = Field(default=1000, ge=1, le=100_000, description="At most this many tasks.")
    stale_after_s: float = Field(
        default=600,
        ge=30,
        le=86_400,
        description="Running with no progress this long counts as dead.",
    )
    # Worker-side chores of the scheduled runs; not offered through the API.
    housekeeping: bool = Field(
        default=True,
        description="Rewrite missing or stale episode manifests; with "
        "AUDIOFLOW_OUTPUT_RETENTION_DAYS set, remove old output versions no manifest names.",
    )
    sweep_temp: bool = Field(
        default=True,
        description="Remove this worker's temp folders of runs that are no longer live.",
    )

    #: Fields the API does not offer (worker-side chores).
    WORKER_ONLY: ClassVar[frozenset[str]] = frozenset({"housekeeping", "sweep_temp"})

    def selects_tasks(self) -> bool:
        """Whether the run reprocesses a selection of tasks (else it only repairs)."""
        return bool(
            self.task_ids
            or self.episode_ids
            or self.status
            or self.created_after
            or self.created_before
            or self.add_formats
        )

    def requested(self) -> dict[str, Any]:
        """The JSON form of the fields a request sets (what `POST /reprocess` starts a run
        with and answers with)."""
        return self.model_dump(mode="json", exclude=set(self.WORKER_ONLY))
