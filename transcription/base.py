"""What every speech-to-text engine does the same way: lazy loading, windows, segment times.

An engine only knows how to load its model and transcribe one window of samples. Everything
that must not differ between engines lives here: the model is loaded once per engine object
under a lock (a Prefect worker may run tasks in threads), long audio is fed in bounded
windows, segment times are moved from window time to episode time and kept in order, and
the language detected in the first window is pinned for the rest of the episode so that a
multilingual model does not switch language halfway through.
"""

from __future__ import annotations

import logging
import threading
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import ClassVar

import numpy as np

from core.settings import WhisperSettings
from transcription.audio import DEFAULT_WINDOW_S, AudioWindow, stream_windows
from transcription.models import ResolvedModel, resolve_model
from transcription.types import Segment, Transcript

log = logging.getLogger(__name__)

#: Windows whose loudest sample is below this (about -80 dBFS) are digital silence: they are
#: skipped without running the model, which is faster and cannot hallucinate words.
SILENCE_PEAK = 1e-4
#: Reported when no window had any sound to detect a language from.
UNDETERMINED_LANGUAGE = "und"

SegmentCallback = Callable[[Segment], None]


@dataclass(frozen=True)
class WindowResult:
    """One window's output, in window time; `segments` may be lazy (produced on iteration)."""

    language: str
    segments: Iterable[tuple[float, float, str]]


class TranscriptionEngine(ABC):
    """A speech-to-text engine bound to one `WhisperSettings`; obtain one via `get_engine`."""

    #: Registry key, the value of `WhisperSettings.engine`.
    name: ClassVar[str]

    def __init__(self, settings: WhisperSettings, *, window_s: float = DEFAULT_WINDOW_S) -> None:
        self.settings = settings
        #: Length of the audio windows fed to the model; see `transcription.audio`.
        self.window_s = window_s
        self.model: ResolvedModel | None = None
        self._lock = threading.Lock()
        self._loaded = False

    def load(self) -> None:
        """Load the model once; later calls, from any thread, return at once."""
        if self._loaded:
            return
        with self._lock:
            if self._loaded:
                return
            resolved = resolve_model(self.settings.model, self.name)
            log.info("loading %s model %s from %s", self.name, resolved.spec, resolved.path)
            self._load(resolved)
            self.model = resolved
            self._loaded = True

    @abstractmethod
    def _load(self, model: ResolvedModel) -> None:
        """Load `model` into memory; called once, under the lock."""

    @property
    @abstractmethod
    def multilingual(self) -> bool:
        """Whether the loaded model knows languages other than English."""

    @abstractmethod
    def _transcribe_window(self, samples: np.ndarray, language: str | None) -> WindowResult:
        """Transcribe one window of 16 kHz mono float32 samples; `None` means detect."""

    def transcribe(
        self,
        audio_path: Path,
        *,
        language: str | None,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        """Transcribe a whole file; `on_segment` sees each segment as soon as it exists.

        Raises `TranscriptionInputError` for a file that cannot be decoded. Silence gives a
        transcript without segments.
        """
        self.load()
        language = self._pin_language(language)
        segments: list[Segment] = []
        duration_s = 0.0
        for window in stream_windows(audio_path, self.window_s):
            duration_s = window.end_s
            if float(np.max(np.abs(window.samples), initial=0.0)) < SILENCE_PEAK:
                continue
            result = self._transcribe_window(window.samples, language)
            language = language or result.language
            for start, end, text in result.segments:
                previous = segments[-1] if segments else None
                segment = _place(window, start, end, text, previous)
                if segment is None:
                    continue
                segments.append(segment)
                if on_segment is not None:
                    on_segment(segment)
        return Transcript(language or UNDETERMINED_LANGUAGE, round(duration_s, 3), segments)

    def _pin_language(self, language: str | None) -> str | None:
        """Whisper's code for `language`; English-only models transcribe English whatever is
        asked, and the transcript says so instead of repeating the request.

        Feeds carry BCP-47 tags (`en-US`, `pt_BR`); Whisper knows only the primary subtag.
        """
        code = language.replace("_", "-").split("-")[0].lower() if language else None
        if self.multilingual:
            return code
        if code and code != "en":
            log.warning(
                "model %s is English-only; transcribing as English, not %r",
                self.settings.model,
                language,
            )
        return "en"


def _place(
    window: AudioWindow, start: float, end: float, text: str, previous: Segment | None
) -> Segment | None:
    """Move a window-time segment to episode time, inside its window and after `previous`."""
    text = text.strip()
    if not any(char.isalnum() for char in text):
        # Whisper emits lone punctuation ("." or ". .") over noise: not speech.
        return None
    start = window.start_s + min(max(start, 0.0), window.duration_s)
    end = window.start_s + min(max(end, 0.0), window.duration_s)
    if previous is not None:
        start = max(start, previous.start)
    end = max(end, start)
    return Segment(round(start, 3), round(end, 3), text)
