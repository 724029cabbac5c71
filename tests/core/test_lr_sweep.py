"""bnlessons.lr_sweep: the grid, the sweep and the largest learning rate that trains."""
import math

import pytest
import torch

from bnlessons import lr_sweep
from bnlessons.models import MLP

from conftest import gaussian_classes


def test_geometric_grid():
    assert lr_sweep.geometric_grid(0.04, 10.24) == pytest.approx(
        [0.04 * 2**k for k in range(9)])
    assert lr_sweep.geometric_grid(1.0, 1.0) == (1.0,)
    assert len(lr_sweep.geometric_grid(0.1, 100.0, factor=10.0)) == 4
    with pytest.raises(ValueError, match="factor must be a finite number > 1"):
        lr_sweep.geometric_grid(0.1, 1.0, factor=1.0)
    with pytest.raises(TypeError, match="start"):
        lr_sweep.geometric_grid(None, 1.0)
    with pytest.raises(ValueError, match="stop"):
        lr_sweep.geometric_grid(1.0, 0.1)
    with pytest.raises(ValueError, match="start must be a finite number > 0"):
        lr_sweep.geometric_grid(0.0, 1.0)


def test_sweep_largest_trainable():
    sw = lr_sweep.Sweep(lrs=(0.1, 0.2, 0.4, 0.8), final_acc=(0.9, 0.6, math.nan, 0.2),
                        diverged=(False, False, True, False), skipped=(False,) * 4,
                        threshold=0.5, trained=(True, True, False, False))
    assert sw.trains() == [True, True, False, False]
    assert sw.largest_trainable() == 0.2
    none = lr_sweep.Sweep((0.1,), (0.1,), (False,), (False,), 0.5, (False,))
    assert none.largest_trainable() is None


def test_lr_sweep_runs_skips_and_is_reproducible():
    data = gaussian_classes(150, 50, features=6)
    lrs = (0.01, 0.1, 1e6, 1e7, 1e8)

    def build():
        return MLP(6, 2, width=16, depth=1)

    sw = lr_sweep.lr_sweep(build, data, lrs, steps=60, seed=3, threshold=0.8, batch_size=32,
                           stop_after=2)
    assert sw.trains()[1] and not any(sw.trains()[2:])
    assert sw.skipped == (False, False, False, False, True)
    assert math.isnan(sw.final_acc[-1])
    assert sw.largest_trainable() in (0.01, 0.1)
    again = lr_sweep.lr_sweep(build, data, lrs, steps=60, seed=3, threshold=0.8, batch_size=32,
                              stop_after=2)
    assert again.final_acc[:2] == sw.final_acc[:2]
    assert again.diverged == sw.diverged
    every = lr_sweep.lr_sweep(build, data, lrs[:2], steps=5, seed=3, threshold=0.99,
                              batch_size=32, stop_after=None)
    assert every.skipped == (False, False)


def test_lr_sweep_bad_input():
    data = gaussian_classes(150, 50, features=6)

    def build():
        return MLP(6, 2, width=4, depth=1)

    with pytest.raises(TypeError, match="build_model must be callable and return a new model"):
        lr_sweep.lr_sweep(MLP(6, 2), data, (0.1,), 5, 0, 0.5)
    with pytest.raises(ValueError, match="ascending"):
        lr_sweep.lr_sweep(build, data, (0.2, 0.1), 5, 0, 0.5)
    with pytest.raises(ValueError, match="lrs is empty"):
        lr_sweep.lr_sweep(build, data, (), 5, 0, 0.5)
    with pytest.raises(ValueError, match=r"lrs\[1\] must be a finite number > 0"):
        lr_sweep.lr_sweep(build, data, (0.1, -0.2), 5, 0, 0.5)
    with pytest.raises(TypeError, match=r"lrs\[0\]"):
        lr_sweep.lr_sweep(build, data, ("0.1",), 5, 0, 0.5)
    with pytest.raises(ValueError, match="threshold"):
        lr_sweep.lr_sweep(build, data, (0.1,), 5, 0, 1.5)
    with pytest.raises(ValueError, match="stop_after"):
        lr_sweep.lr_sweep(build, data, (0.1,), 5, 0, 0.5, stop_after=0)
    with pytest.raises(TypeError, match="stop_after"):
        lr_sweep.lr_sweep(build, data, (0.1,), 5, 0, 0.5, stop_after=2.0)
    with pytest.raises(TypeError, match="threshold"):
        lr_sweep.lr_sweep(build, data, (0.1,), 5, 0, "0.5")


