"""bnlessons.placement: the dropout variance shift and leakage in sequence models."""
import copy
import math

import pytest
import torch
from torch import nn

from bnlessons import checks, models
from bnlessons.models import ResidualBlock, ResidualMLP
from bnlessons.placement import dropout as dp
from bnlessons.placement import residual_blocks as rb
from bnlessons.placement import sequences as sq

from conftest import by_hand


def test_variance_ratio_closed_form_and_monte_carlo():
    assert dp.variance_ratio(0.0, 1.0, 0.5) == pytest.approx(2.0)
    assert dp.variance_ratio(5.0, 1.0, 1.0) == pytest.approx(1.0)  # nothing dropped
    c, v = 1 / math.sqrt(2 * math.pi), 0.5 - 0.5 / math.pi
    g = torch.Generator().manual_seed(0)
    z = torch.relu(torch.randn(400_000, generator=g, dtype=torch.float64))
    assert dp.monte_carlo_variance_ratio(z, 0.5, g) == pytest.approx(
        dp.variance_ratio(c, v, 0.5), rel=0.02)
    with pytest.raises(ValueError, match="keep probability"):
        dp.variance_ratio(0.0, 1.0, 0.0)
    with pytest.raises(ValueError, match="variance"):
        dp.variance_ratio(0.0, 0.0, 0.5)
    with pytest.raises(TypeError, match="c must be a finite number"):
        dp.variance_ratio("0", 1.0, 0.5)


def test_dropout_mlp_places_and_the_shift_it_causes():
    for place, drops in (("none", 0), ("every", 3), ("last", 1)):
        model = dp.dropout_mlp(place, in_features=6, num_classes=3, width=8, depth=3,
                               p_drop=0.5, seed=0)
        assert sum(isinstance(m, nn.Dropout) for m in model.modules()) == drops
    with pytest.raises(ValueError, match="place"):
        dp.dropout_mlp("middle", in_features=6, num_classes=3, width=8, depth=3, p_drop=0.5,
                       seed=0)
    # running statistics collected with dropout on, compared in eval mode: shifted
    model = dp.dropout_mlp("every", in_features=6, num_classes=3, width=64, depth=2,
                           p_drop=0.5, seed=1)
    x = torch.relu(torch.randn(512, 6, generator=torch.Generator().manual_seed(2))) + 0.5
    model.train()
    for bn in (m for m in model.modules() if isinstance(m, nn.BatchNorm1d)):
        bn.momentum = None
    with torch.no_grad():
        for _ in range(20):
            model(x)
    ratios = dp.bn_variance_shift(model, x)
    assert ratios[0] == pytest.approx(1.0, abs=0.02)  # nothing dropped before the first BN
    assert ratios[1] > 1.1
    with pytest.raises(ValueError, match="no BN"):
        dp.bn_variance_shift(nn.Linear(6, 3), x)


def _causal(norm, seed=0, **kw):
    return sq.causal_model(in_channels=4, channels=16, out_channels=3, norm=norm, seed=seed,
                           **kw)


