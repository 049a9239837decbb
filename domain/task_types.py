"""The registry of task types: how each validates its payload and which deployment runs it.

Adding a task type means adding one entry to `TASK_TYPES`; nothing else dispatches on the
type's name.
"""

from __future__ import annotations

import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar

import msgspec
from pydantic import BaseModel, TypeAdapter, ValidationError
from pydantic.alias_generators import to_camel, to_snake

from core.episode_metadata import MAX_CHAPTERS
from core.errors import InvalidInputError
from core.formats import FORMATS, check_format_names
from core.keys import InvalidKeyError, validate_episode_id, validate_key
from core.settings import Settings
from domain.contracts import (
    AudioProcessingParameters,
    ChapterList,
    ChapterParameters,
    EpisodeMetadataParameters,
    LoudnessParameters,
    problems,
)
from domain.wire import wire_struct

if TYPE_CHECKING:
    FormatName = str
else:
    #: An output format's name: an enum of the registry's names (in the OpenAPI document too).
    FormatName = Literal[tuple(FORMATS)]

#: A language code such as `en` or `deu`. msgspec searches patterns (`re.search`), where `$`
#: also matches before a final newline: `(?!\n)` refuses "en\n" (and means nothing to the
#: ECMA-regex readers of the OpenAPI document, where `$` is the end already).
LanguageCode = Annotated[str, msgspec.Meta(pattern=r"^[a-z]{2,3}$(?!\n)")]

Payload = TypeVar("Payload", bound=msgspec.Struct)


def decode_payload(payload: Any, model: type[Payload]) -> Payload:
    """`payload` as `model`, or InvalidInputError naming the field (`payload.<field>: ...`)."""
    try:
        return msgspec.convert(payload, model)
    except msgspec.ValidationError as exc:
        raise InvalidInputError(_explain(str(exc), model)) from None


def _explain(message: str, model: type[msgspec.Struct]) -> str:
    """msgspec's message with the field's path first, and what is allowed where that helps:
    the accepted fields for an unknown one, the known values for an enum, the field's
    description for a pattern or a date."""
    problem, _sep, path = message.partition(" - at `$")
    path = path.rstrip("`")
    where, description = _type_at(msgspec.inspect.type_info(model), path)
    if problem.startswith("Object contains unknown field") and isinstance(
        where, msgspec.inspect.StructType
    ):
        problem += f"; accepted: {', '.join(f.encode_name for f in where.fields)}"
    elif problem.startswith("Invalid enum value") and isinstance(
        where, msgspec.inspect.LiteralType
    ):
        problem += f"; known: {', '.join(map(str, where.values))}"
    elif ("matching regex" in problem or problem.startswith("Invalid RFC3339")) and description:
        problem += f" ({description})"
    return f"payload{path}: {problem}"


def _unwrap(info: msgspec.inspect.Type) -> tuple[msgspec.inspect.Type, str | None]:
    """The type under its optional (`| None`) and its metadata, and its description."""
    description = None
    while True:
        if isinstance(info, msgspec.inspect.UnionType):
            info = next(t for t in info.types if not isinstance(t, msgspec.inspect.NoneType))
        elif isinstance(info, msgspec.inspect.Metadata):
            description = (info.extra_json_schema or {}).get("description", description)
            info = info.type
        else:
            return info, description


def _type_at(
    info: msgspec.inspect.Type, path: str
) -> tuple[msgspec.inspect.Type | None, str | None]:
    """The type at a msgspec error path such as `.encodingFormats[0]`, and its description
    (None: not found)."""
    info, description = _unwrap(info)
    for step in path.replace("[", ".[").split(".")[1:]:
        if step.startswith("[") and isinstance(info, msgspec.inspect.ListType):
            info = info.item_type
        elif isinstance(info, msgspec.inspect.StructType):
            field = next((f for f in info.fields if f.encode_name == step), None)
            if field is None:
                return None, None
            info = field.type
        else:
            return None, None
        info, description = _unwrap(info)
    return info, description


