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

import datetime as dt
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
    model_validator,
)
from pydantic.alias_generators import to_camel

from core.episode_metadata import (
    MAX_CHAPTERS,
    MAX_DESCRIPTION_CHARS,
    MAX_TEXT_CHARS,
    Chapter,
    ChapterError,
    EpisodeMetadata,
    MetadataError,
    validate_chapters,
)
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
    "ChapterList",
    "ChapterParameters",
    "ChaptersSummary",
    "EpisodeMetadataParameters",
    "ErrorKind",
    "LoudnessFigures",
    "LoudnessParameters",
    "ReprocessParameters",
    "SourceSummary",
    "TranscriptSummary",
    "WaveformSummary",
    "problems",
]


class ErrorKind(StrEnum):
    """Whether trying again could help a failed task: the reconciler retries `transient`
    failures (an unreachable store, a full disk, a crash), never `permanent` ones (bad
    audio, a bad parameter)."""

    TRANSIENT = "transient"
    PERMANENT = "permanent"


def problems(
    exc: ValidationError, rename: Callable[[str], str] = str, *, prefix: str = ""
) -> str:
    """A `ValidationError` in one line that names each field (`encoding_formats: unknown
    encoding format(s): mp3_999; known: ...`, `chapters[1].start_time: ...`), for a task's
    error or a 422's detail; `rename` spells field names as the reader knows them
    (`to_camel` for HTTP clients), `prefix` is where the validated value sits
    (`payload.loudness`)."""
    parts = []
    for error in exc.errors(include_url=False):
        where = prefix
        for part in error["loc"]:
            if isinstance(part, int):
                where += f"[{part}]"
            else:
                where += f".{rename(part)}" if where else rename(part)
        message = str(error["msg"]).removeprefix("Value error, ")
        parts.append(f"{where or 'parameters'}: {message}")
    return "; ".join(parts)


# -- audio processing: parameters -------------------------------------------------------

#: Name of the audio-processing flow's one parameter: a run's parameters are
#: `{FLOW_PARAMETER: AudioProcessingParameters.stored()}`.
FLOW_PARAMETER = "params"


def _episode_id(value: str) -> str:
    return validate_episode_id(value)


def _object_key(value: str) -> str:
    return validate_key(value)


_Text = Annotated[str, Field(min_length=1, max_length=MAX_TEXT_CHARS)]


class LoudnessParameters(BaseModel):
    """The loudness every output is brought to (ITU-R BS.1770 / EBU R128); the defaults are
    the podcast norm: -16 LUFS stereo, -19 LUFS mono, true peak at most -1 dBTP."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    target_lufs: float = Field(
        default=-16.0, ge=-40.0, le=-5.0, description="Integrated loudness of stereo outputs, LUFS."
    )
    true_peak_dbtp: float = Field(
        default=-1.0, ge=-9.0, le=0.0, description="Highest true peak of every output, dBTP."
    )
    target_lufs_mono: float | None = Field(
        default=None,
        # Down to the lowest stereo target - 3, so the mono target that follows from any
        # stereo target can also be given (and stored resolved, `resolved()`).
        ge=-43.0,
        le=-5.0,
        description="Integrated loudness of mono outputs, LUFS; empty: the stereo target - 3.",
    )

    def resolved(self) -> LoudnessParameters:
        """The same loudness with the mono target spelled out (the stereo target - 3 when
        not given): the form a task's payload stores, so equal requests compare equal."""
        if self.target_lufs_mono is not None:
            return self
        return self.model_copy(update={"target_lufs_mono": self.target_lufs - 3.0})


class EpisodeMetadataParameters(BaseModel):
    """Episode metadata written as tags into every output that carries tags. The rules
    (lengths, one-line fields, the episode number's range) are `core.episode_metadata`'s."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    title: _Text | None = Field(default=None, description="Episode title.")
    artist: _Text | None = Field(default=None, description="Artist or host.")
    album: _Text | None = Field(default=None, description="Album: usually the show's name.")
    date: dt.date | None = Field(default=None, description="Release date, YYYY-MM-DD.")
    episode_number: int | None = Field(
        default=None, ge=0, le=999_999, description="Episode (track) number."
    )
    description: Annotated[str, Field(min_length=1, max_length=MAX_DESCRIPTION_CHARS)] | None = (
        Field(default=None, description="Episode description (comment tag).")
    )
    cover_key: Annotated[str, AfterValidator(_object_key)] | None = Field(
        default=None,
        description="Object key of the cover art: a JPEG or PNG (size limit "
        "AUDIOFLOW_COVER_MAX_BYTES), embedded in every output.",
    )

    def as_metadata(self) -> EpisodeMetadata:
        """The tag writer's form, without the cover (the flow fetches and checks that);
        MetadataError naming the first field that cannot be written as a tag."""
        return EpisodeMetadata.checked(
            title=self.title,
            artist=self.artist,
            album=self.album,
            date=self.date,
            episode_number=self.episode_number,
            description=self.description,
        )

    @model_validator(mode="after")
    def _writable(self) -> EpisodeMetadataParameters:
        try:
            self.as_metadata()
        except MetadataError as exc:
            raise ValueError(str(exc)) from None
        return self


class ChapterParameters(BaseModel):
    """One chapter of the payload's `chapters`."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    start_time: float = Field(
        ge=0.0, description="Start, in seconds from the beginning of the audio."
    )
    title: _Text = Field(description="Chapter title.")
    url: Annotated[str, Field(max_length=MAX_TEXT_CHARS, pattern=r"^https?://\S+$")] | None = (
        Field(default=None, description="A web page about the chapter (chapters file only).")
    )
    image_key: Annotated[str, AfterValidator(_object_key)] | None = Field(
        default=None,
        description="Object key of the chapter's image (chapters file only: `img`, the key "
        "under AUDIOFLOW_PUBLIC_BASE_URL).",
    )

    def as_chapter(self, image_url: str | None = None) -> Chapter:
        """The tag writer's and chapters file's form; `image_url`: where `image_key` is
        published."""
        return Chapter(start_s=self.start_time, title=self.title, url=self.url, image=image_url)