def test_leakage_of_bn_and_layernorm():
    x = torch.randn(4, 4, 12, generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    bn = _causal("bn")
    assert min(sq.leakage(copy.deepcopy(bn).train(), x, 6).values()) > 1e-3
    assert max(sq.leakage(copy.deepcopy(bn).eval(), x, 6).values()) == 0.0
    assert max(sq.leakage(_causal("ln").train(), x, 6).values()) == 0.0
    maps = sq.leakage_map(copy.deepcopy(bn).train(), x, 6)
    assert maps["future"].shape == (4, 12) and maps["future"][:, 6:].min() > 0
    assert maps["batch"][1:].min() > 0  # the perturbed sequences move, of course
    # per-step BN: no leak across time, a leak across the batch
    step = _causal(None, make_norm=lambda c: sq.StepBatchNorm1d(c, 12)).train()
    leak = sq.leakage(step, x, 6)
    assert leak["future"] < 1e-12 and leak["batch"] > 1e-3
    with pytest.raises(ValueError, match="step"):
        sq.leakage(bn, x, 12)
    with pytest.raises(ValueError, match="N >= 2"):
        sq.leakage(bn, x[:1], 6)
    with pytest.raises(ValueError, match="norm must be"):
        _causal("batch")


def test_conv_bias_only_where_bn_cancels_it():
    assert _causal("bn").conv1.bias is None and _causal("masked bn").conv1.bias is None
    assert _causal("ln").conv1.bias is not None and _causal(None).conv1.bias is not None


def test_padding_and_masked_statistics():
    x = torch.ones(2, 3, 5, dtype=torch.float64)
    out = sq.padded(x, [5, 2])
    assert out[0].sum() == 15 and out[1, :, 2:].abs().sum() == 0
    longer = sq.padded(x, [5, 2], steps=8)
    assert longer.shape == (2, 3, 8) and longer[:, :, 5:].abs().sum() == 0
    with pytest.raises(ValueError, match="one length per sequence"):
        sq.padded(x, [5])
    g = torch.Generator().manual_seed(3)
    real = torch.randn(3, 4, 10, generator=g, dtype=torch.float64)
    lengths = [10, 6, 3]
    outs = {}
    for norm in ("bn", "masked bn"):
        model = _causal(norm).train()
        outs[norm] = [model(sq.padded(real, lengths, steps=10 + extra), lengths)[0, :, :10]
                      for extra in (0, 7)]
    assert (outs["bn"][0] - outs["bn"][1]).abs().max() > 1e-3  # padding moves BN's outputs
    assert (outs["masked bn"][0] - outs["masked bn"][1]).abs().max() < 1e-12
    # masked statistics are those of the real steps
    layer = sq.MaskedBatchNorm1d(4).double().train()
    padded_batch = sq.padded(real, lengths, steps=12)
    y = layer(padded_batch, lengths)
    values = torch.cat([real[i, :, :n] for i, n in enumerate(lengths)], dim=1)
    expected = (real[0] - values.mean(1, keepdim=True)) / torch.sqrt(
        values.var(1, unbiased=False, keepdim=True) + 1e-5)
    assert torch.allclose(y[0, :, :10], expected, atol=1e-12)
    assert torch.allclose(layer.running_mean, 0.1 * values.mean(1), atol=1e-12)
    with pytest.raises(ValueError, match="more than"):
        sq.real_steps([13], 12)


def test_step_batchnorm_normalises_each_step_over_the_batch():
    g = torch.Generator().manual_seed(4)
    x = torch.randn(8, 3, 5, generator=g) * 3 + 2
    layer = sq.StepBatchNorm1d(3, 7).train()
    y = layer(x)
    assert torch.allclose(y.mean(0), torch.zeros(3, 5), atol=1e-5)
    assert torch.allclose(y.var(0, unbiased=False), torch.ones(3, 5), atol=1e-3)
    # each step's output depends on that step only
    x2 = x.clone()
    x2[:, :, 3:] += 1.0
    assert torch.equal(layer(x2)[:, :, :3], y[:, :, :3])
    with pytest.raises(ValueError, match="T <= 7"):
        layer(torch.randn(2, 3, 9))


def test_next_step_training_cannot_beat_white_noise_honestly():
    """A causal model without a leak ends near the floor of 1 (predicting 0); BN over
    batch and time, trained on batches of two short sequences, goes below it in
    training mode and above it in eval mode."""
    g = torch.Generator().manual_seed(5)
    x = sq.white_noise(400, 1, 4, g)
    floor = float((x[:, :, 1:] ** 2).mean())
    result = {}
    for norm in ("bn", "ln"):
        model = sq.causal_model(in_channels=1, channels=16, out_channels=1, norm=norm, seed=0,
                                dtype=torch.float32)
        losses = sq.train_next_step(model, steps=400, batch=2, length=4, lr=0.01, seed=0)
        assert len(losses) == 400
        result[norm] = sq.evaluate_next_step(model, x, batch=2)
    assert result["bn"]["train"] < floor - 0.1 < floor + 0.05 < result["bn"]["eval"]
    assert abs(result["ln"]["train"] - floor) < 0.05 and abs(result["ln"]["eval"] - floor) < 0.05
    with pytest.raises(ValueError, match="batches of 3"):
        sq.evaluate_next_step(model, x, batch=3)


def test_placement_checks():
    assert checks.check_dropout_variance_ratio(by_hand(dp.variance_ratio), verbose=False)
    v = checks.check_dropout_variance_ratio(lambda c, vv, p: 1 / p, verbose=False)
    assert not v and "1/p is right only" in v.message
    assert checks.check_causal_norm(by_hand(sq.ChannelLayerNorm), verbose=False)
    v = checks.check_causal_norm(nn.BatchNorm1d, verbose=False)
    assert not v and "later steps" in v.message
    v = checks.check_causal_norm(lambda c: nn.Identity(), verbose=False)
    assert not v and "not normalised" in v.message


def _drop_bias(linear, bn, shift_running_mean=True, in_place=False):
    new_linear = nn.Linear(linear.in_features, linear.out_features, bias=False,
                           dtype=linear.weight.dtype)
    new_bn = bn if in_place else copy.deepcopy(bn)
    with torch.no_grad():
        new_linear.weight.copy_(linear.weight)
        if shift_running_mean:
            new_bn.running_mean -= linear.bias
    return new_linear, new_bn


def test_drop_bias_check():
    assert checks.check_drop_bias(_drop_bias, verbose=False)
    v = checks.check_drop_bias(lambda lin, bn: _drop_bias(lin, bn, shift_running_mean=False),
                               verbose=False)
    assert not v and "eval mode" in v.message and "running_mean" in v.message
    v = checks.check_drop_bias(lambda lin, bn: _drop_bias(lin, bn, in_place=True),
                               verbose=False)
    assert not v and "were changed" in v.message
    v = checks.check_drop_bias(lambda lin, bn: (copy.deepcopy(lin), copy.deepcopy(bn)),
                               verbose=False)
    assert not v and "still has a bias" in v.message
    v = checks.check_drop_bias(lambda lin, bn: None, verbose=False)
    assert not v and v.message == "return a pair (nn.Linear, nn.BatchNorm1d), got NoneType"


class _LinearFirst(nn.Module):
    """x + f(x) with f = linear, BN, ReLU, linear, BN, ReLU, linear: the wrong order."""

    def __init__(self, width):
        super().__init__()
        self.f = nn.Sequential(nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(),
                               nn.Linear(width, width), nn.BatchNorm1d(width), nn.ReLU(),
                               nn.Linear(width, width))

    def forward(self, x):
        return x + self.f(x)


class _Branch(nn.Module):
    """x + f(x) with f given as a list of layer names, to try orders against the check."""

    def __init__(self, width, layers, relu_after_sum=False):
        super().__init__()
        make = {"bn": lambda: nn.BatchNorm1d(width), "relu": lambda: nn.ReLU(inplace=True),
                "linear": lambda: nn.Linear(width, width)}
        self.f = nn.Sequential(*(make[name]() for name in layers))
        self.relu_after_sum = relu_after_sum

    def forward(self, x):
        out = x + self.f(x)
        return torch.relu(out) if self.relu_after_sum else out


class _FunctionalReLU(nn.Module):
    """The right block with F.relu instead of ReLU modules."""

    def __init__(self, width):
        super().__init__()
        self.bn1, self.bn2 = nn.BatchNorm1d(width), nn.BatchNorm1d(width)
        self.lin1, self.lin2 = nn.Linear(width, width), nn.Linear(width, width)

    def forward(self, x):
        return x + self.lin2(torch.relu(self.bn2(self.lin1(torch.relu(self.bn1(x))))))


def test_preact_block_check():
    assert checks.check_preact_block(
        by_hand(lambda w: ResidualBlock(w, norm="bn", branch_layers=2)), verbose=False)
    assert checks.check_preact_block(_FunctionalReLU, verbose=False)
    assert checks.check_preact_block(
        lambda w: _Branch(w, ["bn", "relu", "linear", "bn", "relu", "linear"]), verbose=False)
    # Three plausible wrong orders, each caught with the reason.
    v = checks.check_preact_block(lambda w: _Branch(w, ["bn", "linear", "bn", "linear"]),
                                  verbose=False)
    assert not v and "first linear layer sees the BN output" in v.message
    v = checks.check_preact_block(
        lambda w: _Branch(w, ["bn", "relu", "linear", "relu", "bn", "linear"]), verbose=False)
    assert not v and "between the first linear layer and the second BN" in v.message
    v = checks.check_preact_block(
        lambda w: _Branch(w, ["bn", "linear", "bn", "relu", "linear"]), verbose=False)
    assert not v and "first linear layer sees the BN output" in v.message
    v = checks.check_preact_block(
        lambda w: _Branch(w, ["bn", "relu", "linear", "bn", "linear"]), verbose=False)
    assert not v and "second linear layer sees the BN output" in v.message
    v = checks.check_preact_block(
        lambda w: _Branch(w, ["bn", "relu", "linear", "bn", "relu", "linear", "relu"]),
        verbose=False)
    assert not v and "nothing may follow the last linear layer" in v.message
    v = checks.check_preact_block(
        lambda w: _Branch(w, ["bn", "relu", "linear", "linear", "bn", "relu"]), verbose=False)
    assert not v and "in the order BN, linear, BN, linear" in v.message
    v = checks.check_preact_block(
        lambda w: _Branch(w, ["bn", "relu", "linear", "bn", "relu", "linear"],
                          relu_after_sum=True), verbose=False)
    assert not v and "skip path" in v.message
    post = checks.check_preact_block(
        lambda w: ResidualBlock(w, norm="bn", style="post", branch_layers=2), verbose=False)
    assert not post and "skip path" in post.message
    v = checks.check_preact_block(_LinearFirst, verbose=False)
    assert not v and "starts with a linear layer" in v.message
    v = checks.check_preact_block(lambda w: nn.Linear(w, w), verbose=False)
    assert not v and "two linear and two BatchNorm1d" in v.message


def test_block_signals_pre_and_post():
    torch.manual_seed(0)
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    pre = ResidualMLP(10, 3, width=16, depth=5, norm="bn", style="pre", branch_layers=2)
    post = ResidualMLP(10, 3, width=16, depth=5, norm="bn", style="post", branch_layers=2)
    s_pre, s_post = rb.block_signals(pre, x, y), rb.block_signals(post, x, y)
    assert all(len(s) == 5 for s in (*s_pre.values(), *s_post.values()))
    assert s_pre["cut"] == [0.0] * 5  # nothing on the skip path
    assert all(0.2 < c < 0.8 for c in s_post["cut"])  # the ReLU after the sum cuts
    assert all(g > 0 for g in s_pre["grad"] + s_post["grad"])
    assert all(p.grad is None for p in pre.parameters())  # gradients cleared afterwards
    # The stream of a pre-activation stack grows; a post-activation one is reset by BN + ReLU.
    assert s_pre["variance"][-1] > s_pre["variance"][0]
    with pytest.raises(TypeError, match="ResidualMLP"):
        rb.block_signals(nn.Linear(10, 3), x, y)


def test_positions_build_what_they_say():
    from bnlessons.placement import positions as P

    before = P.placed_mlp("before", "relu", in_features=6, num_classes=3, width=8, depth=2,
                          seed=0)
    assert before.blocks[0].linear.bias is None and before.blocks[0].norm_position == "before"
    after = P.placed_cnn("after", "relu", in_channels=1, num_classes=3, channels=(4, 8), seed=0)
    kinds = [type(m).__name__ for m in after][:3]
    assert kinds == ["Conv2d", "ReLU", "BatchNorm2d"] and after[0].bias is not None
    none = P.placed_cnn("none", "sigmoid", in_channels=1, num_classes=3, channels=(4, 8),
                        seed=0)
    assert not any(isinstance(m, nn.BatchNorm2d) for m in none)
    zs = P.nonlinearity_inputs(before, torch.randn(32, 6))
    assert len(zs) == 2 and zs[0].shape == (32, 8)
    z = torch.tensor([-5.0, -1.0, 0.0, 2.0, 4.5])
    assert P.saturated_fraction(z) == pytest.approx(0.4)
    assert P.inactive_fraction(z) == pytest.approx(0.6)
    with pytest.raises(ValueError, match="position"):
        P.placed_mlp("middle", "relu", in_features=6, num_classes=3, width=8, depth=2, seed=0)
    before_cnn = P.placed_cnn("before", "relu", in_channels=1, num_classes=3, channels=(4, 8),
                              seed=0)
    assert [type(m).__name__ for m in before_cnn] == [
        type(m).__name__ for m in models.small_cnn(1, 3, (4, 8))]  # it is models.small_cnn
    with pytest.raises(ValueError, match="no sigmoid"):
        P.nonlinearity_inputs(nn.Linear(3, 3), torch.randn(2, 3))


def test_placed_networks_share_one_init_rule():
    """The CNN gets the MLPs' rule (He for ReLU, Glorot otherwise), not PyTorch's default."""
    from bnlessons.placement import positions as P

    for position in P.POSITIONS:
        cnn = P.placed_cnn(position, "relu", in_channels=1, num_classes=10,
                           channels=(16, 32), seed=3)
        conv = cnn[3]  # 16 -> 32 channels: fan-in 144
        assert conv.weight.std().item() == pytest.approx(math.sqrt(2 / 144), rel=0.1)
        assert conv.bias is None or not conv.bias.any()
    sig = P.placed_cnn("none", "sigmoid", in_channels=1, num_classes=10, channels=(16, 32),
                       seed=3)
    glorot = math.sqrt(2 / (144 + 32 * 9))
    assert sig[3].weight.std().item() == pytest.approx(glorot, rel=0.1)
    mlp = P.placed_mlp("none", "relu", in_features=100, num_classes=10, width=64, depth=2,
                       seed=3)
    assert mlp.blocks[1].linear.weight.std().item() == pytest.approx(math.sqrt(2 / 64), rel=0.1)
    again = P.placed_cnn("none", "relu", in_channels=1, num_classes=10, channels=(16, 32),
                         seed=3)
    assert torch.equal(again[3].weight, P.placed_cnn("none", "relu", in_channels=1,
                                                     num_classes=10, channels=(16, 32),
                                                     seed=3)[3].weight)


def test_weighted_sum_variance_ratio():
    """One unit gives the single-value formula; correlated units added coherently give
    a ratio near 1; the formula matches a Monte Carlo of dropout on the sum."""
    c, v = 1 / math.sqrt(2 * math.pi), 0.5 - 0.5 / math.pi
    one = dp.weighted_sum_variance_ratio(torch.tensor([3.0], dtype=torch.float64),
                                         torch.tensor([c], dtype=torch.float64),
                                         torch.tensor([[v]], dtype=torch.float64), 0.5)
    assert float(one) == pytest.approx(dp.variance_ratio(c, v, 0.5), rel=1e-12)
    g = torch.Generator().manual_seed(0)
    n, units = 100_000, 16
    common = torch.randn(n, 1, generator=g, dtype=torch.float64)
    h = torch.relu(common + 0.3 * torch.randn(n, units, generator=g, dtype=torch.float64))
    w = torch.stack([torch.ones(units), torch.linspace(-1, 1, units)]).double()
    ratio = dp.weighted_sum_variance_ratio(w, h.mean(0), torch.cov(h.T, correction=0), 0.5)
    assert ratio.shape == (2,) and ratio[0] < 1.2 < 2.0 < ratio[1]
    mask = torch.rand(n, units, generator=g, dtype=torch.float64) < 0.5
    measured = (h * mask / 0.5 @ w.T).var(0) / (h @ w.T).var(0)
    assert torch.allclose(ratio, measured, rtol=0.03)
    # independent units: the one-unit value again
    iid = torch.relu(torch.randn(n, units, generator=g, dtype=torch.float64))
    r = dp.weighted_sum_variance_ratio(w[0], iid.mean(0), torch.cov(iid.T, correction=0), 0.5)
    assert float(r) == pytest.approx(dp.variance_ratio(c, v, 0.5), rel=0.03)
    with pytest.raises(ValueError, match="w must be"):
        dp.weighted_sum_variance_ratio(w[:, :3], h.mean(0), torch.eye(units).double(), 0.5)
    with pytest.raises(ValueError, match="no variance"):
        dp.weighted_sum_variance_ratio(w[0], h.mean(0), torch.zeros(units, units).double(), 0.5)
    with pytest.raises(TypeError, match="w must be a torch.Tensor"):
        dp.weighted_sum_variance_ratio([1.0], h.mean(0), torch.eye(units).double(), 0.5)


def test_temperature_scaling():
    from bnlessons.placement import regularisation as reg

    g = torch.Generator().manual_seed(0)
    y = torch.randint(0, 5, (4000,), generator=g)
    clean = torch.randn(4000, 5, generator=g, dtype=torch.float64) + 2.0 * nn.functional.one_hot(
        y, 5).double()
    # Logits four times larger are fitted with a temperature four times larger, to
    # the same loss; the fitted temperature beats T = 1 and its neighbours.
    t1, t4 = reg.fit_temperature(clean, y), reg.fit_temperature(4 * clean, y)
    assert t4 == pytest.approx(4 * t1, rel=1e-3)
    assert reg.nll(4 * clean, y, t4) == pytest.approx(reg.nll(clean, y, t1), rel=1e-6)
    assert reg.nll(4 * clean, y, t4) < reg.nll(4 * clean, y) - 0.1
    for t in (0.8 * t1, 1.25 * t1):
        assert reg.nll(clean, y, t) > reg.nll(clean, y, t1)
    with pytest.raises(ValueError, match="temperature"):
        reg.nll(clean, y, 0.0)
    with pytest.raises(ValueError, match="logits must be"):
        reg.nll(clean[:, 0], y)


def test_training_set_statistics():
    """Every training batch is normalised with the reference set's statistics, with
    gradients through them; eval mode is plain BN; nothing else changes."""
    from bnlessons.placement import regularisation as reg

    g = torch.Generator().manual_seed(1)
    x_ref = torch.randn(40, 6, generator=g) * 3 + 1
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(),
                          nn.Linear(5, 2))
    plain = copy.deepcopy(model)
    wrapped = reg.use_training_set_statistics(model, x_ref).train()
    assert isinstance(model[1], reg.TrainingSetBatchNorm)
    batch = x_ref[:8]
    out = wrapped(batch)
    # the same as plain BN over the whole reference set, rows of the batch picked out
    assert torch.allclose(out, plain.train()(x_ref)[:8], atol=1e-6)
    assert torch.allclose(model[1].running_mean, plain[1].running_mean, atol=1e-6)
    assert torch.allclose(model[1].running_var, plain[1].running_var, atol=1e-6)
    # a different batch of the same size sees the same statistics: no batch noise
    z = model[0](x_ref)
    expected = (model[0](batch) - z.mean(0)) / torch.sqrt(z.var(0, unbiased=False) + 1e-5)
    captured = {}
    model[1].register_forward_hook(lambda m, i, o: captured.update(out=o))
    wrapped(batch)
    assert torch.allclose(captured["out"][40:], expected * model[1].weight + model[1].bias,
                          atol=1e-5)
    out.pow(2).sum().backward()
    assert model[0].weight.grad is not None and model[1].weight.grad.abs().sum() > 0
    wrapped.eval()
    assert torch.equal(wrapped(batch), model(batch))
    with pytest.raises(ValueError, match="no nn.BatchNorm1d"):
        reg.use_training_set_statistics(nn.Linear(3, 3), x_ref)
    bare = copy.deepcopy(model).train()
    with pytest.raises(ValueError, match="reference rows"):
        bare(batch)