# The nested parts of the payload: fields, types, bounds, defaults and descriptions of the
# contract models the flow takes (`domain.contracts`), derived, not written again; what
# needs code (key checks, chapter order, tag text) is the models' validators, run by
# `AudioProcessing.validate`.
if TYPE_CHECKING:

    class LoudnessPayload(msgspec.Struct):
        """What type checkers see; the fields are those of `LoudnessParameters`."""

    class EpisodeMetadataPayload(msgspec.Struct):
        """What type checkers see; the fields are those of `EpisodeMetadataParameters`."""

    class ChapterPayload(msgspec.Struct):
        """What type checkers see; the fields are those of `ChapterParameters`."""

else:
    LoudnessPayload = wire_struct(
        "LoudnessPayload",
        LoudnessParameters,
        doc="Loudness targets (ITU-R BS.1770 / EBU R128); every field optional.",
    )
    EpisodeMetadataPayload = wire_struct(
        "EpisodeMetadataPayload",
        EpisodeMetadataParameters,
        doc="Episode tags written into every output that carries tags; every field "
        "optional. Text fields are one line (no control characters) except `description`.",
    )
    ChapterPayload = wire_struct(
        "ChapterPayload",
        ChapterParameters,
        doc="One chapter. Chapters are sorted by `startTime`, one per start time, and "
        "start within the audio.",
    )

#: The pydantic checks of the payload's nested parts (the contract's own types).
_CHAPTERS = TypeAdapter(ChapterList)
#: What an absent `loudness` means (and what payloads stored before it existed mean).
DEFAULT_LOUDNESS = LoudnessParameters()


class AudioProcessingPayload(
    msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True
):
    """The payload of an `audio_processing` task: which audio, which outputs, and how they
    sound and are tagged."""

    episode_id: Annotated[
        str, msgspec.Meta(description="The episode; its outputs' keys start with it")
    ]
    encoding_formats: Annotated[
        list[FormatName],
        msgspec.Meta(description="Output formats to encode, each once (may be empty)"),
    ]
    audio_key: Annotated[
        str | None,
        msgspec.Meta(description="Object key of the source audio (this or `audioR2Key`)"),
    ] = None
    audio_r2_key: Annotated[
        str | None,
        msgspec.Meta(description="Alias of `audioKey`, as existing clients send it"),
    ] = None
    transcribe: Annotated[bool, msgspec.Meta(description="Also transcribe the speech")] = True
    language: Annotated[
        LanguageCode | None,
        msgspec.Meta(description="Spoken language code such as `en`; absent or null: detected"),
    ] = None
    loudness: Annotated[
        LoudnessPayload | msgspec.UnsetType | None,
        msgspec.Meta(
            description="Loudness every output is brought to (integrated loudness and true "
            "peak, measured again after encoding). Absent: the podcast norm, -16 LUFS "
            "stereo, -19 LUFS mono, true peak -1 dBTP; an object: those targets, each field "
            "defaulting as said; null: no normalisation, the source's loudness is kept"
        ),
    ] = msgspec.UNSET
    metadata: Annotated[
        EpisodeMetadataPayload | None,
        msgspec.Meta(
            description="Episode tags (and cover art) for every output: ID3v2 on MP3, MP4 "
            "atoms on AAC, Vorbis comments on Opus and FLAC. Absent or null: no tags (the "
            "source's tags are never copied)"
        ),
    ] = None
    chapters: Annotated[
        Annotated[list[ChapterPayload], msgspec.Meta(max_length=MAX_CHAPTERS)] | None,
        msgspec.Meta(
            description="Chapters written into every output that carries them and "
            "published as a Podcasting 2.0 chapters file. Absent or null: the source's "
            "own chapters, if it has any; []: no chapters",
        ),
    ] = None
    waveform: Annotated[
        bool,
        msgspec.Meta(
            description="Also write a waveform file (BBC audiowaveform JSON, version 2, "
            "8 bits) for web players such as peaks.js"
        ),
    ] = True


