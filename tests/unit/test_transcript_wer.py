"""Word error rate: normalisation and the edit counts behind it."""

from __future__ import annotations

import pytest

from transcription.types import Segment, Transcript
from transcription.wer import WordErrors, normalize, wer, word_errors


def test_normalize_ignores_case_punctuation_and_apostrophes() -> None:
    assert normalize("Hello, World! Don\u2019t stop\u2014it's twenty-five.") == [
        "hello", "world", "dont", "stop", "its", "twenty", "five",
    ]  # fmt: skip


def test_identical_after_normalisation_is_zero() -> None:
    assert wer("The cat sat on the mat.", "the cat, sat on the MAT") == 0.0


@pytest.mark.parametrize(
    ("hypothesis", "expected"),
    [
        ("the cat sit on the mat", WordErrors(1, 0, 0, 6)),
        ("the cat on the mat", WordErrors(0, 1, 0, 6)),
        ("the black cat sat on the mat", WordErrors(0, 0, 1, 6)),
        ("", WordErrors(0, 6, 0, 6)),
        ("cat sat on the mat today", WordErrors(0, 1, 1, 6)),
    ],
)
def test_edit_counts(hypothesis: str, expected: WordErrors) -> None:
    assert word_errors("the cat sat on the mat", hypothesis) == expected


def test_wer_is_errors_over_reference_words_and_can_exceed_one() -> None:
    assert wer("a b c d", "a x c") == pytest.approx(2 / 4)
    assert wer("a", "b c d") == pytest.approx(3.0)


def test_empty_reference() -> None:
    assert wer("", "") == 0.0
    assert wer("...", "hello") == 1.0


def test_transcript_text_joins_segments() -> None:
    t = Transcript("en", 3.0, [Segment(0, 1, " Hello "), Segment(1, 2, ""), Segment(2, 3, "world")])
    assert t.text == "Hello world"
