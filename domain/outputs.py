"""Which stored objects an attempt writes: used to clean up after a cancelled attempt and to
check, before trusting Prefect's word that a run completed, that its outputs exist.

An attempt writes only under its own folder (`core.keys.attempt_prefix`), so its clean-up
deletes that folder and nothing else: never an object another task or attempt wrote.

Not every file is certain: the chapters file exists only when the task gave chapters or
the source had some, and a run created before waveform files existed may or may not have
written one (a worker of either version may have run it). Such keys are `optional`: named
when present, never demanded.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from core.formats import TRANSCRIPT_FORMATS, get_format
from core.keys import (
    audio_output_key,
    chapters_key,
    output_prefix,
    transcript_key,
    waveform_key,
)
from core.storage.base import ObjectStore
from core.storage.errors import StorageError
from domain.contracts import AudioProcessingParameters

#: A workflow row's or flow run's parameters (either shape), or the parsed model.
Parameters = Mapping[str, Any] | AudioProcessingParameters


@dataclass(frozen=True)
class ExpectedOutputs:
    """The keys an attempt writes: format name -> key, transcript format name -> key, the
    chapters file and the waveform file (None: the attempt writes no such file)."""

    audio: dict[str, str]
    transcript: dict[str, str]
    chapters: str | None = None
    waveform: str | None = None
    #: Those of the keys above that may legitimately be missing after a completed run.
    optional: frozenset[str] = frozenset()

    def all_keys(self) -> list[str]:
        """Every key the attempt may write, audio first."""
        extra = [key for key in (self.chapters, self.waveform) if key is not None]
        return [*self.audio.values(), *self.transcript.values(), *extra]

    def required_keys(self) -> list[str]:
        """The keys a completed attempt must have written."""
        return [key for key in self.all_keys() if key not in self.optional]


def attempt_prefix_of(parameters: Parameters) -> str | None:
    """The folder an audio-processing attempt with these flow parameters writes to.

    None when the parameters are not a valid attempt's (no task or episode id, ids that are
    not valid key parts, a row made by hand): such a run writes nothing, so there is
    nothing to clean up.
    """
    params = AudioProcessingParameters.read(parameters)
    return params.prefix if params is not None else None


def expected_outputs(parameters: Parameters, *, legacy: bool = False) -> ExpectedOutputs:
    """What an attempt with these flow parameters writes; the flow names its uploads and
    its result's keys from this too, so the two cannot disagree.

    `legacy`: the keys of the layout before per-attempt folders (`episodes/{id}/audio/...`),
    which a run created before the change may have written.
    """
    params = AudioProcessingParameters.read(parameters)
    if params is None:
        return ExpectedOutputs({}, {})
    prefix = output_prefix(params.episode_id) if legacy else params.prefix
    audio = {
        name: audio_output_key(prefix, get_format(name)) for name in params.encoding_formats
    }
    transcript = (
        {name: transcript_key(prefix, fmt.extension) for name, fmt in TRANSCRIPT_FORMATS.items()}
        if params.transcribe
        else {}
    )
    if legacy:  # the layout before attempt folders had neither file
        return ExpectedOutputs(audio, transcript)
    optional = set()
    # Chapters given in the payload are always written; `null` means "the source's own",
    # which it may not have; `[]` means none.
    chapters = chapters_key(prefix) if params.chapters != [] else None
    if chapters is not None and params.chapters is None:
        optional.add(chapters)
    waveform = waveform_key(prefix) if params.waveform else None
    if waveform is not None and "waveform" not in params.model_fields_set:
        optional.add(waveform)  # parameters from before waveform files existed
    return ExpectedOutputs(audio, transcript, chapters, waveform, frozenset(optional))


def attempt_output_keys(parameters: Parameters) -> list[str]:
    """Every key an audio-processing attempt with these flow parameters may write."""
    return expected_outputs(parameters).all_keys()


def result_keys(result: dict[str, Any] | None) -> set[str]:
    """Keys a stored result says exist (outputs, transcript files, the chapters and
    waveform files)."""
    if not result:
        return set()
    keys = {o["key"] for o in (result.get("outputs") or {}).values() if "key" in o}
    keys |= set(((result.get("transcript") or {}).get("keys") or {}).values())
    for name in ("chapters", "waveform"):
        file = result.get(name)
        if isinstance(file, dict) and isinstance(file.get("key"), str):
            keys.add(file["key"])
    return keys


def remove_attempt_outputs(
    store: ObjectStore, parameters: Parameters, keep: set[str]
) -> list[str]:
    """Delete what a stopped attempt wrote under its own folder, except the keys in `keep`
    (what the task's result names). Call only once the run has stopped: a live run could
    upload again behind the clean-up. Objects outside the attempt's folder (other tasks,
    other attempts, the old episode-level layout) are never touched."""
    prefix = attempt_prefix_of(parameters)
    if prefix is None:
        return []
    removed = []
    try:
        keys = store.list_keys(prefix)
    except StorageError:
        return []  # best effort: the retention pass finds what is left
    for key in keys:
        if key in keep:
            continue
        try:
            store.delete(key)
            removed.append(key)
        except StorageError:
            continue
    return removed


def missing_outputs(
    store: ObjectStore, parameters: Parameters, result: dict[str, Any] | None = None
) -> list[str]:
    """Keys an attempt should have written that are not in the store.

    The attempt's own result, when it has one, names exactly what it wrote (in whatever
    layout it used). Without one, the keys follow from the parameters: the required ones
    (a waveform the task asked for, chapters it gave) are demanded, the optional ones (a
    chapters file from a source that may have none) are not. A run created before the
    attempt was a flow parameter may have run the old code and written the old layout,
    which then counts as well.
    """
    named = result_keys(result)
    if named:
        return sorted(key for key in named if not store.exists(key))
    required = expected_outputs(parameters).required_keys()
    missing = [key for key in required if not store.exists(key)]
    params = AudioProcessingParameters.read(parameters)
    if missing and params is not None and params.attempt is None:
        legacy = expected_outputs(parameters, legacy=True).required_keys()
        if legacy and all(store.exists(key) for key in legacy):
            return []
    return missing
