"""Residual chapter: signal propagation, Fixup, the variant runner and the checks."""
import math

import numpy as np
import pytest
import torch
from torch import nn

from bnlessons import checks, lr_sweep
from bnlessons.models import ResidualBlock, ResidualMLP
from bnlessons.residual import fixup, propagation, variants

from conftest import gaussian_classes, largest_stable_lr


def gen(seed=0):
    return torch.Generator().manual_seed(seed)


# --- propagation -----------------------------------------------------------------------------

def test_identity_blocks_keep_the_signal():
    blocks = propagation.residual_stack("linear", 8, 5, scale=0.0, generator=gen())
    x = torch.randn(50, 8, generator=gen(1), dtype=torch.float64)
    s = propagation.signal_propagation(blocks, x)
    assert s.depth == 5 and len(s.residual_var) == 6
    assert torch.allclose(s.residual_var, s.residual_var[0].expand(6), rtol=0, atol=0)
    assert torch.all(s.branch_var == 0) and torch.all(s.relative_change == 0)
    assert torch.allclose(s.cosine, torch.ones(5, dtype=torch.float64))


def test_statistics_match_a_hand_computation():
    blocks = propagation.residual_stack("bn-relu-linear", 6, 3, scale=0.5, generator=gen())
    x = torch.randn(40, 6, generator=gen(2), dtype=torch.float64) * 3 + 1
    s = propagation.signal_propagation(blocks, x)
    h = x
    for i, b in enumerate(blocks):
        f = 0.5 * b.branch(h).detach()
        nxt = h + f
        assert math.isclose(float(s.branch_var[i]), float(f.var(0, unbiased=False).mean()),
                            rel_tol=1e-12)
        assert math.isclose(float(s.residual_mean_sq[i + 1]), float((nxt.mean(0) ** 2).mean()),
                            rel_tol=1e-12)
        assert math.isclose(float(s.relative_change[i]), float(f.norm() / h.norm()),
                            rel_tol=1e-12)
        h = nxt
    assert torch.allclose(s.branch_fraction, s.branch_var / s.residual_var[1:])


def test_variance_laws_at_depth():
    x = torch.randn(1000, 128, generator=gen(3), dtype=torch.float64)
    plain = propagation.signal_propagation(
        propagation.residual_stack("linear", 128, 30, generator=gen(4)), x)
    slope = propagation.fit_line(torch.log2(plain.residual_var)).slope
    assert abs(slope - 1.0) < 0.05  # doubles per block
    bn = propagation.signal_propagation(
        propagation.residual_stack("bn-linear", 128, 30, generator=gen(5)), x)
    ratio = bn.residual_var / torch.arange(1, 32, dtype=torch.float64)
    assert (ratio - 1).abs().max() < 0.1  # Var(x_l) = l + 1
    relu = propagation.signal_propagation(
        propagation.residual_stack("bn-relu-linear", 128, 30, generator=gen(6)), x)
    fit = propagation.fit_line(relu.residual_var)
    assert abs(fit.slope - (1 - 1 / math.pi)) < 0.06 and fit.r2 > 0.99


def test_stack_is_reproducible_and_float64():
    a = propagation.residual_stack("bn-relu-linear", 8, 2, generator=gen(9))
    b = propagation.residual_stack("bn-relu-linear", 8, 2, generator=gen(9))
    wa, wb = a[0].branch[2].weight, b[0].branch[2].weight
    assert wa.dtype == torch.float64 and torch.equal(wa, wb)
    assert abs(float(wa.detach().std()) - math.sqrt(2 / 8)) < 0.2