def _chapters(value: list[ChapterParameters]) -> list[ChapterParameters]:
    """Sorted, one per start time, titles writable: `core.episode_metadata`'s rules (the
    audio's length is checked by the flow, which knows it)."""
    try:
        validate_chapters([c.as_chapter() for c in value])
    except ChapterError as exc:
        raise ValueError(str(exc)) from None
    return value


#: A chapter list as a task may give it: at most `MAX_CHAPTERS`, each chapter valid, the
#: whole list in order (`_chapters`). One type for the flow's parameters and the API's
#: payload check (`domain.task_types`).
ChapterList = Annotated[
    list[ChapterParameters], Field(max_length=MAX_CHAPTERS), AfterValidator(_chapters)
]


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
    loudness: LoudnessParameters | None = Field(
        default_factory=LoudnessParameters,
        description="Loudness every output is brought to; empty: the source's loudness is "
        "kept (runs created before loudness normalisation read as the defaults).",
    )
    metadata: EpisodeMetadataParameters | None = Field(
        default=None, description="Episode tags (and cover art) for every output."
    )
    waveform: bool = Field(
        default=True,
        description="Also write a waveform file (BBC audiowaveform JSON) for web players.",
    )
    chapters: ChapterList | None = Field(
        default=None,
        description="Chapters for every output and the chapters file; empty (null): the "
        "source's own chapters, if it has any; []: none.",
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
    #: Measured after encoding, by a second meter (not the one that set the gain).
    loudness: LoudnessFigures | None = None
    #: The tag fields written into the file (`title`, `cover`, ...), and its chapters.
    tags: list[str] | None = None
    chapters: int | None = None


class LoudnessFigures(_Wire):
    """One loudness measurement (ffmpeg `ebur128`, BS.1770-4); None where the meter has no
    finite figure (silence)."""

    integrated_lufs: float | None = None
    loudness_range_lu: float | None = None
    true_peak_dbtp: float | None = None


class SourceSummary(_Wire):
    """The source audio the attempt read."""

    key: str
    duration_s: float
    codec: str
    #: Measured in the source's decode check, by the mix the outputs are made from
    #: (`stereo`: as the source is, up to two channels; `mono`: the mono downmix).
    loudness: dict[str, LoudnessFigures] | None = None
    #: How many chapters the source itself carried (read when the payload gave none).
    chapters: int | None = None


class TranscriptSummary(_Wire):
    """The transcript files (transcript format name -> key) and what they say."""

    keys: dict[str, str]
    language: str | None = None
    #: How sure the model was of `language` (0..1); None when it was not detected (given
    #: in the payload, or an English-only model such as the shipped tiny.en).
    language_probability: float | None = None
    segments: int | None = None
    #: Segments the engine produced but left out for failing its own quality thresholds
    #: (repetition loops and other likely hallucinations).
    dropped_segments: int | None = None
    first_lines: list[str] | None = None


class ChaptersSummary(_Wire):
    """The Podcasting 2.0 chapters file (`application/json+chapters`, version 1.2.0)."""

    key: str
    count: int | None = None
    #: `payload` (the task's `chapters`) or `source` (read from the source audio).
    origin: Literal["payload", "source"] | None = None


class WaveformSummary(_Wire):
    """The waveform file (BBC audiowaveform JSON, version 2, 8 bits) for web players."""

    key: str
    sample_rate: int | None = None
    samples_per_pixel: int | None = None
    #: Pixels (min/max pairs).
    length: int | None = None


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
    chapters: ChaptersSummary | None = None
    waveform: WaveformSummary | None = None
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
