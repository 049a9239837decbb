"""The registry of task types: how each validates its payload and which deployment runs it.

Adding a task type means adding one entry to `TASK_TYPES`; nothing else dispatches on the
type's name.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass
from typing import TYPE_CHECKING, Annotated, Any, Literal, Protocol, TypeVar

import msgspec

from core.errors import InvalidInputError
from core.formats import FORMATS, check_format_names
from core.keys import InvalidKeyError, validate_episode_id, validate_key
from core.settings import Settings
from domain.contracts import AudioProcessingParameters

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
    description for a pattern."""
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
    elif "matching regex" in problem and description:
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


class AudioProcessingPayload(
    msgspec.Struct, rename="camel", forbid_unknown_fields=True, kw_only=True
):
    """The payload of an `audio_processing` task: which audio, which outputs."""

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
        }

    def deployment_name(self, settings: Settings) -> str:
        return settings.prefect.audio_deployment

    def flow_parameters(
        self, task_id: str, workflow_id: str, payload: dict[str, Any], attempt: int
    ) -> dict[str, Any]:
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
        ).stored()

    def flow_run_parameters(self, stored: dict[str, Any]) -> dict[str, Any]:
        return AudioProcessingParameters.from_run_parameters(stored).flow_run_parameters()

    def episode_id(self, payload: dict[str, Any]) -> str | None:
        return str(payload["episodeId"])


TASK_TYPES: dict[str, TaskType] = {t.name: t for t in (AudioProcessing(),)}


def get_task_type(name: str) -> TaskType:
    """The registered type, or InvalidInputError listing the known ones."""
    try:
        return TASK_TYPES[name]
    except KeyError:
        raise InvalidInputError(
            f"unknown task type {name!r}; known: {', '.join(TASK_TYPES)}"
        ) from None
