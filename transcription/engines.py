"""The registry of speech-to-text engines and the per-process engine cache the flow uses.

Loading a model takes seconds and hundreds of MB, so a worker process keeps one engine per
distinct `WhisperSettings` and reuses it for every episode. Engines are registered by name
(`WhisperSettings.engine`); adding one is adding a class to `ENGINES`.
"""

from __future__ import annotations

import threading

from core.settings import WhisperSettings
from transcription.base import SegmentCallback, TranscriptionEngine
from transcription.errors import UnknownEngineError
from transcription.faster_engine import FasterWhisperEngine
from transcription.openai_engine import OpenAIWhisperEngine

__all__ = ["ENGINES", "SegmentCallback", "TranscriptionEngine", "clear_engine_cache", "get_engine"]

ENGINES: dict[str, type[TranscriptionEngine]] = {
    engine.name: engine for engine in (FasterWhisperEngine, OpenAIWhisperEngine)
}

_engines: dict[WhisperSettings, TranscriptionEngine] = {}
_engines_lock = threading.Lock()


def engine_class(name: str) -> type[TranscriptionEngine]:
    """The engine registered as `name`, or `UnknownEngineError` listing the known ones."""
    try:
        return ENGINES[name]
    except KeyError:
        raise UnknownEngineError(
            f"unknown Whisper engine {name!r}; known engines: {', '.join(sorted(ENGINES))}"
        ) from None


def get_engine(settings: WhisperSettings) -> TranscriptionEngine:
    """This process's engine for `settings`, created on first use; the model loads lazily."""
    with _engines_lock:
        engine = _engines.get(settings)
        if engine is None:
            engine = engine_class(settings.engine)(settings)
            _engines[settings] = engine
        return engine


def clear_engine_cache() -> None:
    """Forget cached engines (and let their models be freed), e.g. between tests."""
    with _engines_lock:
        _engines.clear()