class TaskType(Protocol):
    """What the task service needs to know about one kind of task."""

    @property
    def name(self) -> str:
        """The `tasks.type` value."""
        ...

    @property
    def workflow_name(self) -> str:
        """The `workflows.name` of its runs."""
        ...

    @property
    def payload_model(self) -> type[msgspec.Struct]:
        """The payload's shape: decoded by `validate`, published in the OpenAPI document."""
        ...

    def validate(self, payload: Any) -> dict[str, Any]:
        """The payload in canonical form, or InvalidInputError naming what is wrong."""
        ...

    def comparable(self, canonical: dict[str, Any]) -> dict[str, Any]:
        """The canonical payload as idempotent repeats compare it (and digest it): fields
        added to the type later are left out while they hold what their absence means."""
        ...

    def deployment_name(self, settings: Settings) -> str:
        """`flow/deployment` that runs this type."""
        ...

    def flow_parameters(
        self, task_id: str, workflow_id: str, payload: dict[str, Any], attempt: int
    ) -> dict[str, Any]:
        """The attempt's parameters as `workflows.parameters` stores them (`attempt`: the
        workflow's attempt number)."""
        ...

    def flow_run_parameters(self, stored: dict[str, Any]) -> dict[str, Any]:
        """The parameters to create the flow run with, from the stored ones (whatever
        shape a row from an older version stored)."""
        ...

    def episode_id(self, payload: dict[str, Any]) -> str | None:
        """The episode the task is about, for filtering."""
        ...


@dataclass(frozen=True)
class AudioProcessing:
    """Encode an episode's audio to several formats and transcribe it."""

    name: str = "audio_processing"
    workflow_name: str = "audio-processing"

    payload_model: type[AudioProcessingPayload] = AudioProcessingPayload

    def validate(self, payload: Any) -> dict[str, Any]:
        """Types, names and the language pattern are the model's (`AudioProcessingPayload`);
        here the rules that span fields or need the key checks of `core.keys`."""
        decoded = decode_payload(payload, AudioProcessingPayload)
        # `audioR2Key` is what the existing clients send; `audioKey` is the canonical name.
        audio_key = decoded.audio_key if decoded.audio_key is not None else decoded.audio_r2_key
        if decoded.audio_r2_key is not None and audio_key != decoded.audio_r2_key:
            raise InvalidInputError("payload.audioKey and payload.audioR2Key disagree")
        if audio_key is None:
            raise InvalidInputError(
                "payload.audioKey (or audioR2Key) is required and must be a string"
            )
        try:
            validate_episode_id(decoded.episode_id)
        except InvalidKeyError as exc:
            raise InvalidInputError(f"payload.episodeId: {exc}") from exc
        try:
            validate_key(audio_key)
        except InvalidKeyError as exc:
            raise InvalidInputError(f"payload.audioKey: {exc}") from exc
        formats = decoded.encoding_formats
        if not formats and not decoded.transcribe:
            raise InvalidInputError("nothing to do: no encodingFormats and transcribe is false")
        try:  # the model knows the names; the registry's one check also refuses repeats
            check_format_names(formats)
        except ValueError as exc:
            raise InvalidInputError(f"payload.encodingFormats: {exc}") from None
        return {
            "episodeId": decoded.episode_id,
            "audioKey": audio_key,
            "encodingFormats": formats,
            "transcribe": decoded.transcribe,
            "language": decoded.language,
            **_sound_and_tags(decoded),
        }

    def comparable(self, canonical: dict[str, Any]) -> dict[str, Any]:
        """Without the fields added by issue 12 while they hold what their absence means:
        a request made before they existed (its digest kept on the row) compares equal to
        the same request made now, and a payload stored then to its canonical form now."""
        return {
            key: value
            for key, value in canonical.items()
            if key not in _ABSENT or value != _ABSENT[key]
        }

    def deployment_name(self, settings: Settings) -> str:
        return settings.prefect.audio_deployment

    def flow_parameters(
        self, task_id: str, workflow_id: str, payload: dict[str, Any], attempt: int
    ) -> dict[str, Any]:
        # A payload stored before loudness, tags, chapters and waveforms existed has none
        # of those keys: each then takes the contract's default (loudness: the defaults).
        later = {to_snake(key): _snake(payload[key]) for key in _ABSENT if key in payload}
        return AudioProcessingParameters(
            task_id=uuid.UUID(task_id),
            workflow_id=uuid.UUID(workflow_id),
            episode_id=payload["episodeId"],
            audio_key=payload["audioKey"],
            encoding_formats=payload["encodingFormats"],
            transcribe=payload["transcribe"],
            language=payload["language"],
            # Names the attempt's own output folder (core.keys.attempt_prefix).
            attempt=attempt,
            **later,
        ).stored()

    def flow_run_parameters(self, stored: dict[str, Any]) -> dict[str, Any]:
        return AudioProcessingParameters.from_run_parameters(stored).flow_run_parameters()

    def episode_id(self, payload: dict[str, Any]) -> str | None:
        return str(payload["episodeId"])


