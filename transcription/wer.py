"""Word error rate, to measure transcription accuracy in tests and in the benchmark.

WER = (substitutions + deletions + insertions) / words in the reference, from a word-level
Levenshtein alignment. Both texts are normalised first (case, punctuation, apostrophes) so
that "Don't!" and "dont" count as the same word: the number should reflect recognition
errors, not formatting. Numbers are not spelled out, so compare texts without digits.
"""

from __future__ import annotations

import re
import unicodedata
from dataclasses import dataclass

_APOSTROPHES = re.compile(r"['\u2019\u02bc]")
_NON_WORD = re.compile(r"[^\w]+|_")


def normalize(text: str) -> list[str]:
    """Lower-cased words without punctuation; apostrophes joined, other marks split words."""
    text = unicodedata.normalize("NFKC", text).casefold()
    text = _APOSTROPHES.sub("", text)
    return _NON_WORD.sub(" ", text).split()


@dataclass(frozen=True)
class WordErrors:
    """The edit counts behind a WER, so that a benchmark can pool them over many clips."""

    substitutions: int
    deletions: int
    insertions: int
    reference_words: int

    @property
    def errors(self) -> int:
        return self.substitutions + self.deletions + self.insertions

    @property
    def wer(self) -> float:
        """Errors per reference word; an empty reference gives 0.0, or 1.0 if words were added."""
        if self.reference_words == 0:
            return 0.0 if self.insertions == 0 else 1.0
        return self.errors / self.reference_words


def word_errors(reference: str, hypothesis: str) -> WordErrors:
    """Count the minimum word edits turning `reference` into `hypothesis`."""
    ref, hyp = normalize(reference), normalize(hypothesis)
    # Each cell holds (total edits, substitutions, deletions, insertions) for a prefix pair;
    # ties prefer substitutions, then deletions, so the breakdown is deterministic.
    previous = [(j, 0, 0, j) for j in range(len(hyp) + 1)]
    for i, ref_word in enumerate(ref, start=1):
        current = [(i, 0, i, 0)]
        for j, hyp_word in enumerate(hyp, start=1):
            diag = previous[j - 1]
            if ref_word == hyp_word:
                best = diag
            else:
                up, left = previous[j], current[j - 1]
                best = min(
                    (diag[0] + 1, diag[1] + 1, diag[2], diag[3]),
                    (up[0] + 1, up[1], up[2] + 1, up[3]),
                    (left[0] + 1, left[1], left[2], left[3] + 1),
                    key=lambda cell: cell[0],
                )
            current.append(best)
        previous = current
    _, substitutions, deletions, insertions = previous[-1]
    return WordErrors(substitutions, deletions, insertions, len(ref))


def wer(reference: str, hypothesis: str) -> float:
    """Word error rate of `hypothesis` against `reference` (0.0 is perfect; can exceed 1)."""
    return word_errors(reference, hypothesis).wer
