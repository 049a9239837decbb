"""The openai-whisper engine: the reference implementation, on PyTorch's CPU build.

Kept as a second engine to compare against and to fall back to. It runs in float32 (fp16 is
not supported on CPU) and never needs triton, which only serves CUDA word timings. The model
is built from a checkpoint file ourselves rather than with `whisper.load_model`, which would
download when given a model name; `strict=True` refuses a checkpoint missing any weight.

openai-whisper returns a window's segments all at once, so `on_segment` runs once per window
for this engine rather than as each segment is decoded. Its decoder installs key/value-cache
hooks on the shared model for each call, so calls are serialised by a lock.
"""

from __future__ import annotations

import threading
from typing import Any, ClassVar

import numpy as np

from core.settings import WhisperSettings
from transcription.audio import DEFAULT_WINDOW_S
from transcription.base import TranscriptionEngine, WindowResult
from transcription.models import ResolvedModel


class OpenAIWhisperEngine(TranscriptionEngine):
    """openai-whisper's `transcribe` on a model loaded from a local checkpoint."""

    name: ClassVar[str] = "openai-whisper"

    _model: Any = None

    def __init__(self, settings: WhisperSettings, *, window_s: float = DEFAULT_WINDOW_S) -> None:
        super().__init__(settings, window_s=window_s)
        self._inference_lock = threading.Lock()

    def _load(self, model: ResolvedModel) -> None:
        import torch
        from whisper.model import ModelDimensions, Whisper

        from transcription.convert import apply_alignment_heads

        if self.settings.threads > 0:
            torch.set_num_threads(self.settings.threads)
        checkpoint = torch.load(model.path, map_location="cpu", weights_only=True)
        whisper_model = Whisper(ModelDimensions(**checkpoint["dims"]))
        whisper_model.load_state_dict(checkpoint["model_state_dict"], strict=True)
        if checkpoint.get("alignment_heads"):
            apply_alignment_heads(whisper_model, checkpoint["alignment_heads"])
        self._model = whisper_model.eval()

    @property
    def multilingual(self) -> bool:
        self.load()
        return bool(self._model.is_multilingual)

    def _transcribe_window(self, samples: np.ndarray, language: str | None) -> WindowResult:
        import whisper

        beam_size = self.settings.beam_size
        with self._inference_lock:
            result = whisper.transcribe(
                self._model,
                samples,
                language=language,
                fp16=False,
                beam_size=beam_size if beam_size > 1 else None,
                verbose=None,
            )
        return WindowResult(
            str(result["language"]),
            [(s["start"], s["end"], s["text"]) for s in result["segments"]],
        )
