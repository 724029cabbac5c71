"""bnlessons.bn_math.scale_invariance and bnlessons.lr_sweep."""
import math

import pytest
import torch

from bnlessons import lr_sweep
from bnlessons.bn_math import scale_invariance as si
from bnlessons.data import Dataset
from bnlessons.models import MLP
from bnlessons.train import History


@pytest.fixture
def layer_and_batch():
    torch.manual_seed(0)
    layer = si.linear_bn_layer(10, 6, eps=0.0)
    g = torch.Generator().manual_seed(1)
    u = torch.randn(32, 10, generator=g, dtype=torch.float64)
    upstream = torch.randn(32, 6, generator=g, dtype=torch.float64)
    return layer, u, upstream


@pytest.mark.parametrize("a", [0.01, 0.5, 7.0, 1000.0])
def test_scale_invariance_is_exact_with_eps_zero(layer_and_batch, a):
    layer, u, upstream = layer_and_batch
    weight_before = layer[0].weight.detach().clone()
    base = si.scaled_weight_gradients(layer, u, upstream, 1.0)
    scaled = si.scaled_weight_gradients(layer, u, upstream, a)
    assert (scaled["out"] - base["out"]).abs().max() < 1e-12
    assert (scaled["grad_input"] - base["grad_input"]).abs().max() < 1e-12
    assert torch.allclose(a * scaled["grad_weight"], base["grad_weight"], rtol=1e-10, atol=1e-14)
    # the layer's own weight is left as it was
    assert torch.equal(layer[0].weight, weight_before)


def test_eps_breaks_invariance_for_tiny_weights(layer_and_batch):
    _, u, upstream = layer_and_batch
    torch.manual_seed(0)
    layer = si.linear_bn_layer(10, 6, eps=1e-5)
    base = si.scaled_weight_gradients(layer, u, upstream, 1.0)
    tiny = si.scaled_weight_gradients(layer, u, upstream, 1e-4)
    assert (tiny["out"] - base["out"]).abs().max() > 0.1


def test_rows_orthogonal_to_gradients_and_norm_growth(layer_and_batch):
    layer, u, upstream = layer_and_batch
    grads = si.scaled_weight_gradients(layer, u, upstream, 1.0)
    w, g = layer[0].weight.detach(), grads["grad_weight"]
    assert si.row_gradient_cosines(w, g).abs().max() < 1e-12
    # without BN the cosines are not zero
    assert si.row_gradient_cosines(w, upstream.T @ u).abs().max() > 0.01
    lr = 0.3
    assert torch.allclose(si.row_norms(w - lr * g) ** 2,
                          si.row_norms(w) ** 2 + lr**2 * si.row_norms(g) ** 2, rtol=1e-12)


def test_row_measures_values_and_errors():
    w = torch.tensor([[3.0, 4.0], [0.0, 2.0]])
    assert torch.allclose(si.row_norms(w), torch.tensor([5.0, 2.0]))
    assert torch.allclose(si.effective_lr(0.5, w), torch.tensor([0.02, 0.125]))
    cos = si.row_gradient_cosines(w, torch.tensor([[4.0, -3.0], [0.0, 0.0]]))
    assert torch.allclose(cos, torch.zeros(2))
    with pytest.raises(ValueError, match="weight matrix"):
        si.row_norms(torch.ones(3))
    with pytest.raises(ValueError, match="grad must have the shape"):
        si.row_gradient_cosines(w, torch.ones(2, 3))
    with pytest.raises(ValueError, match="lr must be a positive"):
        si.effective_lr(0.0, w)
    with pytest.raises(TypeError, match="floating-point"):
        si.row_norms(torch.ones(2, 2, dtype=torch.int64))


def test_layer_and_gradient_helpers_validate(layer_and_batch):
    layer, u, upstream = layer_and_batch
    with pytest.raises(ValueError, match="in_features"):
        si.linear_bn_layer(0, 3)
    with pytest.raises(ValueError, match="eps"):
        si.linear_bn_layer(3, 3, eps=-1.0)
    with pytest.raises(ValueError, match="a must be a positive"):
        si.scaled_weight_gradients(layer, u, upstream, -2.0)
    with pytest.raises(TypeError, match="linear_bn_layer"):
        si.scaled_weight_gradients(torch.nn.Linear(2, 2), u, upstream, 1.0)
    with pytest.raises(ValueError, match="upstream must have"):
        si.scaled_weight_gradients(layer, u, upstream[:, :2], 1.0)


