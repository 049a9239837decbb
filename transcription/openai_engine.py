"""The openai-whisper engine: the reference implementation, on PyTorch's CPU build.

Kept as a second engine to compare against and to fall back to. It runs in float32 (fp16 is
not supported on CPU) and never needs triton, which only serves CUDA word timings: on the CPU
the word alignment's dynamic time warping runs in numba. The model is built from a checkpoint
file ourselves rather than with `whisper.load_model`, which would download when given a model
name; `strict=True` refuses a checkpoint missing any weight. Word timing needs the model's
alignment heads, which the conversion carries over from the CTranslate2 config.

`whisper.transcribe` does not report how sure its language detection was, so when it is
asked to detect (a multilingual model, no language given) we detect first, the way it does
(the first 30 s), and pass the language on.

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
from transcription.base import (
    DECODE_SEED,
    THRESHOLDS,
    TranscriptionEngine,
    WindowResult,
    raw_segment,
)
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
        import torch
        import whisper

        beam_size = self.settings.beam_size
        with self._inference_lock:
            probability = None
            if language is None and self._model.is_multilingual:
                language, probability = self._detect_language(samples)
            torch.manual_seed(DECODE_SEED)
            result = whisper.transcribe(
                self._model,
                samples,
                language=language,
                fp16=False,
                condition_on_previous_text=self.settings.condition_on_previous_text,
                beam_size=beam_size if beam_size > 1 else None,
                word_timestamps=True,
                compression_ratio_threshold=THRESHOLDS.compression_ratio,
                logprob_threshold=THRESHOLDS.log_prob,
                no_speech_threshold=THRESHOLDS.no_speech,
                verbose=None,
            )
        return WindowResult(
            str(result["language"]),
            [raw_segment(s, dict.get) for s in result["segments"]],
            language_probability=probability,
        )

    def _detect_language(self, samples: np.ndarray) -> tuple[str, float]:
        """The most likely language of the first 30 s and its probability, as
        `whisper.transcribe` would detect it."""
        from whisper.audio import N_FRAMES, N_SAMPLES, log_mel_spectrogram, pad_or_trim

        mel = log_mel_spectrogram(samples, self._model.dims.n_mels, padding=N_SAMPLES)
        _, probs = self._model.detect_language(pad_or_trim(mel, N_FRAMES))
        language = max(probs, key=probs.get)
        return str(language), float(probs[language])
