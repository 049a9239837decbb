"""The faster-whisper engine: CTranslate2 on the CPU, the default because it is the fastest.

Always given a local model directory and `local_files_only=True`, so it never reaches for the
Hugging Face Hub. Segments come from faster-whisper's lazy generator, so the caller's
`on_segment` runs as each one is decoded. Word times come from faster-whisper's own
cross-attention alignment (`word_timestamps=True`), which tiny.en supports: CTranslate2's
converter stores the model's alignment heads in its config. Its `vad_filter` stays off:
`transcription.base` gives it only the speech already, the same speech as openai-whisper.

`threads=0` means one thread per CPU this process may use. CTranslate2's own default is four,
which oversubscribes a two-core worker: measured on one (60 s of speech, alternating runs in
one process), four threads took a median 8.3 s against 6.7 s for two.
"""

from __future__ import annotations

import os
from typing import Any, ClassVar

import numpy as np

from transcription.base import (
    DECODE_SEED,
    THRESHOLDS,
    TranscriptionEngine,
    WindowResult,
    raw_segment,
)
from transcription.models import ResolvedModel


def usable_cpus() -> int:
    """CPUs this process may run on (its affinity mask, which containers may narrow)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


class FasterWhisperEngine(TranscriptionEngine):
    """faster-whisper's `WhisperModel`, unbatched, with word timing, without its VAD filter."""

    name: ClassVar[str] = "faster-whisper"

    _model: Any = None

    def _load(self, model: ResolvedModel) -> None:
        from faster_whisper import WhisperModel

        self._model = WhisperModel(
            str(model.path),
            device="cpu",
            compute_type=self.settings.compute_type,
            cpu_threads=self.settings.threads or usable_cpus(),
            local_files_only=True,
        )

    @property
    def multilingual(self) -> bool:
        self.load()
        return bool(self._model.model.is_multilingual)

    def _transcribe_window(self, samples: np.ndarray, language: str | None) -> WindowResult:
        import ctranslate2

        ctranslate2.set_random_seed(DECODE_SEED)
        segments, info = self._model.transcribe(
            samples,
            language=language,
            beam_size=self.settings.beam_size,
            word_timestamps=True,
            vad_filter=False,
            condition_on_previous_text=self.settings.condition_on_previous_text,
            compression_ratio_threshold=THRESHOLDS.compression_ratio,
            log_prob_threshold=THRESHOLDS.log_prob,
            no_speech_threshold=THRESHOLDS.no_speech,
        )
        return WindowResult(
            info.language,
            (raw_segment(s, getattr) for s in segments),
            # faster-whisper says 1 when told the language; only a detection is a probability.
            language_probability=float(info.language_probability) if language is None else None,
        )