def test_lr_sweep_passes_rates_hooks_and_scores():
    data = gaussian_classes(300, 100, features=6)
    seen = []

    def build():
        return MLP(6, 2, width=16, depth=1)

    def score(model):
        seen.append(model)
        return 0.5

    calls = []
    sw = lr_sweep.lr_sweep(build, data, (0.01, 0.1), steps=5, seed=3, threshold=0.5,
                           batch_size=32, stop_after=None, param_lrs={"head.weight": 0.02},
                           after_step=lambda m, step: calls.append(step), score=score)
    assert sw.scores == (0.5, 0.5) and len(seen) == 2
    assert calls == [1, 2, 3, 4, 5] * 2
    # the head at its own fixed rate: the same head after every swept rate's first step
    heads = []
    for lr in (0.01, 0.1):
        sweep = lr_sweep.lr_sweep(build, data, (lr,), steps=1, seed=3, threshold=0.5,
                                  batch_size=32, param_lrs={"head.weight": 0.02},
                                  score=lambda m: heads.append(m.head.weight.detach()) or 0.0)
        assert not sweep.diverged[0]
    assert torch.equal(heads[0], heads[1])
    with pytest.raises(TypeError, match="score"):
        lr_sweep.lr_sweep(build, data, (0.1,), steps=1, seed=0, threshold=0.5, score=0.5)


def test_tune_rate_keeps_each_arms_best_rate_and_says_if_the_grid_brackets_it():
    calls = []

    def score(lr):  # best at 0.1, diverges at 1.0
        calls.append(lr)
        return float("nan") if lr >= 1.0 else -abs(math.log10(lr) + 1)

    grid = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)
    full = lr_sweep.tune_rate(score, grid, maximise=True, patience=None)
    assert full.best == 0.1 and full.bracketed() and calls == list(grid)
    assert full.skipped == () and math.isnan(full.score(3.0))
    calls.clear()
    early = lr_sweep.tune_rate(score, grid, maximise=True, patience=1)
    assert early.best == 0.1 and early.lrs == (0.01, 0.03, 0.1, 0.3)
    assert early.skipped == (1.0, 3.0) and early.bracketed()
    # a loss is minimised; a best rate at the end of the grid is not bracketed
    edge = lr_sweep.tune_rate(lambda lr: 1 / lr, grid, maximise=False, patience=2)
    assert edge.best == 3.0 and not edge.bracketed()
    low = lr_sweep.tune_rate(lambda lr: lr, grid, maximise=False, patience=2)
    assert low.best == 0.01 and low.lrs == (0.01, 0.03, 0.1) and not low.bracketed()
    with pytest.raises(ValueError, match="ascending"):
        lr_sweep.tune_rate(score, (0.1, 0.01), maximise=True, patience=None)
    with pytest.raises(ValueError, match="patience"):
        lr_sweep.tune_rate(score, grid, maximise=True, patience=0)
    with pytest.raises(TypeError, match="callable"):
        lr_sweep.tune_rate(0.1, grid, maximise=True, patience=None)


def test_tune_rate_from_a_start_mid_grid_tries_only_what_brackets_the_best():
    grid = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)

    def sweep(best, start, patience=1):
        calls = []

        def loss(lr):  # lowest at best, diverges from 3.0 on
            calls.append(lr)
            return float("inf") if lr >= 3.0 else abs(math.log10(lr / best))

        return lr_sweep.tune_rate(loss, grid, maximise=False, patience=patience,
                                  start=start), calls

    # best at the start: one rate above, one below, nothing else
    t, calls = sweep(0.1, 0.1)
    assert calls == [0.1, 0.3, 0.03] and t.best == 0.1 and t.bracketed()
    assert t.lrs == (0.03, 0.1, 0.3) and t.skipped == (0.01, 1.0, 3.0)
    assert t.score(0.3) == pytest.approx(math.log10(3))
    # best above the start: the start itself brackets it from below
    t, calls = sweep(0.3, 0.1)
    assert calls == [0.1, 0.3, 1.0] and t.best == 0.3 and t.bracketed()
    # best below the start: down until a worse rate
    t, calls = sweep(0.01, 0.3)
    assert calls == [0.3, 1.0, 0.1, 0.03, 0.01] and t.best == 0.01 and not t.bracketed()
    # patience counts the rates between the start and the best
    t, calls = sweep(0.3, 0.1, patience=2)
    assert calls == [0.1, 0.3, 1.0, 3.0, 0.03] and t.best == 0.3
    # the same best as an ascending sweep, and start=None is that sweep
    for best in grid[:-1]:
        for patience in (1, 2, None):
            full, _ = sweep(best, None, patience)
            for start in grid:
                assert sweep(best, start, patience)[0].best == full.best == best
    _, calls = sweep(0.1, None)
    assert calls == [0.01, 0.03, 0.1, 0.3]
    # ties go to the smaller rate from either side, as in an ascending sweep
    flat = lr_sweep.tune_rate(lambda lr: 1.0, grid, maximise=True, patience=1, start=0.3)
    assert flat.best == 0.01 and flat.skipped == (3.0,)
    assert lr_sweep.tune_rate(lambda lr: 1.0, grid, maximise=True, patience=1).best == 0.01
    with pytest.raises(ValueError, match="start"):
        lr_sweep.tune_rate(math.log, grid, maximise=True, patience=1, start=0.2)
    with pytest.raises(TypeError, match="start"):
        lr_sweep.tune_rate(math.log, grid, maximise=True, patience=1, start="0.1")
