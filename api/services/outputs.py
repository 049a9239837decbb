"""Which stored objects an attempt writes: used to clean up after a cancelled attempt and to
check, before trusting Prefect's word that a run completed, that its outputs exist."""

from __future__ import annotations

from typing import Any

from core.formats import get_format
from core.keys import audio_output_key, transcript_key
from core.storage.base import ObjectStore
from core.storage.errors import StorageError
from flows.transcription.writers import WRITERS


def attempt_output_keys(parameters: dict[str, Any]) -> list[str]:
    """Every key an audio-processing attempt with these flow parameters writes."""
    episode_id = parameters.get("episode_id")
    if not episode_id:
        return []
    keys = [
        audio_output_key(episode_id, get_format(name))
        for name in parameters.get("encoding_formats", [])
    ]
    if parameters.get("transcribe"):
        keys += [transcript_key(episode_id, w.extension) for w in WRITERS.values()]
    return keys


def result_keys(result: dict[str, Any] | None) -> set[str]:
    """Keys a stored result says exist (outputs and transcript files)."""
    if not result:
        return set()
    keys = {o["key"] for o in result.get("outputs", {}).values() if "key" in o}
    keys |= set((result.get("transcript") or {}).get("keys", {}).values())
    return keys


def remove_partial_outputs(
    store: ObjectStore, parameters: dict[str, Any], keep: set[str]
) -> list[str]:
    """Delete what a cancelled attempt may have written, except outputs an earlier attempt made."""
    removed = []
    for key in attempt_output_keys(parameters):
        if key in keep:
            continue
        try:
            if store.exists(key):
                store.delete(key)
                removed.append(key)
        except StorageError:
            continue  # best effort: the reconciler's next pass tries again
    return removed


def missing_outputs(store: ObjectStore, parameters: dict[str, Any]) -> list[str]:
    """Keys an attempt should have written that are not in the store."""
    return [key for key in attempt_output_keys(parameters) if not store.exists(key)]
