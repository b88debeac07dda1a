"""How well an uncertainty score tells right answers from wrong ones, and the threshold to use.

Scores are ``Uncertainty.score`` values (0 sure, 1 no confidence); an answer with a score above
a rung's threshold climbs the ladder instead of being released.
"""

from __future__ import annotations

from collections.abc import Sequence


def auroc(right: Sequence[float], wrong: Sequence[float]) -> float | None:
    """P(a right answer scores lower than a wrong one); ties count half. 0.5: no signal."""
    if not right or not wrong:
        return None
    wins = sum(1.0 if r < w else 0.5 if r == w else 0.0 for r in right for w in wrong)
    return wins / (len(right) * len(wrong))


def expected_calibration_error(
    scores: Sequence[float], correct: Sequence[bool], bins: int = 10
) -> float | None:
    """The gap between confidence (1 - score) and accuracy, averaged over equal-width bins."""
    if not scores:
        return None
    total = 0.0
    for index in range(bins):
        low, high = index / bins, (index + 1) / bins
        members = [
            (1 - score, ok)
            for score, ok in zip(scores, correct, strict=True)
            if low <= 1 - score < high or (index == bins - 1 and 1 - score == 1.0)
        ]
        if members:
            confidence = sum(c for c, _ in members) / len(members)
            accuracy = sum(ok for _, ok in members) / len(members)
            total += len(members) / len(scores) * abs(confidence - accuracy)
    return total


def release_threshold(scores: Sequence[float], correct: Sequence[bool], precision: float) -> float | None:
    """The highest threshold at which the answers kept (score <= threshold) are right at least
    ``precision`` of the time; None when no threshold keeps any answer that precisely."""
    best = None
    kept = right = 0
    for score, ok in sorted(zip(scores, correct, strict=True)):
        kept += 1
        right += ok
        if right / kept >= precision:
            best = score
    return best
