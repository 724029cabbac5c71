"""Learning-rate sweeps: which learning rates still train a network?

``lr_sweep`` trains one fresh model per learning rate (same seed, same
minibatches) for a fixed number of steps and keeps the final test accuracy.
A learning rate *trains* if ``train.History.trained(threshold)``: the loss
stayed finite and the final test accuracy reached ``threshold``;
``Sweep.largest_trainable`` is the largest such rate on the grid. Rates
above the limit are usually hopeless, so the sweep can stop after
``stop_after`` consecutive failures: the rates it skips count as failures.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Optional, Sequence

from torch import nn

from bnlessons.data import Dataset
from bnlessons.reproducibility import seeded
from bnlessons.train import train


@dataclass(frozen=True)
class Sweep:
    """Final test accuracy per learning rate (NaN where the loss diverged or the rate was
    skipped)."""

    lrs: tuple[float, ...]
    final_acc: tuple[float, ...]
    diverged: tuple[bool, ...]
    skipped: tuple[bool, ...]
    threshold: float
    trained: tuple[bool, ...]  # ``History.trained(threshold)``; False where skipped

    def trains(self) -> list[bool]:
        """Whether each learning rate trained (``train.History.trained``)."""
        return list(self.trained)

    def largest_trainable(self) -> Optional[float]:
        """The largest learning rate that trains, or None if none does."""
        ok = [lr for lr, t in zip(self.lrs, self.trains()) if t]
        return max(ok) if ok else None


def geometric_grid(start: float, stop: float, factor: float = 2.0) -> tuple[float, ...]:
    """``start, start*factor, ...`` up to and including ``stop`` (within rounding)."""
    for value, name in ((start, "start"), (stop, "stop")):
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not value > 0:
            raise ValueError(f"{name} must be a positive number, got {value!r}")
    if not factor > 1:
        raise ValueError(f"factor must be > 1, got {factor!r}")
    if stop < start:
        raise ValueError(f"stop ({stop}) must be >= start ({start})")
    count = int(math.floor(math.log(stop / start) / math.log(factor) + 1e-9)) + 1
    return tuple(float(start * factor**k) for k in range(count))


def lr_sweep(build_model: Callable[[], nn.Module], data: Dataset, lrs: Sequence[float],
             steps: int, seed: int, threshold: float, batch_size: int = 64,
             stop_after: Optional[int] = 2) -> Sweep:
    """Train ``build_model()`` once per learning rate in ``lrs`` (ascending) with plain SGD.

    The model is built after ``torch.manual_seed(seed)`` (inside ``fork_rng``, so
    torch's global random state is the same after the sweep as before) so every rate starts
    from the same weights, and ``train`` draws the same minibatches for every
    rate. After ``stop_after`` consecutive rates that fail to train, the
    larger ones are skipped (``None`` runs them all).
    """
    if isinstance(build_model, nn.Module) or not callable(build_model):
        raise TypeError("build_model must be callable and return a new model (for example "
                        f"lambda: MLP(...)), got {type(build_model).__name__}")
    lrs = tuple(float(lr) for lr in lrs)
    if not lrs or any(not lr > 0 for lr in lrs):
        raise ValueError(f"lrs must be a non-empty sequence of positive numbers, got {lrs}")
    if list(lrs) != sorted(lrs):
        raise ValueError(f"lrs must be in ascending order, got {lrs}")
    if not 0.0 < threshold <= 1.0:
        raise ValueError(f"threshold is a test accuracy in (0, 1], got {threshold!r}")
    if stop_after is not None and (isinstance(stop_after, bool) or not isinstance(stop_after, int)
                                   or stop_after < 1):
        raise ValueError(f"stop_after must be None or an int >= 1, got {stop_after!r}")
    accs, diverged, skipped, trained = [], [], [], []
    failures = 0
    for lr in lrs:
        if stop_after is not None and failures >= stop_after:
            accs.append(float("nan"))
            diverged.append(False)
            skipped.append(True)
            trained.append(False)
            continue
        with seeded(seed):
            model = build_model()
            history = train(model, data, steps, lr, batch_size=batch_size, seed=seed,
                            eval_every=steps, progress=False)
        acc = history.final_acc
        accs.append(acc)
        diverged.append(history.diverged)
        skipped.append(False)
        trained.append(history.trained(threshold))
        failures = 0 if trained[-1] else failures + 1
    return Sweep(lrs, tuple(accs), tuple(diverged), tuple(skipped), float(threshold),
                 tuple(trained))


@dataclass(frozen=True)
class RateSearch:
    """What ``best_rate`` tried: each rate's score and result, and the best rate."""

    grid: tuple[float, ...]
    scores: dict[float, float]  # only the rates that were run, in the order they were run
    results: dict[float, object]
    best: float

    @property
    def bracketed(self) -> bool:
        """True when the best rate has a worse rate on the grid on both sides (it is neither
        the smallest nor the largest rate of the grid)."""
        i = self.grid.index(self.best)
        return 0 < i < len(self.grid) - 1

    @property
    def best_result(self) -> object:
        return self.results[self.best]


def best_rate(run: Callable[[float], object], grid: Sequence[float],
              score: Callable[[object], float], start: float) -> RateSearch:
    """Walk a grid of learning rates from ``start`` to the rate with the highest score.

    ``run(lr)`` trains (or measures) with one rate and returns anything;
    ``score(result)`` turns that into a number, higher is better (NaN counts as
    worst). Starting at ``start``, the walk runs the next larger rate; while
    that is better it keeps going up, otherwise it goes down from ``start``
    the same way. It stops at the first rate that is not better than the
    best so far, or at the end of the grid. So the best rate has been
    compared with both of its neighbours on the grid (``RateSearch.bracketed``
    says whether it has two), without running every rate: the walk finds the
    best rate when the score, along the grid, rises to one peak and falls.
    """
    if isinstance(run, nn.Module) or not callable(run):
        raise TypeError(f"run must be callable as run(lr), got {type(run).__name__}")
    if not callable(score):
        raise TypeError(f"score must be callable as score(result), got {type(score).__name__}")
    grid = tuple(float(lr) for lr in grid)
    if len(grid) < 2 or any(not lr > 0 for lr in grid) or list(grid) != sorted(set(grid)):
        raise ValueError(f"grid must hold two or more positive, increasing rates, got {grid}")
    if isinstance(start, bool) or not isinstance(start, (int, float)):
        raise TypeError(f"start must be a number, got {type(start).__name__}")
    matches = [i for i, lr in enumerate(grid) if math.isclose(lr, start, rel_tol=1e-9)]
    if not matches:
        raise ValueError(f"start={start!r} is not a rate of the grid {grid}")
    scores: dict[float, float] = {}
    results: dict[float, object] = {}

    def value(i: int) -> float:
        lr = grid[i]
        if lr not in scores:
            results[lr] = run(lr)
            s = float(score(results[lr]))
            scores[lr] = -math.inf if math.isnan(s) else s
        return scores[lr]

    best = matches[0]
    value(best)
    for step in (1, -1):
        moved = False
        while 0 <= best + step < len(grid) and value(best + step) > value(best):
            best += step
            moved = True
        if moved:
            break
    return RateSearch(grid, scores, results, grid[best])