def test_gradient_norms():
    torch.manual_seed(0)
    model = ResidualMLP(12, 3, width=8, depth=4, scale=0.0).double()
    x = torch.randn(20, 12, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    g = propagation.block_gradient_norms(model, x, y)
    assert g["weight"].shape == (4,) and torch.all(g["weight"] == 0)  # alpha = 0: no gradient
    assert torch.all(g["input"] > 0)
    assert torch.allclose(g["input"], g["input"][0].expand(4))  # identity blocks
    assert all(p.grad is None for p in model.parameters())


def test_fit_line():
    fit = propagation.fit_line([1.0, 3.0, 5.0, 7.0])
    assert math.isclose(fit.slope, 2.0) and math.isclose(fit.intercept, 1.0)
    assert math.isclose(fit.r2, 1.0)
    assert propagation.fit_line([0.0, 1.0, 0.0, 1.0]).r2 < 0.5
    # The hand-written least squares agrees with numpy's, with R^2 from the residuals.
    g = gen(3)
    x = torch.rand(30, generator=g, dtype=torch.float64) * 10
    y = 0.7 * x - 2.0 + torch.randn(30, generator=g, dtype=torch.float64)
    fit = propagation.fit_line(y, x)
    slope, intercept = np.polyfit(x.numpy(), y.numpy(), 1)
    assert math.isclose(fit.slope, slope, rel_tol=1e-12)
    assert math.isclose(fit.intercept, intercept, rel_tol=1e-12)
    residual = y.numpy() - (slope * x.numpy() + intercept)
    r2 = 1 - (residual ** 2).sum() / ((y.numpy() - y.numpy().mean()) ** 2).sum()
    assert math.isclose(fit.r2, r2, rel_tol=1e-12)


@pytest.mark.parametrize("call, error, words", [
    (lambda: propagation.residual_stack("conv", 4, 2), ValueError, "design"),
    (lambda: propagation.residual_stack("linear", 0, 2), ValueError, "width"),
    (lambda: propagation.residual_stack("linear", 4, 2.5), TypeError, "depth"),
    (lambda: propagation.residual_stack("linear", 4, 2, scale="1"), TypeError, "scale"),
    (lambda: propagation.signal_propagation([nn.Linear(2, 2)], torch.zeros(3, 2)), TypeError,
     "ResidualBlock"),
    (lambda: propagation.signal_propagation([ResidualBlock(2, style="post")],
                                            torch.zeros(3, 2)), ValueError, "post"),
    (lambda: propagation.signal_propagation(propagation.residual_stack("linear", 2, 1),
                                            torch.zeros(3, 2)), TypeError, "dtype"),
    (lambda: propagation.signal_propagation(propagation.residual_stack("linear", 2, 1),
                                            torch.zeros(1, 2, dtype=torch.float64)),
     ValueError, "batch"),
    (lambda: propagation.block_gradient_norms(ResidualMLP(4, 2, 4, 1).double(),
                                              torch.zeros(3, 4, dtype=torch.float64),
                                              torch.zeros(3)), TypeError, "int64"),
    (lambda: propagation.block_gradient_norms(ResidualMLP(4, 2, 4, 1).double(),
                                              torch.zeros(3, 4, dtype=torch.float64),
                                              torch.zeros(2, dtype=torch.int64)),
     ValueError, "one class label per row"),
    (lambda: propagation.fit_line([1.0]), ValueError, "two points"),
    (lambda: propagation.fit_line([1.0, 2.0], [1.0, 1.0]), ValueError, "constant"),
    (lambda: propagation.fit_line([1.0, float("nan")]), ValueError, "NaN"),
])
def test_propagation_bad_input(call, error, words):
    with pytest.raises(error, match=words):
        call()


# --- fixup -----------------------------------------------------------------------------------

def test_fixup_rules():
    torch.manual_seed(0)
    model = fixup.FixupResidualMLP(10, 3, width=256, depth=16, branch_layers=2)
    x = torch.randn(7, 10)
    assert torch.equal(model(x), torch.zeros(7, 3))  # zero head
    factor = fixup.fixup_rescale(16, 2)
    assert math.isclose(factor, 16 ** -0.5)
    for block in model.blocks:
        assert torch.all(block.linears[-1].weight == 0)
        std = float(block.linears[0].weight.detach().std())
        assert abs(std / (math.sqrt(2 / 256) * factor) - 1) < 0.05
        assert float(block.scale.detach()) == 1.0 and torch.all(block.bias_act == 0)
        h = torch.randn(5, 256)
        assert torch.equal(block(h), h)  # every block starts as the identity
    assert math.isclose(fixup.fixup_rescale(81, 3), 81 ** -0.25)
    assert fixup.fixup_rescale(10, 1) == 1.0


def test_fixup_learns_a_step():
    torch.manual_seed(0)
    model = fixup.FixupResidualMLP(10, 3, width=8, depth=3)
    x, y = torch.randn(32, 10), torch.randint(0, 3, (32,))
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    losses = []
    for _ in range(30):
        loss = nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] - 0.1
    assert any(float(b.linears[-1].weight.detach().abs().max()) > 0 for b in model.blocks)