def test_weight_norm_recorder():
    model = MLP(12, 3, width=8, depth=2, norm="bn")
    layers = {f"layer{i + 1}": b.linear for i, b in enumerate(model.blocks)}
    record = si.weight_norm_recorder(layers, lr=0.5)
    values = record(model, 0)
    assert set(values) == {"layer1/norm", "layer1/eff_lr", "layer2/norm", "layer2/eff_lr"}
    rows = si.row_norms(model.blocks[0].linear.weight)
    assert values["layer1/norm"] == pytest.approx(float(rows.median()))
    assert values["layer1/eff_lr"] == pytest.approx(float((0.5 / rows**2).median()))
    with pytest.raises(ValueError, match="layers is empty"):
        si.weight_norm_recorder({}, 0.1)
    with pytest.raises(TypeError, match="no weight"):
        si.weight_norm_recorder({"relu": torch.nn.ReLU()}, 0.1)
    with pytest.raises(ValueError, match="lr must be"):
        si.weight_norm_recorder(layers, -1.0)


def test_geometric_grid():
    assert lr_sweep.geometric_grid(0.04, 10.24) == pytest.approx(
        [0.04 * 2**k for k in range(9)])
    assert lr_sweep.geometric_grid(1.0, 1.0) == (1.0,)
    assert len(lr_sweep.geometric_grid(0.1, 100.0, factor=10.0)) == 4
    with pytest.raises(ValueError, match="factor must be > 1"):
        lr_sweep.geometric_grid(0.1, 1.0, factor=1.0)
    with pytest.raises(ValueError, match="stop"):
        lr_sweep.geometric_grid(1.0, 0.1)
    with pytest.raises(ValueError, match="start must be a positive"):
        lr_sweep.geometric_grid(0.0, 1.0)


def test_sweep_largest_trainable():
    sw = lr_sweep.Sweep(lrs=(0.1, 0.2, 0.4, 0.8), final_acc=(0.9, 0.6, math.nan, 0.2),
                        diverged=(False, False, True, False), skipped=(False,) * 4,
                        threshold=0.5, trained=(True, True, False, False))
    assert sw.trains() == [True, True, False, False]
    assert sw.largest_trainable() == 0.2
    none = lr_sweep.Sweep((0.1,), (0.1,), (False,), (False,), 0.5, (False,))
    assert none.largest_trainable() is None


def test_history_trained_is_finite_loss_and_accuracy():
    ok = History(steps=[0, 10], test_acc=[0.1, 0.8])
    assert ok.trained(0.8) and not ok.trained(0.81)
    blew_up = History(steps=[0, 10], test_acc=[0.1, 0.9], diverged_at=7)
    assert not blew_up.trained(0.5)  # a high accuracy before the blow-up does not count
    assert not History().trained(0.0)  # never evaluated: NaN accuracy
    with pytest.raises(ValueError, match="min_accuracy"):
        ok.trained(80)


def tiny_data(n=200, features=6, seed=0):
    """Two linearly separable classes: any reasonable learning rate learns them."""
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n, features, generator=g)
    y = (x[:, 0] > 0).long()
    return Dataset("tiny", x[:150], y[:150], x[150:], y[150:])


def test_lr_sweep_runs_skips_and_is_reproducible():
    data = tiny_data()
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
    data = tiny_data()

    def build():
        return MLP(6, 2, width=4, depth=1)

    with pytest.raises(TypeError, match="build_model must be callable and return a new model"):
        lr_sweep.lr_sweep(MLP(6, 2), data, (0.1,), 5, 0, 0.5)
    with pytest.raises(ValueError, match="ascending"):
        lr_sweep.lr_sweep(build, data, (0.2, 0.1), 5, 0, 0.5)
    with pytest.raises(ValueError, match="positive numbers"):
        lr_sweep.lr_sweep(build, data, (), 5, 0, 0.5)
    with pytest.raises(ValueError, match="threshold"):
        lr_sweep.lr_sweep(build, data, (0.1,), 5, 0, 1.5)
    with pytest.raises(ValueError, match="stop_after"):
        lr_sweep.lr_sweep(build, data, (0.1,), 5, 0, 0.5, stop_after=0)


