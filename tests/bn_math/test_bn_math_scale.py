"""bnlessons.bn_math.scale_invariance: scale invariance, row norms and weight decay."""
import math

import pytest
import torch

from bnlessons.bn_math import scale_invariance as si
from bnlessons.models import MLP

from conftest import gaussian_classes


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
    with pytest.raises(ValueError, match="lr must be a finite number > 0"):
        si.effective_lr(0.0, w)
    with pytest.raises(TypeError, match="lr must be a finite number > 0"):
        si.effective_lr("0.1", w)
    with pytest.raises(TypeError, match="floating-point"):
        si.row_norms(torch.ones(2, 2, dtype=torch.int64))


def test_layer_and_gradient_helpers_validate(layer_and_batch):
    layer, u, upstream = layer_and_batch
    with pytest.raises(ValueError, match="in_features"):
        si.linear_bn_layer(0, 3)
    with pytest.raises(ValueError, match="eps"):
        si.linear_bn_layer(3, 3, eps=-1.0)
    with pytest.raises(ValueError, match="a must be a finite number > 0"):
        si.scaled_weight_gradients(layer, u, upstream, -2.0)
    with pytest.raises(TypeError, match="a must be a finite number > 0"):
        si.scaled_weight_gradients(layer, u, upstream, True)
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
    data = gaussian_classes(64, 16, features=5, classes=3)
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