def _rekeyed(value: Any, spell: Callable[[str], str]) -> Any:
    """`value` with the keys of every mapping in it (at any depth) spelled by `spell`."""
    if isinstance(value, Mapping):
        return {spell(k): _rekeyed(v, spell) for k, v in value.items()}
    if isinstance(value, list):
        return [_rekeyed(v, spell) for v in value]
    return value


def _camel(value: Any) -> Any:
    """A contract model's JSON form with camelCase keys, as the payload spells them."""
    return _rekeyed(value, to_camel)


def _snake(value: Any) -> Any:
    """A payload part with the contract models' snake_case keys."""
    return _rekeyed(value, to_snake)


def _checked(model: type[BaseModel] | TypeAdapter[Any], value: Any, where: str) -> Any:
    """`value` (snake_case) validated by a contract type; InvalidInputError naming the
    field as clients spell it (`payload.chapters[1].startTime: ...`)."""
    try:
        if isinstance(model, TypeAdapter):
            return model.validate_python(value)
        return model.model_validate(value)
    except ValidationError as exc:
        raise InvalidInputError(problems(exc, to_camel, prefix=where)) from None


def _sound_and_tags(decoded: AudioProcessingPayload) -> dict[str, Any]:
    """The canonical `loudness`, `metadata`, `chapters` and `waveform`: checked by the
    contract models the flow takes, with what absence means resolved (loudness: the
    defaults, the mono target spelled out) and empty metadata as null."""
    if decoded.loudness is msgspec.UNSET:
        loudness: LoudnessParameters | None = DEFAULT_LOUDNESS
    elif decoded.loudness is None:
        loudness = None
    else:
        loudness = _checked(
            LoudnessParameters, msgspec.structs.asdict(decoded.loudness), "payload.loudness"
        )
    metadata = None
    if decoded.metadata is not None:
        checked = _checked(
            EpisodeMetadataParameters,
            msgspec.structs.asdict(decoded.metadata),
            "payload.metadata",
        )
        dumped = checked.model_dump(mode="json")
        metadata = _camel(dumped) if any(v is not None for v in dumped.values()) else None
    chapters = None
    if decoded.chapters is not None:
        items = [msgspec.structs.asdict(c) for c in decoded.chapters]
        chapters = [
            _camel(c.model_dump(mode="json"))
            for c in _checked(_CHAPTERS, items, "payload.chapters")
        ]
    return {
        "loudness": None if loudness is None else _camel(loudness.resolved().model_dump()),
        "metadata": metadata,
        "chapters": chapters,
        "waveform": decoded.waveform,
    }


#: The payload fields issue 12 added, and the canonical value that means the same as their
#: absence (what a payload stored before them means).
_ABSENT: dict[str, Any] = {
    "loudness": _camel(DEFAULT_LOUDNESS.resolved().model_dump()),
    "metadata": None,
    "chapters": None,
    "waveform": True,
}


TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (AudioProcessing(),)}


def get_task_type(name: str) -> TaskType:
    """The registered type, or InvalidInputError listing the known ones."""
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise InvalidInputError(
            f"unknown task type {name!r}; known: {', '.join(TASK_TYPES)}"
        ) from None
