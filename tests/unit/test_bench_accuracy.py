"""The benchmark's WER of a looped episode (`bench.accuracy`): scored loop by loop, it must
count the same errors as one alignment against the whole reference would, on transcripts
small enough for `transcription.wer` to align whole."""

from __future__ import annotations

import pytest

from bench.accuracy import looped_word_errors, loops_of
from transcription.wer import word_errors

SCRIPT = (
    "Welcome back to the show. This week we talk about how a small podcast grows. Stay with us."
)
WORDS = SCRIPT.replace(".", "").split()  # 18 words


def test_a_perfect_transcript_of_whole_loops_has_no_errors() -> None:
    errors = looped_word_errors(SCRIPT, " ".join([SCRIPT] * 5), 5, 1.0)
    assert (errors.errors, errors.reference_words) == (0, 5 * len(WORDS))


def test_errors_anywhere_count_as_one_alignment_counts_them() -> None:
    loops = [list(WORDS) for _ in range(4)]
    loops[0][3] = "a"  # substitution
    del loops[1][-1]  # the last word of a loop lost: the next loop's first word follows
    loops[2].insert(4, "um")  # an insertion
    loops[3][7:8] = ["we", "we", "we"]  # a repetition: two insertions
    heard = " ".join(" ".join(loop) for loop in loops)
    errors = looped_word_errors(SCRIPT, heard, 4, 1.0)
    whole = word_errors(" ".join([SCRIPT] * 4), heard)
    assert errors.reference_words == whole.reference_words == 4 * len(WORDS)
    assert errors.errors == whole.errors == 1 + 1 + 1 + 2


def test_the_cut_loop_counts_what_was_lost_before_the_cut_only() -> None:
    # Two loops and 10 of the script's 18 words of the third (its audio cut at 55 %).
    heard = " ".join([SCRIPT, SCRIPT, " ".join(WORDS[:10])])
    errors = looped_word_errors(SCRIPT, heard, 3, 0.55)
    assert (errors.errors, errors.reference_words) == (0, 2 * len(WORDS) + 10)
    # The engine lost the last 5 words before the cut: counted down to the share less a
    # tenth of the script (45 %: 8 of 18 words), so 3 deletions.
    short = " ".join([SCRIPT, SCRIPT, " ".join(WORDS[:5])])
    errors = looped_word_errors(SCRIPT, short, 3, 0.55)
    assert errors.deletions == errors.errors == 3
    assert errors.reference_words == 2 * len(WORDS) + 8
    # Nothing heard of the last loop at all: its first 8 words are missing.
    nothing = looped_word_errors(SCRIPT, " ".join([SCRIPT, SCRIPT]), 3, 0.55)
    assert nothing.deletions == nothing.errors == 8


def test_an_empty_transcript_misses_every_word() -> None:
    errors = looped_word_errors(SCRIPT, "", 3, 1.0)
    # The last loop's last tenth could be a cut sentence: not counted.
    assert errors.deletions == errors.reference_words == 2 * len(WORDS) + 16
    assert errors.wer == 1.0


@pytest.mark.parametrize(
    ("episode_s", "clip_s", "expected"),
    [(120.0, 60.0, (2, 1.0)), (30.0, 60.0, (1, 0.5)), (3600.0, 64.0, (57, 0.25))],
)
def test_loops_of_an_episode(episode_s: float, clip_s: float, expected: tuple[int, float]) -> None:
    assert loops_of(episode_s, clip_s) == pytest.approx(expected)
