"""What every speech-to-text engine does the same way: windows, speech regions, times, guards.

An engine only knows how to load its model and transcribe one stretch of samples. Everything
that must not differ between engines lives here: the model is loaded once per engine object
under a lock (a Prefect worker may run tasks in threads), long audio is fed in bounded
windows, only the speech in a window is decoded (`transcription.vad`, on by default), segments
that fail the engines' own quality thresholds are dropped and counted (`HallucinationGuard`),
segment and word times are moved back to episode time and kept in order, and the language
detected in the first window is pinned for the rest of the episode so that a multilingual
model does not switch language halfway through.
"""

from __future__ import annotations

import logging
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar, NamedTuple

import numpy as np

from core.settings import WhisperSettings
from transcription.audio import DEFAULT_WINDOW_S, SAMPLE_RATE, AudioWindow, stream_windows
from transcription.models import ResolvedModel, resolve_model
from transcription.types import Segment, Transcript, Word
from transcription.vad import SpeechMap, silero_model_path, speech_regions

log = logging.getLogger(__name__)

#: Windows whose loudest sample is below this (about -80 dBFS) are digital silence: they are
#: skipped without running the model, which is faster and cannot hallucinate words.
SILENCE_PEAK = 1e-4
#: Reported when no window had any sound to detect a language from.
UNDETERMINED_LANGUAGE = "und"


class QualityThresholds(NamedTuple):
    """The quality thresholds both engines use by default to retry a 30 s decode at a higher
    temperature; passed to them explicitly (`THRESHOLDS`) so that they and
    `HallucinationGuard` agree."""

    #: A gzip compression ratio above this means repeated text (a repetition loop)...
    compression_ratio: float = 2.4
    #: ... an average token log probability below this, a guess ...
    log_prob: float = -1.0
    #: ... unless the no-speech probability is above this too: then it is silence, skipped.
    no_speech: float = 0.6


THRESHOLDS = QualityThresholds()

#: The random seed each window's decode starts from: a temperature fallback samples, and
#: from a fixed seed the same audio gives the same words on every run (bench/ compares runs).
DECODE_SEED = 0
#: A segment is split where two of its words are this far apart (seconds): as long as the
#: pause that starts a new paragraph in the text and HTML transcripts.
SPLIT_PAUSE_S = 2.0

SegmentCallback = Callable[[Segment], None]


#: A word as an engine gives it: a `Word`, but in the time of the samples it was given
#: (`_place` moves it to episode time).
RawWord = Word


@dataclass(frozen=True)
class RawSegment:
    """A segment as an engine gives it, with the statistics of the decode that produced it
    (both engines report those of the whole 30 s decode on each of its segments)."""

    start: float
    end: float
    text: str
    words: tuple[RawWord, ...] = ()
    avg_logprob: float | None = None
    compression_ratio: float | None = None
    no_speech_prob: float | None = None


def raw_segment(segment: object, read: Callable[[Any, str], Any]) -> RawSegment:
    """A segment of an engine's output, and its words, as a `RawSegment`; `read(part, name)`
    reads a field (faster-whisper's parts are objects, openai-whisper's dicts). Times and
    figures become plain floats: faster-whisper hands out numpy scalars for some."""
    return RawSegment(
        float(read(segment, "start")),
        float(read(segment, "end")),
        str(read(segment, "text")),
        tuple(
            RawWord(
                float(read(w, "start")),
                float(read(w, "end")),
                str(read(w, "word")),
                float(read(w, "probability")),
            )
            for w in read(segment, "words") or ()
        ),
        avg_logprob=float(read(segment, "avg_logprob")),
        compression_ratio=float(read(segment, "compression_ratio")),
        no_speech_prob=float(read(segment, "no_speech_prob")),
    )


@dataclass(frozen=True)
class WindowResult:
    """One window's output, in its samples' time; `segments` may be lazy (produced on
    iteration). `language_probability` is None when the language was not detected."""

    language: str
    segments: Iterable[RawSegment]
    language_probability: float | None = None


