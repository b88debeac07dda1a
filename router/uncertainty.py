"""How unsure a model was of its answer, from the log-probabilities of its decision tokens.

Backends report the log-probability of each token that carried a choice (the tool name and
argument values, not the keys and punctuation a grammar forces), each over the alternatives
the grammar allowed there. The least sure of them sets the score: one doubtful digit of an
order id makes the whole call doubtful.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any


@dataclass(frozen=True)
class Uncertainty:
    """Raw figures over the decision tokens, and a score in [0, 1] (0 sure, 1 no confidence)."""

    min_logprob: float
    mean_logprob: float
    score: float
    tokens: int
    # The smallest margin of a decision token over its runner-up (log-probability); None where
    # the backend does not report it. A measured alternative signal (bench/bfcl.py), not the score.
    min_margin: float | None = None

    @property
    def confidence(self) -> float:
        """The probability of the least sure decision token: ``1 - score``."""
        return math.exp(self.min_logprob)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)

    def above(self, threshold: float | None) -> bool:
        """Whether the score is above ``threshold`` (None: never)."""
        return threshold is not None and self.score > threshold


def uncertainty_of(logprobs: Sequence[float], margins: Sequence[float] = ()) -> Uncertainty | None:
    """The uncertainty of an answer whose decision tokens had these log-probabilities (and
    margins over their runners-up); None when the backend reported none (the Anthropic API
    gives no log-probabilities)."""
    if not logprobs:
        return None
    minimum = min(logprobs)
    return Uncertainty(
        min_logprob=minimum,
        mean_logprob=sum(logprobs) / len(logprobs),
        score=1.0 - math.exp(minimum),
        tokens=len(logprobs),
        min_margin=min(margins) if margins else None,
    )
