"""Learning-rate sweeps: which learning rates still train a network?

``lr_sweep`` trains one fresh model per learning rate (same seed, same
minibatches) for a fixed number of steps and keeps the final test accuracy.
A learning rate *trains* if ``train.History.trained(threshold)``: the loss
stayed finite and the final test accuracy reached ``threshold``;
``Sweep.largest_trainable`` is the largest such rate on the grid. Rates
above the limit are usually hopeless, so the sweep can stop after
``stop_after`` consecutive failures: the rates it skips count as failures.
``param_lrs`` holds chosen parameters at their own rates while the others
sweep, ``after_step`` runs after each update (both as in ``train.train``),
and ``score(model)`` adds one more number per trained model (say, accuracy
with batch statistics) to ``Sweep.scores``.

``tune_rate`` gives each arm of a comparison its own best rate from one grid:
it calls ``score(lr)`` for the rates in ascending order (a validation
accuracy, say, or a final training loss) and keeps the best. A score that is
not finite (a diverged run) counts as the worst. With ``patience=k`` it stops
after ``k`` rates in a row worse than the best so far: the rates above are
skipped. With ``start`` (a rate of the grid) the sweep begins there instead,
goes up, and then down from ``start`` only as far as needed: once the best
has ``patience`` worse rates on each side (or the grid ends), the rest are
skipped, which saves the runs at the bottom of the grid when the best lies
mid-grid. ``Tuned.bracketed`` says whether a rate below the best and a rate
above it were tried and scored worse, so that the best is not an artefact of
where the grid ends.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Callable, Mapping, Optional, Sequence

from torch import nn

from bnlessons._validate import check_fraction, check_int, check_number, check_positive
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
    scores: tuple[float, ...] = ()  # ``score(model)`` per rate (NaN where skipped or none)

    def trains(self) -> list[bool]:
        """Whether each learning rate trained (``train.History.trained``)."""
        return list(self.trained)

    def largest_trainable(self) -> Optional[float]:
        """The largest learning rate that trains, or None if none does."""
        ok = [lr for lr, t in zip(self.lrs, self.trains()) if t]
        return max(ok) if ok else None


def geometric_grid(start: float, stop: float, factor: float = 2.0) -> tuple[float, ...]:
    """``start, start*factor, ...`` up to and including ``stop`` (within rounding)."""
    check_positive(start, "start")
    check_positive(stop, "stop")
    check_number(factor, "factor", low=1, low_open=True)
    if stop < start:
        raise ValueError(f"stop ({stop}) must be >= start ({start})")
    count = int(math.floor(math.log(stop / start) / math.log(factor) + 1e-9)) + 1
    return tuple(float(start * factor**k) for k in range(count))


def lr_sweep(build_model: Callable[[], nn.Module], data: Dataset, lrs: Sequence[float],
             steps: int, seed: int, threshold: float, batch_size: int = 64,
             stop_after: Optional[int] = 2,
             param_lrs: Optional[Mapping[str, float]] = None,
             after_step: Optional[Callable[[nn.Module, int], None]] = None,
             score: Optional[Callable[[nn.Module], float]] = None) -> Sweep:
    """Train ``build_model()`` once per learning rate in ``lrs`` (ascending) with plain SGD.

    The model is built after ``torch.manual_seed(seed)`` (inside ``fork_rng``, so
    torch's global random state is the same after the sweep as before) so every rate starts
    from the same weights, and ``train`` draws the same minibatches for every
    rate. After ``stop_after`` consecutive rates that fail to train, the
    larger ones are skipped (``None`` runs them all). ``param_lrs`` and
    ``after_step`` are passed to ``train.train``; ``score(model)``, if given,
    is called on each trained model (NaN for a diverged one) and kept in
    ``Sweep.scores``.
    """
    if isinstance(build_model, nn.Module) or not callable(build_model):
        raise TypeError("build_model must be callable and return a new model (for example "
                        f"lambda: MLP(...)), got {type(build_model).__name__}")
    lrs = tuple(check_positive(lr, f"lrs[{i}]") for i, lr in enumerate(lrs))
    if not lrs:
        raise ValueError("lrs is empty: give at least one learning rate")
    if list(lrs) != sorted(lrs):
        raise ValueError(f"lrs must be in ascending order, got {lrs}")
    check_fraction(threshold, "threshold", zero=False)
    if stop_after is not None:
        check_int(stop_after, "stop_after", 1)
    if score is not None and not callable(score):
        raise TypeError(f"score must be a function of the model, got {type(score).__name__}")
    accs, diverged, skipped, trained, scores = [], [], [], [], []
    failures = 0
    for lr in lrs:
        if stop_after is not None and failures >= stop_after:
            accs.append(float("nan"))
            diverged.append(False)
            skipped.append(True)
            trained.append(False)
            scores.append(float("nan"))
            continue
        with seeded(seed):
            model = build_model()
            history = train(model, data, steps, lr, batch_size=batch_size, seed=seed,
                            eval_every=steps, progress=False, param_lrs=param_lrs,
                            after_step=after_step)
        if score is None or history.diverged:
            scores.append(float("nan"))
        else:
            scores.append(float(score(model)))
        acc = history.final_acc
        accs.append(acc)
        diverged.append(history.diverged)
        skipped.append(False)
        trained.append(history.trained(threshold))
        failures = 0 if trained[-1] else failures + 1
    return Sweep(lrs, tuple(accs), tuple(diverged), tuple(skipped), float(threshold),
                 tuple(trained), tuple(scores))


@dataclass(frozen=True)
class Tuned:
    """The rates tried (ascending), their scores, and the best rate."""

    lrs: tuple[float, ...]
    scores: tuple[float, ...]
    best: float
    maximise: bool
    skipped: tuple[float, ...]  # rates of the grid not tried (ascending)

    def bracketed(self) -> bool:
        """A rate below the best and a rate above it were tried."""
        i = self.lrs.index(self.best)
        return 0 < i < len(self.lrs) - 1

    def score(self, lr: float) -> float:
        return self.scores[self.lrs.index(lr)]


def tune_rate(score: Callable[[float], float], lrs: Sequence[float], *, maximise: bool,
              patience: Optional[int], start: Optional[float] = None) -> Tuned:
    """The rate of ``lrs`` with the best ``score(lr)`` (the largest if ``maximise``).

    ``lrs`` must be ascending and positive. Non-finite scores count as the
    worst; ties go to the smaller rate. ``patience`` (an int >= 1, or None to
    try every rate) stops the sweep after that many rates in a row worse than
    the best so far. Without ``start`` the rates are tried in ascending
    order. With ``start`` (one of ``lrs``) the sweep tries ``start`` and the
    rates above it in ascending order, then the rates below it in descending
    order; the downward part stops once ``patience`` rates in a row below the
    best (counting those already tried between ``start`` and the best) score
    worse, so it tries nothing when the best moved up by at least
    ``patience`` rates.
    """
    if isinstance(score, nn.Module) or not callable(score):
        raise TypeError(f"score must be callable as score(lr), got {type(score).__name__}")
    lrs = tuple(check_positive(lr, f"lrs[{i}]") for i, lr in enumerate(lrs))
    if not lrs or list(lrs) != sorted(set(lrs)):
        raise ValueError(f"lrs must be distinct, ascending and not empty, got {lrs}")
    if patience is not None:
        check_int(patience, "patience", 1)
    first = 0
    if start is not None:
        check_positive(start, "start")
        if start not in lrs:
            raise ValueError(f"start must be one of lrs {lrs}, got {start}")
        first = lrs.index(start)
    worst = -math.inf if maximise else math.inf
    scores: dict[int, float] = {}
    best, best_value = None, worst

    def better(value: float, i: int) -> bool:
        if best is None:
            return True
        if value == best_value:
            return i < best  # ties go to the smaller rate
        return value > best_value if maximise else value < best_value

    def sweep(order: Sequence[int], worse_in_a_row: int) -> None:
        nonlocal best, best_value
        for i in order:
            if patience is not None and worse_in_a_row >= patience:
                return
            value = float(score(lrs[i]))
            scores[i] = value
            if not math.isfinite(value):
                value = worst
            if better(value, i):
                best, best_value, worse_in_a_row = i, value, 0
            else:
                worse_in_a_row += 1

    sweep(range(first, len(lrs)), 0)
    if first > 0:
        sweep(range(first - 1, -1, -1), best - first)
    tried = sorted(scores)
    return Tuned(tuple(lrs[i] for i in tried), tuple(scores[i] for i in tried), lrs[best],
                 maximise, tuple(lr for i, lr in enumerate(lrs) if i not in scores))