@pytest.mark.parametrize("call, words", [
    (lambda: fixup.fixup_rescale(0, 2), "num_branches"),
    (lambda: fixup.fixup_rescale(4, 0), "branch_layers"),
    (lambda: fixup.FixupBlock(0), "width"),
    (lambda: fixup.FixupResidualMLP(10, 1), "num_classes"),
    (lambda: fixup.FixupResidualMLP(10, 3, depth=0), "depth"),
])
def test_fixup_bad_input(call, words):
    with pytest.raises(ValueError, match=words):
        call()


# --- residual variants -----------------------------------------------------------------------

def tiny_data():
    return gaussian_classes(150, 50, features=12, classes=3)


def _make(variant, depth, **settings):
    """``variants.make_model`` at the tests' small sizes (each can be overridden)."""
    settings = {"in_features": 12, "num_classes": 3, "width": 8, "seed": 0, **settings}
    return variants.make_model(variant, depth=depth, **settings)


def _fit(variant, data, **settings):
    settings = {"depth": 3, "width": 8, "seed": 0, "lr": 0.05, "steps": 5, "batch_size": 16,
                "momentum": 0.9, **settings}
    return variants.fit_variant(variant, data, **settings)


@pytest.mark.parametrize("variant", variants.VARIANTS)
def test_make_model_variants(variant):
    model = _make(variant, depth=3, in_features=12, num_classes=3, width=8)
    again = _make(variant, depth=3, in_features=12, num_classes=3, width=8)
    for p, q in zip(model.parameters(), again.parameters()):
        assert torch.equal(p, q)
    assert model(torch.randn(4, 12)).shape == (4, 3)


def test_variants_start_as_identity_where_they_should():
    x = torch.randn(16, 8)
    for variant in ("skipinit", "bn-zero-gamma"):
        model = _make(variant, depth=2, in_features=12, num_classes=3, width=8)
        for block in model.blocks:
            assert torch.allclose(block(x), x, atol=1e-7)
    none = _make("none", depth=2, in_features=12, num_classes=3, width=8)
    assert not torch.allclose(none.blocks[0](x), x)


def test_every_variant_has_the_same_head_unless_asked():
    for variant in ("none", "skipinit", "bn", "bn-zero-gamma"):
        model = _make(variant, depth=2, in_features=12, num_classes=3, width=8)
        assert isinstance(model.final_norm, nn.Identity)
        assert isinstance(model.final_act, nn.ReLU)
    for variant in ("skipinit", "bn"):
        with_norm = _make(variant, depth=2, in_features=12, num_classes=3,
                                        width=8, final_norm=True)
        assert isinstance(with_norm.final_norm, nn.BatchNorm1d)
    a = _make("bn", depth=2, in_features=12, num_classes=3, width=8)
    b = _make("bn", depth=2, in_features=12, num_classes=3, width=8,
                            final_norm=True)
    assert torch.equal(a.blocks[1].branch[2].weight, b.blocks[1].branch[2].weight)


def test_head_scale_multiplies_the_head_input_by_a_fixed_number():
    x = torch.randn(5, 12)
    plain = _make("bn", depth=2, seed=4)
    scaled = _make("bn", depth=2, seed=4, head_scale=0.25)
    assert isinstance(scaled.final_norm, variants.FixedScale)
    assert not any(p.requires_grad for p in scaled.final_norm.parameters())
    for p, q in zip(plain.parameters(), scaled.parameters()):
        assert torch.equal(p, q)  # the same weights: only the head's input differs
    with torch.no_grad():
        expected = plain.head(plain.final_act(0.25 * plain.features(x)))
        assert torch.allclose(scaled(x), expected, atol=1e-6)
        assert not torch.allclose(scaled(x), plain(x))


