"""bnlessons.lr_sweep.best_rate: the walk along a grid of learning rates."""
import math

import pytest

from bnlessons.lr_sweep import best_rate

GRID = (0.01, 0.03, 0.1, 0.3, 1.0, 3.0)


def _walk(peak, start, grid=GRID):
    ran = []

    def run(lr):
        ran.append(lr)
        return lr

    search = best_rate(run, grid, lambda lr: -abs(math.log(lr / peak)), start)
    return search, ran


@pytest.mark.parametrize("start", GRID)
def test_the_walk_finds_a_single_peak_from_any_start(start):
    search, ran = _walk(0.3, start)
    assert search.best == 0.3 and search.bracketed
    assert len(ran) == len(set(ran))  # no rate is run twice
    assert 0.1 in search.scores and 1.0 in search.scores  # both neighbours compared
    assert search.best_result == 0.3


def test_the_walk_stops_as_soon_as_the_score_falls():
    search, ran = _walk(0.1, 0.1)
    assert ran == [0.1, 0.3, 0.03]
    search, ran = _walk(1.0, 0.1)
    assert ran == [0.1, 0.3, 1.0, 3.0]


def test_a_peak_at_the_end_of_the_grid_is_not_bracketed():
    search, ran = _walk(10.0, 0.1)
    assert search.best == 3.0 and not search.bracketed
    search, _ = _walk(0.001, 0.1)
    assert search.best == 0.01 and not search.bracketed


def test_nan_scores_count_as_worst():
    scores = {0.01: 0.5, 0.03: 0.6, 0.1: 0.7, 0.3: float("nan")}
    search = best_rate(lambda lr: lr, GRID[:4], lambda lr: scores[lr], 0.1)
    assert search.best == 0.1 and search.scores[0.3] == -math.inf


def test_ties_do_not_move_the_walk():
    search = best_rate(lambda lr: lr, GRID, lambda lr: 1.0, 0.1)
    assert search.best == 0.1 and set(search.scores) == {0.1, 0.3, 0.03}


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="start"):
        best_rate(lambda lr: lr, GRID, float, 0.2)
    with pytest.raises(ValueError, match="increasing"):
        best_rate(lambda lr: lr, (0.1, 0.01), float, 0.1)
    with pytest.raises(ValueError, match="grid"):
        best_rate(lambda lr: lr, (0.1,), float, 0.1)
    with pytest.raises(TypeError, match="run"):
        best_rate(0.1, GRID, float, 0.1)
    with pytest.raises(TypeError, match="score"):
        best_rate(lambda lr: lr, GRID, None, 0.1)
    with pytest.raises(TypeError, match="start"):
        best_rate(lambda lr: lr, GRID, float, "0.1")