class HallucinationGuard:
    """Drops segments whose decode failed the engines' own thresholds, and counts them.

    Both engines retry a 30 s decode at rising temperatures while its output is too
    repetitive (compression ratio) or too unlikely (average log probability), and skip it
    as silence when it is unlikely *and* the model thinks nobody speaks. When every
    temperature fails they still return the last (or least bad) attempt: that is where
    repetition loops and invented sentences come from. Such segments are dropped here, so a
    decode is kept only if it passed at some temperature.
    """

    def __init__(self) -> None:
        self.dropped = 0

    @staticmethod
    def fails(segment: RawSegment) -> bool:
        """Whether `segment`'s decode failed a threshold at every temperature tried."""
        if segment.compression_ratio is not None and (
            segment.compression_ratio > THRESHOLDS.compression_ratio
        ):
            return True
        return segment.avg_logprob is not None and segment.avg_logprob < THRESHOLDS.log_prob

    def keep(self, segment: RawSegment) -> bool:
        """False (and counted) for a segment that fails."""
        if self.fails(segment):
            self.dropped += 1
            log.info(
                "dropped segment %r (compression ratio %s, avg log prob %s, no speech %s)",
                segment.text[:80],
                segment.compression_ratio,
                segment.avg_logprob,
                segment.no_speech_prob,
            )
            return False
        return True


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
            if self.settings.vad:
                silero_model_path()  # a missing VAD model is a configuration error: say so now
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
        """Transcribe 16 kHz mono float32 samples (a window, or its speech joined) with word
        timing and the thresholds above; `language=None` means detect it."""

    def transcribe(
        self,
        audio_path: Path,
        *,
        language: str | None,
        on_segment: SegmentCallback | None = None,
    ) -> Transcript:
        """Transcribe a whole file; `on_segment` sees each segment as soon as it exists.

        Raises `TranscriptionInputError` for a file that cannot be decoded. Silence, noise
        and music (with voice activity detection on) give a transcript without segments.
        """
        self.load()
        language = self._pin_language(language)
        language_probability: float | None = None
        guard = HallucinationGuard()
        segments: list[Segment] = []
        duration_s = speech_s = 0.0
        started = time.monotonic()
        for window in stream_windows(audio_path, self.window_s):
            duration_s = window.end_s
            if float(np.max(np.abs(window.samples), initial=0.0)) < SILENCE_PEAK:
                continue
            speech = (
                SpeechMap(window.samples, speech_regions(window.samples, self.settings))
                if self.settings.vad
                else None
            )
            if speech is not None and speech.empty:
                continue
            samples = speech.samples if speech is not None else window.samples
            speech_s += len(samples) / SAMPLE_RATE
            result = self._transcribe_window(samples, language)
            if language is None:
                language, language_probability = result.language, result.language_probability
            for raw in result.segments:
                if not guard.keep(raw):
                    continue
                previous = segments[-1] if segments else None
                for segment in _place(window, speech, raw, previous):
                    segments.append(segment)
                    if on_segment is not None:
                        on_segment(segment)
        log.info(
            "%s: %.1f s of audio, %.1f s decoded, %d segments, %d dropped, in %.1f s",
            self.name,
            duration_s,
            speech_s,
            len(segments),
            guard.dropped,
            time.monotonic() - started,
        )
        return Transcript(
            language or UNDETERMINED_LANGUAGE,
            round(duration_s, 3),
            segments,
            language_probability=language_probability,
            dropped_segments=guard.dropped,
            decoded_s=round(speech_s, 3),
        )

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
    window: AudioWindow, speech: SpeechMap | None, raw: RawSegment, previous: Segment | None
) -> list[Segment]:
    """Move a segment and its words to episode time, inside the window and after `previous`.

    Repairs, each because an engine's raw times can break it:

    * every time is clamped into the window: an engine may report times a little past the
      end of the audio it was given (Whisper's timestamps run on a 20 ms grid, the word
      alignment on the padded 30 s input);
    * with voice activity detection, each word is mapped back by the speech region holding
      its midpoint and clamped into that region, so no word spans removed silence;
    * a word never starts before the previous word ended (this segment's or an earlier
      one's): the alignments of two 30 s decodes, or a word clamped at a region's start,
      can overlap by a few tens of milliseconds. Its end is at least its start;
    * a segment with words spans exactly its words (both engines do this themselves when
      word timing is on; it is redone after the repairs above so that it stays true);
      without words, it starts no earlier than the previous segment ended;
    * a segment is split where its words are `SPLIT_PAUSE_S` apart: with VAD the engine
      heard the speech on both sides of a removed silence as one, and often made one
      segment of it, which a player would then show through the silence.

    Returns no segment for text without letters or digits: Whisper emits lone punctuation
    (".") over noise, which is not speech.
    """
    text = raw.text.strip()
    if not any(char.isalnum() for char in text):
        return []

    def episode_time(seconds: float) -> float:
        return window.start_s + min(max(seconds, 0.0), window.duration_s)

    floor = previous.end if previous is not None else 0.0
    if not any(w.text.strip() for w in raw.words):
        start, end = raw.start, raw.end
        if speech is not None:
            start, end = speech.segment_to_window(start, end)
        start = round(max(episode_time(start), floor), 3)
        end = round(max(episode_time(end), start), 3)
        return [Segment(start, end, text)]
    # Each part: its words as placed, and their texts as the engine spelled them (with the
    # leading spaces of languages that have them), to rebuild a split segment's text.
    parts: list[tuple[list[Word], list[str]]] = []
    for raw_word in raw.words:
        word_text = raw_word.text.strip()
        if not word_text:
            continue
        start, end = raw_word.start, raw_word.end
        if speech is not None:
            start, end = speech.span_to_window(start, end)
        start = round(max(episode_time(start), floor), 3)
        end = round(max(episode_time(end), start), 3)
        if not parts or start - floor >= SPLIT_PAUSE_S:
            parts.append(([], []))
        parts[-1][0].append(Word(start, end, word_text, raw_word.probability))
        parts[-1][1].append(raw_word.text)
        floor = end
    if len(parts) == 1:
        words = parts[0][0]
        return [Segment(words[0].start, words[-1].end, text, tuple(words))]
    return [
        Segment(words[0].start, words[-1].end, "".join(spelled).strip(), tuple(words))
        for words, spelled in parts
    ]