def test_depth_zero_is_the_same_shallow_network_for_every_variant():
    nets = [_make(v, depth=0, in_features=12, num_classes=3, width=8, seed=3)
            for v in ("none", "skipinit", "bn", "bn-zero-gamma")]
    x = torch.randn(5, 12)
    for net in nets:
        assert len(net.blocks) == 0
        assert torch.equal(net(x), nets[0](x))


def test_make_model_leaves_the_global_random_state_alone():
    torch.manual_seed(123)
    expected = torch.rand(3)
    torch.manual_seed(123)
    _make("skipinit", depth=2, in_features=12, num_classes=3, width=8, seed=5)
    assert torch.equal(torch.rand(3), expected)


def test_zero_gamma_blocks_start_as_identity_and_every_branch_trains():
    model = _make("bn-zero-gamma", depth=3, in_features=12, num_classes=3,
                                width=8, branch_layers=2)
    for block in model.blocks:
        last = block.branch[-1]
        assert isinstance(last, nn.BatchNorm1d) and torch.all(last.weight == 0)
        assert isinstance(block.branch[-2], nn.Linear)  # the zero gamma follows the last Linear
    data = tiny_data()
    for variant in ("bn-zero-gamma", "skipinit", "fixup"):
        trained, h = _fit(variant, data, branch_layers=2)
        initial = _make(variant, depth=3, in_features=12, num_classes=3, width=8,
                                      branch_layers=2)
        change = variants.branch_weight_change(initial, trained)
        assert change.shape == (3,) and torch.all(change > 0), variant
        assert torch.all(variants.branch_weight_change(initial, initial) == 0)
        assert h.test_acc == _fit(variant, data, branch_layers=2)[1].test_acc


def test_dropout_before_the_head():
    model = _make("skipinit", depth=2, in_features=12, num_classes=3, width=8,
                                dropout=0.5)
    assert any(isinstance(m, nn.Dropout) for m in model.final_act.modules())
    x = torch.randn(6, 12)
    model.eval()
    assert torch.equal(model(x), model(x))


def test_fit_variant_trains():
    data = tiny_data()
    _, h = _fit("skipinit", data, depth=4, steps=60, width=16)
    assert h.trained(0.6)


def test_lr_sweep_takes_a_variant_builder():
    data = tiny_data()
    sweep = lr_sweep.lr_sweep(lambda: _make("skipinit", 2),
                              data, [0.05, 1e4, 1e5], steps=30, seed=0, threshold=0.4,
                              batch_size=16, stop_after=1)
    assert sweep.trains() == [True, False, False] and sweep.skipped == (False, False, True)
    assert sweep.largest_trainable() == 0.05


@pytest.mark.parametrize("call, error, words", [
    (lambda: _make("ln", 2), ValueError, "variant"),
    (lambda: _make("skipinit", 2, alpha=float("nan")), ValueError, "alpha"),
    (lambda: _make("skipinit", 2, alpha="0"), TypeError, "alpha"),
    (lambda: _make("skipinit", 2, seed=-1), ValueError, "seed"),
    (lambda: _make("skipinit", 2, seed=1.0), TypeError, "seed"),
    (lambda: _make("fixup", 2, final_norm=True), ValueError, "final_norm"),
    (lambda: _make("bn", 2, final_norm=1), TypeError, "final_norm"),
    (lambda: _make("bn", 2, head_scale=0.0), ValueError, "head_scale"),
    (lambda: _make("bn", 2, head_scale="0.1"), TypeError, "head_scale"),
    (lambda: _make("bn", 2, head_scale=0.1, final_norm=True), ValueError, "head_scale"),
    (lambda: _make("fixup", 2, head_scale=0.1), ValueError, "head_scale"),
    (lambda: _make("skipinit", 2, dropout=1.0), ValueError, "dropout"),
    (lambda: _make("skipinit", 2, dropout="0.1"), TypeError, "dropout"),
    (lambda: _fit("bn", "data"), TypeError, "Dataset"),
    (lambda: variants.branch_weight_change(nn.Linear(2, 2), nn.Linear(2, 2)), TypeError,
     "blocks"),
    (lambda: variants.branch_weight_change(_make("bn", 2),
                                           _make("bn", 3)), ValueError, "blocks"),
    (lambda: variants.branch_weight_change(_make("fixup", 2),
                                           _make("fixup", 2)), ValueError, "zero"),
])
def test_residual_bad_input(call, error, words):
    with pytest.raises(error, match=words):
        call()


