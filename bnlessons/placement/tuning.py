"""Each arm of a comparison at its own best learning rate, from one grid.

``tune_rate`` calls ``score(lr)`` for the rates of a grid in ascending order
(a validation accuracy, say, or a final training loss) and keeps the best. A
score that is not finite (a diverged run) counts as the worst. With
``patience=k`` the sweep stops after ``k`` rates in a row that are worse than
the best so far: the rates above are skipped. ``Tuned.bracketed`` says
whether the grid brackets the best rate: a rate below it and a rate above it
were tried and scored worse, so the best is not an artefact of where the
grid ends.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from bnlessons._validate import check_int


@dataclass(frozen=True)
class Tuned:
    """The rates tried (ascending), their scores, and the best rate."""

    lrs: tuple[float, ...]
    scores: tuple[float, ...]
    best: float
    maximise: bool
    skipped: tuple[float, ...]  # rates of the grid above the last one tried

    def bracketed(self) -> bool:
        """A rate below the best and a rate above it were tried."""
        i = self.lrs.index(self.best)
        return 0 < i < len(self.lrs) - 1

    def score(self, lr: float) -> float:
        return self.scores[self.lrs.index(lr)]


def tune_rate(score: Callable[[float], float], lrs: Sequence[float], *, maximise: bool,
              patience: Optional[int]) -> Tuned:
    """The rate of ``lrs`` with the best ``score(lr)`` (the largest if ``maximise``).

    ``lrs`` must be ascending and positive. Non-finite scores count as the
    worst; ties go to the smaller rate. ``patience`` (an int >= 1, or None to
    try every rate) stops the sweep after that many rates in a row worse than
    the best so far.
    """
    if not callable(score):
        raise TypeError(f"score must be callable, got {type(score).__name__}")
    lrs = tuple(float(lr) for lr in lrs)
    if not lrs or any(not lr > 0 for lr in lrs) or list(lrs) != sorted(set(lrs)):
        raise ValueError(f"lrs must be positive, distinct and ascending, got {lrs}")
    if patience is not None:
        check_int(patience, "patience", 1)
    worst = -math.inf if maximise else math.inf
    tried: list[float] = []
    scores: list[float] = []
    best, best_value, worse_in_a_row = None, worst, 0
    for lr in lrs:
        value = float(score(lr))
        tried.append(lr)
        scores.append(value)
        if not math.isfinite(value):
            value = worst
        if best is None or (value > best_value if maximise else value < best_value):
            best, best_value, worse_in_a_row = lr, value, 0
        else:
            worse_in_a_row += 1
            if patience is not None and worse_in_a_row >= patience:
                break
    return Tuned(tuple(tried), tuple(scores), best, maximise, lrs[len(tried):])