def test_sigmoid_controls():
    from bnlessons.placement import positions as P

    net = P.placed_mlp("none", "sigmoid", in_features=6, num_classes=3, width=8, depth=2, seed=0)
    before = [b.linear.weight.clone() for b in net.blocks]
    head = net.head.weight.clone()
    P.scale_hidden_weights(net, 4.0)
    assert all(torch.equal(b.linear.weight, 4 * w) for b, w in zip(net.blocks, before))
    assert torch.equal(net.head.weight, head)
    assert P.centre_sigmoids(net) == 2
    z = torch.tensor([-3.0, 0.0, 2.0])
    assert torch.allclose(net.blocks[0].act(z), torch.sigmoid(z) - 0.5)
    assert len(P.nonlinearity_inputs(net, torch.randn(4, 6))) == 2
    with pytest.raises(ValueError, match="no nn.Sigmoid"):
        P.centre_sigmoids(net)
    with pytest.raises(TypeError, match="models.MLP"):
        P.scale_hidden_weights(nn.Linear(3, 3), 2.0)
    with pytest.raises(ValueError, match="factor"):
        P.scale_hidden_weights(net, 0.0)



def test_weighted_dropout_ratio_check():
    """The reference passes; each plausible wrong formula fails with the step it skipped."""
    ok = checks.check_weighted_dropout_ratio(
        by_hand(lambda w, m, c, p: float(dp.weighted_sum_variance_ratio(w, m, c, p))),
        verbose=False)
    assert ok, ok.message

    def noise(w, m, c, p, second=True, squared=True):
        moment = m**2 + c.diagonal() if second else c.diagonal()
        return (1 / p - 1) * ((w**2 if squared else w) * moment).sum()

    wrong = {
        "treats the units as independent":
            lambda w, m, c, p: 1 + noise(w, m, c, p) / (w**2 * c.diagonal()).sum(),
        "loses its mean as well":
            lambda w, m, c, p: 1 + noise(w, m, c, p, second=False) / (w @ c @ w),
        "enter the noise squared":
            lambda w, m, c, p: 1 + noise(w, m, c, p, squared=False) / (w @ c @ w),
        "the way Li et al. write it":
            lambda w, m, c, p: 1 / (1 + noise(w, m, c, p) / (w @ c @ w)),
        # for one unit, 1/p is exactly the answer without the mean: that hint comes first
        "loses its mean": lambda w, m, c, p: 1 / p,
        "Var(b_j / p) = 1/p - 1": lambda w, m, c, p: 1 + 2 * noise(w, m, c, p) / (w @ c @ w),
    }
    for hint, fn in wrong.items():
        v = checks.check_weighted_dropout_ratio(fn, verbose=False)
        assert not v and hint in v.message, (hint, v.message)
        want = float(dp.weighted_sum_variance_ratio(*(torch.tensor(x, dtype=torch.float64)
                                                      for x in ([2.0], [0.4], [[0.34]])), 0.5))
        assert f"{want:.4g}" not in v.message  # the expected value is never printed
    v = checks.check_weighted_dropout_ratio(lambda w, m, c, p: "2", verbose=False)
    assert not v and "one number" in v.message


def test_eval_logits_restores_modes():
    from bnlessons.placement import regularisation as reg

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.BatchNorm1d(6), nn.Dropout(0.5), nn.Linear(6, 3))
    model.train()
    x = torch.randn(2500, 4)
    out = reg.eval_logits(model, x, batch_size=1000)
    assert out.shape == (2500, 3) and model.training and model[2].training
    model.eval()
    assert torch.equal(out, model(x))