# --- checks ----------------------------------------------------------------------------------

def good_prediction(design, depth, alpha):
    l = torch.arange(depth + 1, dtype=torch.float64)
    return (1 + alpha**2) ** l if design == "linear" else 1 + alpha**2 * l


def test_check_variance_prediction(capsys):
    assert checks.check_variance_prediction(good_prediction).passed
    assert "[PASS]" in capsys.readouterr().out
    forgot_alpha = lambda d, n, a: good_prediction(d, n, 1.0)  # noqa: E731
    v = checks.check_variance_prediction(forgot_alpha, verbose=False)
    assert not v.passed and "alpha" in v.message and "first wrong at l = 1" in v.message
    no_x0 = lambda d, n, a: good_prediction(d, n, a)[1:]  # noqa: E731
    assert "shape" in checks.check_variance_prediction(no_x0, verbose=False).message
    bn_doubles = lambda d, n, a: good_prediction("linear", n, a)  # noqa: E731
    v = checks.check_variance_prediction(bn_doubles, verbose=False)
    assert "bn-linear" in v.message and "adds alpha**2" in v.message
    # each slip gets the step it skipped, and no message shows an expected value
    alpha_not_squared = lambda d, n, a: good_prediction(d, n, a**0.5)  # noqa: E731
    v = checks.check_variance_prediction(alpha_not_squared, verbose=False)
    assert "alpha**2, not alpha" in v.message and "expected" not in v.message
    linear_adds = lambda d, n, a: good_prediction("bn-linear", n, a)  # noqa: E731
    assert "multiplies the variance" in checks.check_variance_prediction(
        linear_adds, verbose=False).message
    shifted = lambda d, n, a: good_prediction(d, n + 1, a)[1:]  # noqa: E731
    assert "count the blocks from l = 1" in checks.check_variance_prediction(
        shifted, verbose=False).message
    branch_only = lambda d, n, a: torch.full((n + 1,), a**2, dtype=torch.float64)  # noqa: E731
    assert "skip path keeps" in checks.check_variance_prediction(
        branch_only, verbose=False).message
    assert "depth + 1 values" in checks.check_variance_prediction(no_x0, verbose=False).message


