"""Word error rate of a transcript of a looped episode (`bench.audio.episode`) against the
script it was spoken from.

The episode is one spoken script looped end to end and cut at its length, so its reference
text is the script again and again, the last time cut off somewhere. One alignment of a
60-minute transcript (about 9,000 words) against that whole text would cost 9,000 x 9,000
cells of `transcription.wer`'s pure-Python table, minutes; so the transcript is scored loop
by loop instead: each loop's words are the prefix of what is left that best matches one
script (the least edits, `_edits`), and `transcription.wer.word_errors` then counts that
loop's errors. The counts are pooled (`WordErrors`), so the result is one WER over every
reference word. Splitting this way can move a misheard word at a loop's edge to the
neighbouring loop; its error is still counted once.

The last, cut loop is scored against the script's prefix that best matches what is left,
but not shorter than the share of the script its audio holds less a tenth of the script
(words and seconds are not exactly proportional): the sentence the cut went through is not
counted as deleted words, words lost well before the cut still are.
"""

from __future__ import annotations

import math

from transcription.wer import WordErrors, normalize, word_errors

#: A loop's words are looked for in at most this many times the script's words.
_WINDOW = 2


def _edits(reference: list[str], hypothesis: list[str]) -> tuple[list[int], list[int]]:
    """Word edit distances (Levenshtein) of the whole `reference` against every prefix of
    `hypothesis` (the last row of the table) and of every prefix of `reference` against
    the whole `hypothesis` (its last column)."""
    previous = list(range(len(hypothesis) + 1))
    column = [previous[-1]]
    for i, ref_word in enumerate(reference, start=1):
        current = [i]
        for j, hyp_word in enumerate(hypothesis, start=1):
            if ref_word == hyp_word:
                current.append(previous[j - 1])
            else:
                current.append(1 + min(previous[j - 1], previous[j], current[j - 1]))
        previous = current
        column.append(current[-1])
    return previous, column


def _pooled(total: WordErrors, errors: WordErrors) -> WordErrors:
    return WordErrors(
        total.substitutions + errors.substitutions,
        total.deletions + errors.deletions,
        total.insertions + errors.insertions,
        total.reference_words + errors.reference_words,
    )


def looped_word_errors(script: str, hypothesis: str, loops: int, last_share: float) -> WordErrors:
    """Word errors of `hypothesis` against `script` spoken `loops` times, the last time
    only its first `last_share` (0..1, of its duration) before the audio was cut."""
    reference = normalize(script)
    heard = normalize(hypothesis)
    total = WordErrors(0, 0, 0, 0)
    position = 0
    for _ in range(loops - 1):
        window = heard[position : position + _WINDOW * len(reference)]
        row, _column = _edits(reference, window)
        # The shortest prefix with the fewest edits: a word after it is the next loop's.
        length = min(range(len(row)), key=lambda k: (row[k], k))
        loop = word_errors(" ".join(reference), " ".join(window[:length]))
        total = _pooled(total, loop)
        position += length
    rest = heard[position:]
    _row, column = _edits(reference, rest)
    shortest = min(len(reference), math.floor(max(0.0, last_share - 0.1) * len(reference)))
    spoken = min(range(shortest, len(column)), key=lambda r: (column[r], -r))
    return _pooled(total, word_errors(" ".join(reference[:spoken]), " ".join(rest)))


def loops_of(episode_s: float, clip_s: float) -> tuple[int, float]:
    """How many times a clip of `clip_s` plays in an episode of `episode_s` (the last time
    counted even if cut), and the share of the clip the last time holds."""
    loops = max(1, math.ceil(episode_s / clip_s - 1e-6))
    return loops, min(1.0, (episode_s - (loops - 1) * clip_s) / clip_s)
