"""The faster-whisper engine: CTranslate2 on the CPU, the default because it is the fastest.

Always given a local model directory and `local_files_only=True`, so it never reaches for the
Hugging Face Hub. Segments come from faster-whisper's lazy generator, so the caller's
`on_segment` runs as each one is decoded.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np

from flows.transcription.base import TranscriptionEngine, WindowResult
from flows.transcription.models import ResolvedModel


class FasterWhisperEngine(TranscriptionEngine):
    """faster-whisper's `WhisperModel`, unbatched, without its VAD filter."""

    name: ClassVar[str] = "faster-whisper"

    _model: Any = None

    def _load(self, model: ResolvedModel) -> None:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(model.path),
            device="cpu",
            compute_type=self.settings.compute_type,
            cpu_threads=self.settings.threads,
            local_files_only=True,
        )

    @property
    def multilingual(self) -> bool:
        self.load()
        return bool(self._model.model.is_multilingual)

    def _transcribe_window(self, samples: np.ndarray, language: str | None) -> WindowResult:
        segments, info = self._model.transcribe(
            samples,
            language=language,
            beam_size=self.settings.beam_size,
            vad_filter=False,
        )
        return WindowResult(info.language, ((s.start, s.end, s.text) for s in segments))