def test_decayed_norm_and_equilibrium():
    torch.testing.assert_close(si.decayed_norm_sq(torch.tensor(2.0), torch.tensor(3.0), 0.1, 0.5),
                               torch.tensor(0.95 ** 2 * 2.0 + 0.01 * 3.0))
    # the equilibrium is a fixed point of the expected update
    x = si.equilibrium_norm_sq(0.1, 0.2, 0.04)
    assert math.isclose(si.decayed_norm_sq(x, 0.04, 0.1, 0.2), x, rel_tol=1e-12)
    with pytest.raises(ValueError, match="no equilibrium"):
        si.equilibrium_norm_sq(0.1, 0.0, 0.04)
    with pytest.raises(ValueError, match="weight_decay"):
        si.decayed_norm_sq(1.0, 1.0, 0.1, 20.0)
    with pytest.raises(ValueError, match="lr"):
        si.equilibrium_norm_sq(-0.1, 0.1, 0.04)


def test_row_norm_tracker_records_each_step_and_detaches():
    from bnlessons import train

    torch.manual_seed(0)
    g = torch.Generator().manual_seed(0)
    data = Dataset("toy", torch.randn(64, 5, generator=g), torch.randint(3, (64,), generator=g),
                   torch.randn(16, 5, generator=g), torch.randint(3, (16,), generator=g))
    model = MLP(5, 3, width=6, depth=2, norm="bn")
    layer = model.blocks[1].linear
    with si.RowNormTracker({"l1": layer}) as tracker:
        w0 = layer.weight.detach().clone()
        train.train(model, data, steps=4, lr=0.1, batch_size=8, weight_decay=0.1,
                    decay_only=["blocks.1.linear.weight"], progress=False)
    h = tracker.history["l1"]
    assert len(h["norm_sq"]) == len(h["grad_sq"]) == 4
    assert len(h["angle"]) == len(h["update_ratio"]) == 3
    # plain SGD with decay: the update is lr (g + wd w), with g orthogonal to each row, so
    # |update|_F^2 = lr^2 (|g|_F^2 + wd^2 |W|_F^2); the ratio is over |W|_F (Frobenius)
    step = 0.1 * math.sqrt(h["grad_sq"][0] + 0.01 * h["norm_sq"][0]) / math.sqrt(h["norm_sq"][0])
    assert math.isclose(h["update_ratio"][0], step, rel_tol=1e-5)
    assert math.isclose(h["norm_sq"][0], float((w0 ** 2).sum(1).mean()), rel_tol=1e-6)
    # the recorded norms follow the exact update (rows orthogonal to their gradients)
    for i in range(3):
        predicted = 0.99 ** 2 * h["norm_sq"][i] + 0.01 * h["grad_sq"][i]
        assert math.isclose(h["norm_sq"][i + 1], predicted, rel_tol=1e-4)
    train.train(model, data, steps=2, lr=0.1, batch_size=8, progress=False)
    assert len(h["norm_sq"]) == 4  # the hooks are gone after the with block
    with pytest.raises(ValueError, match="empty"):
        si.RowNormTracker({})
    with pytest.raises(TypeError, match="weight"):
        si.RowNormTracker({"relu": torch.nn.ReLU()})


def test_scale_free_equilibrium_is_the_fixed_point_of_the_expected_update():
    lr, wd, unit = 0.1, 0.1, 3e-3
    x = si.scale_free_equilibrium_norm_sq(lr, wd, unit)
    # at x, the expected update (gradient |g|^2 = unit / x) leaves the norm where it is
    assert math.isclose(si.decayed_norm_sq(x, unit / x, lr, wd), x, rel_tol=1e-12)
    # and it agrees with the form that takes the gradient measured there
    assert math.isclose(si.equilibrium_norm_sq(lr, wd, unit / x), x, rel_tol=1e-12)
    # iterating the expected update from far above or below converges to it
    for start in (100 * x, x / 100):
        y = start
        for _ in range(2000):
            y = si.decayed_norm_sq(y, unit / y, lr, wd)
        assert math.isclose(y, x, rel_tol=1e-6)
    with pytest.raises(ValueError, match="no equilibrium"):
        si.scale_free_equilibrium_norm_sq(0.1, 0.0, unit)
    with pytest.raises(ValueError, match="unit_grad_sq"):
        si.scale_free_equilibrium_norm_sq(0.1, 0.1, -1.0)


def test_lr_sweep_passes_rates_hooks_and_scores():
    data = tiny_data()
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