class GoodBlock(nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = nn.Linear(width, width)
        self.alpha = nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + self.alpha * self.linear(torch.relu(x))


class AlphaInside(GoodBlock):
    def forward(self, x):
        return x + self.linear(self.alpha * torch.relu(x))


class AlphaOne(GoodBlock):
    def __init__(self, width):
        super().__init__(width)
        self.alpha = nn.Parameter(torch.ones(()))


class NotIdentity(GoodBlock):
    def forward(self, x):
        return x + self.alpha * self.linear(x) + 0.1 * torch.relu(x)


class Mixed(GoodBlock):  # (1 - alpha) x + alpha f(x): the identity at 0, linear in alpha
    def forward(self, x):
        return (1 - self.alpha) * x + self.alpha * self.linear(torch.relu(x))


class NoRelu(GoodBlock):
    def forward(self, x):
        return x + self.alpha * self.linear(x)


class ReluAfter(GoodBlock):
    def forward(self, x):
        return x + self.alpha * torch.relu(self.linear(x))


def test_check_skipinit_block_rejects_a_mixed_skip_and_a_misplaced_relu():
    mixed = checks.check_skipinit_block(Mixed, verbose=False)
    assert not mixed.passed and "skip path carries x" in mixed.message
    for block in (NoRelu, ReluAfter):
        v = checks.check_skipinit_block(block, verbose=False)
        assert not v.passed and "ReLU" in v.message, block
    # the probes leave the block as they found it: alpha back at 0, weights restored
    block = GoodBlock(16).double()
    before = [p.detach().clone() for p in block.parameters()]
    assert checks.check_skipinit_block(lambda w: block, verbose=False).passed
    assert all(torch.equal(p, q) for p, q in zip(block.parameters(), before))


def test_check_fixup_exponent():
    assert checks.check_fixup_exponent(lambda k: 1 / (2 * k - 2), verbose=False).passed
    for wrong, words in ((lambda k: 1 / (k - 1), "enters twice"),
                         (lambda k: 1 / (2 * k), "not rescaled"),
                         (lambda k: 0.5, "1/sqrt(D) for every k"),
                         (lambda k: -1 / (2 * k - 2), "sign"),
                         (lambda k: 0.3, "sum it over D branches")):
        v = checks.check_fixup_exponent(wrong, verbose=False)
        assert not v.passed and words in v.message, words
    assert "one number" in checks.check_fixup_exponent(lambda k: "1/2", verbose=False).message
    assert "raised" in checks.check_fixup_exponent(lambda k: 1 / 0, verbose=False).message


def test_check_skipinit_block():
    assert checks.check_skipinit_block(GoodBlock, verbose=False).passed
    inside = checks.check_skipinit_block(AlphaInside, verbose=False)
    # alpha * relu(x) feeds a linear with a bias: the output is not x at alpha = 0
    assert not inside.passed and "output at initialisation" in inside.message
    assert "starts at 0" in checks.check_skipinit_block(AlphaOne, verbose=False).message
    assert not checks.check_skipinit_block(NotIdentity, verbose=False).passed
    assert "raised" in checks.check_skipinit_block(lambda w: 1 / 0, verbose=False).message
    assert "nn.Module" in checks.check_skipinit_block(lambda w: "block", verbose=False).message


def test_check_largest_stable_lr():
    assert checks.check_largest_stable_lr(largest_stable_lr, verbose=False).passed
    finite_only = lambda t, lrs, m: max(lr for lr in lrs if not t(lr).diverged)  # noqa: E731
    v = checks.check_largest_stable_lr(finite_only, verbose=False)
    assert not v.passed and "min_accuracy" in v.message
    last_good = lambda t, lrs, m: largest_stable_lr(t, lrs, m) or lrs[0]  # noqa: E731
    assert "None" in checks.check_largest_stable_lr(last_good, verbose=False).message
    unsorted = lambda t, lrs, m: next((lrs[i - 1] for i, lr in enumerate(lrs)  # noqa: E731
                                       if t(lr).diverged), lrs[-1])
    assert not checks.check_largest_stable_lr(unsorted, verbose=False).passed


def test_stack_leaves_the_global_random_state_alone_and_is_fully_initialised():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    blocks = propagation.residual_stack("bn-relu-linear", 8, 3, scale=0.5, generator=gen(1))
    assert torch.equal(torch.rand(3), expected)
    for b in blocks:
        assert float(b.scale.detach()) == 0.5
        bn = b.branch[0]
        assert torch.all(bn.weight == 1) and torch.all(bn.bias == 0)
        assert torch.all(bn.running_mean == 0) and torch.all(bn.running_var == 1)
        assert torch.isfinite(b.branch[2].weight).all()


def test_unit_gamma_matches_zero_gamma_but_for_the_trailing_gamma():
    sizes = dict(depth=3, in_features=12, num_classes=3, width=8, branch_layers=2)
    zero, unit = _make("bn-zero-gamma", **sizes), _make("bn-unit-gamma", **sizes)
    count = [sum(p.numel() for p in m.parameters()) for m in (zero, unit)]
    assert count[0] == count[1]
    assert count[1] > sum(p.numel() for p in _make("bn", **sizes).parameters())
    for a, b in zip(zero.blocks, unit.blocks):
        assert isinstance(b.branch[-1], nn.BatchNorm1d)
        assert isinstance(b.branch[-2], nn.Linear)
        assert torch.all(b.branch[-1].weight == 1)
        assert torch.all(a.branch[-1].weight == 0)
    for (name, p), (_, q) in zip(zero.named_parameters(), unit.named_parameters()):
        if not name.endswith(f"branch.{len(zero.blocks[0].branch) - 1}.weight"):
            assert torch.equal(p, q), name
    x = torch.randn(16, 8)
    assert not torch.allclose(unit.blocks[0](x), x)
