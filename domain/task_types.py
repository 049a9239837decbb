"""The registry of task types: how each validates its payload and which deployment runs it.

Adding a task type means adding one entry to `TASK_TYPES`; nothing else dispatches on the
type's name.
"""

from __future__ import annotations

import re
import uuid
from dataclasses import dataclass
from typing import Any, Protocol

from core.errors import InvalidInputError
from core.formats import check_format_names
from core.keys import InvalidKeyError, validate_episode_id, validate_key
from core.settings import Settings
from domain.contracts import AudioProcessingParameters

_LANGUAGE = re.compile(r"[a-z]{2,3}")


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

    _FIELDS = frozenset(
        {"episodeId", "audioKey", "audioR2Key", "encodingFormats", "transcribe", "language"}
    )

    def validate(self, payload: Any) -> dict[str, Any]:
        if not isinstance(payload, dict):
            raise InvalidInputError("payload must be a JSON object")
        unknown = sorted(set(payload) - self._FIELDS)
        if unknown:
            raise InvalidInputError(
                f"unknown payload field(s): {', '.join(unknown)}; "
                f"accepted: {', '.join(sorted(self._FIELDS))}"
            )
        episode_id = payload.get("episodeId")
        if not isinstance(episode_id, str):
            raise InvalidInputError("payload.episodeId is required and must be a string")
        # `audioR2Key` is what the existing clients send; `audioKey` is the canonical name.
        audio_key = payload.get("audioKey", payload.get("audioR2Key"))
        if (
            "audioKey" in payload
            and "audioR2Key" in payload
            and payload["audioKey"] != payload["audioR2Key"]
        ):
            raise InvalidInputError("payload.audioKey and payload.audioR2Key disagree")
        if not isinstance(audio_key, str):
            raise InvalidInputError(
                "payload.audioKey (or audioR2Key) is required and must be a string"
            )
        try:
            validate_episode_id(episode_id)
        except InvalidKeyError as exc:
            raise InvalidInputError(f"payload.episodeId: {exc}") from exc
        try:
            validate_key(audio_key)
        except InvalidKeyError as exc:
            raise InvalidInputError(f"payload.audioKey: {exc}") from exc
        formats = payload.get("encodingFormats")
        if not isinstance(formats, list) or not all(isinstance(f, str) for f in formats):
            raise InvalidInputError("payload.encodingFormats must be a list of format names")
        transcribe = payload.get("transcribe", True)
        if not isinstance(transcribe, bool):
            raise InvalidInputError("payload.transcribe must be true or false")
        if not formats and not transcribe:
            raise InvalidInputError("nothing to do: no encodingFormats and transcribe is false")
        try:
            check_format_names(formats)
        except ValueError as exc:
            raise InvalidInputError(f"payload.encodingFormats: {exc}") from None
        language = payload.get("language")
        if language is not None and (
            not isinstance(language, str) or not _LANGUAGE.fullmatch(language)
        ):
            raise InvalidInputError("payload.language must be a language code such as 'en'")
        return {
            "episodeId": episode_id,
            "audioKey": audio_key,
            "encodingFormats": list(formats),
            "transcribe": transcribe,
            "language": language,
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
