"""The covariate-shift package code: data, saturation, the percentile probe,
Santurkar et al.'s ICS measure, the noise layer, the landscape measurement and the checks."""
import copy
import math

import pytest
import torch
import torch.nn.functional as F

from bnlessons import checks, data, probes
from bnlessons.covariate_shift import ics, landscape, noise, shift
from bnlessons.models import MLP
from bnlessons.train import train

from conftest import by_hand

# ---------------------------------------------------------------- shift.py

def test_labels_follow_the_sine_rule_whatever_the_shift():
    x = torch.tensor([[0.0, 0.5], [0.0, -0.5], [math.pi / 2, 0.9], [math.pi / 2, 1.1]],
                     dtype=torch.float64)
    assert shift.label(x).tolist() == [1, 0, 0, 1]
    g = torch.Generator().manual_seed(0)
    for delta in (0.0, 2.0):
        x, y = shift.covariate_shift_data(5000, shift=delta, scale=1.5, generator=g)
        assert torch.equal(y, shift.label(x))
        assert abs(x[:, 0].mean().item() - delta) < 0.05
        assert abs(x[:, 0].std().item() - 0.7 * 1.5) < 0.05


def test_bad_data_arguments_are_named():
    with pytest.raises(ValueError, match="n must"):
        shift.covariate_shift_data(0)
    with pytest.raises(ValueError, match="scale"):
        shift.covariate_shift_data(10, scale=0.0)
    with pytest.raises(TypeError, match="shift"):
        shift.covariate_shift_data(10, shift="far")
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        shift.label(torch.zeros(3, 3))


def test_linear_classifier_fits_the_source_and_fails_far_away():
    g = torch.Generator().manual_seed(1)
    x, y = shift.covariate_shift_data(500, generator=g)
    clf = shift.fit_linear_classifier(x, y)
    near = shift.covariate_shift_data(20000, generator=g)
    far = shift.covariate_shift_data(20000, shift=3.0, generator=g)
    assert shift.error_rate(clf, *near) < 0.05
    assert shift.error_rate(clf, *far) > 0.35
    assert torch.equal(clf.predict(x), (clf.logits(x) > 0).long())


def test_saturation_from_samples_by_hand():
    z = torch.tensor([-5.0, -1.0, 0.0, 3.0, 4.5], dtype=torch.float64)
    fraction, slope = shift.saturation(z, 4.0)
    s = torch.sigmoid(z)
    assert fraction == pytest.approx(0.4)
    assert slope == pytest.approx(float((s * (1 - s)).mean()), abs=1e-15)
    with pytest.raises(ValueError, match="threshold"):
        shift.saturation(z, 0.0)
    with pytest.raises(TypeError, match="floating-point"):
        shift.saturation(torch.tensor([1, 2]))


def test_gaussian_saturation_matches_theory_and_monte_carlo():
    fraction, slope = shift.gaussian_saturation(0.0, 1.0)
    assert fraction == pytest.approx(math.erfc(4 / math.sqrt(2)), rel=1e-12)
    g = torch.Generator().manual_seed(2)
    for mean, std in ((0.0, 1.0), (3.0, 2.0), (-6.0, 0.5)):
        z = mean + std * torch.randn(1_000_000, generator=g, dtype=torch.float64)
        f_mc, s_mc = shift.saturation(z)
        f, s = shift.gaussian_saturation(mean, std)
        assert abs(f - f_mc) < 0.003 and abs(s - s_mc) < 0.001
    with pytest.raises(ValueError, match="std"):
        shift.gaussian_saturation(0.0, -1.0)


def test_unit_input_png_is_a_png():
    png = shift.unit_input_png(1.0, 2.0)
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


# ---------------------------------------------------------------- ics.py

def _small_bn_net(seed=0):
    torch.manual_seed(seed)
    model = MLP(6, 3, width=5, depth=2, activation="sigmoid", norm="bn", init=0.5).double()
    with torch.no_grad():
        for block in model.blocks:
            block.norm.running_mean.uniform_(-1, 1)
    return model


def test_percentile_probe_matches_a_hand_hook_in_eval_mode():
    model = _small_bn_net()
    x = torch.randn(30, 6, dtype=torch.float64)
    before = model.blocks[1].norm.running_mean.clone()
    got = ics.percentile_probe(model, x, model.blocks[1].act)
    assert model.training
    assert torch.equal(before, model.blocks[1].norm.running_mean)
    model.eval()
    with torch.no_grad():
        h = model.blocks[0](x)
        z = model.blocks[1].norm(model.blocks[1].linear(h))
    want = torch.quantile(z, torch.tensor([0.15, 0.5, 0.85], dtype=torch.float64), dim=0)
    assert got.shape == (3, 5)
    assert torch.allclose(got, want, rtol=0, atol=1e-12)


def test_percentile_probe_rejects_foreign_modules():
    model = _small_bn_net()
    other = _small_bn_net(1)
    with pytest.raises(ValueError, match="not part of model"):
        ics.percentile_probe(model, torch.zeros(4, 6, dtype=torch.float64), other.blocks[0].act)


def test_percentile_recorder_with_train_and_spread_growth():
    mnist = data.digits()
    model = MLP(mnist.num_features, 10, width=8, depth=2, activation="sigmoid")
    record = ics.percentile_recorder(mnist.x_test[:50], model.blocks[-1].act)
    history = train(model, mnist, 6, lr=0.1, eval_every=3, record=record, progress=False)
    pcts = torch.stack(history.records["pcts"])
    assert pcts.shape == (3, 3, 8)
    growth = ics.spread_growth(pcts, history.steps, start=3)
    want = (pcts[-1, 2] - pcts[-1, 0]) / (pcts[1, 2] - pcts[1, 0])
    assert torch.allclose(growth, want)
    with pytest.raises(ValueError, match="start=5"):
        ics.spread_growth(pcts, history.steps, start=5)


def test_ics_is_zero_for_layer_one_and_matches_a_hand_computation():
    torch.manual_seed(3)
    model = MLP(4, 3, width=5, depth=1, activation="relu", norm="bn").double()
    x = torch.randn(16, 4, dtype=torch.float64)
    y = torch.randint(0, 3, (16,))
    state = copy.deepcopy(model.state_dict())
    lr = 0.3
    shifts = ics.internal_covariate_shift(model, x, y, lr)
    for key, value in model.state_dict().items():  # the model is untouched
        assert torch.equal(value, state[key])
    assert len(shifts) == 2 and shifts[0].l2 == 0.0
    # by hand: layer 2 (the head) after layer 1 (linear + BN) took its step
    probe = copy.deepcopy(model)
    F.cross_entropy(probe(x), y).backward()
    g_head = probe.head.weight.grad.clone()
    with torch.no_grad():
        for p in probe.blocks[0].parameters():
            p -= lr * p.grad
    probe.zero_grad()
    F.cross_entropy(probe(x), y).backward()
    g_moved = probe.head.weight.grad
    assert shifts[1].l2 == pytest.approx(float((g_head - g_moved).norm()), rel=1e-10)
    assert shifts[1].cosine == pytest.approx(
        float(F.cosine_similarity(g_head.flatten(), g_moved.flatten(), dim=0)), rel=1e-10)
    assert shifts[1].relative == pytest.approx(shifts[1].l2 / float(g_head.norm()), rel=1e-10)


def test_ics_bad_input():
    model = MLP(4, 3, width=5, depth=1)
    with pytest.raises(ValueError, match="lr"):
        ics.internal_covariate_shift(model, torch.zeros(2, 4), torch.zeros(2).long(), 0.0)
    with pytest.raises(ValueError, match=".blocks and .head"):
        ics.internal_covariate_shift(torch.nn.Linear(4, 3), torch.zeros(2, 4),
                                     torch.zeros(2).long(), 0.1)


# ---------------------------------------------------------------- noise.py

def test_noise_layer_passes_its_check_and_is_an_expectation_in_eval():
    assert checks.check_noise_layer(by_hand(noise.ShiftScaleNoise), verbose=False).passed
    layer = noise.ShiftScaleNoise().eval()
    a = torch.randn(5, 3, 2, 2)
    assert torch.equal(layer(a), 1.125 * a)
    layer.train()
    assert layer(a).shape == a.shape


def test_noise_layer_is_reproducible_with_a_generator():
    a = torch.randn(8, 4)
    outs = [noise.ShiftScaleNoise(generator=torch.Generator().manual_seed(5))(a)
            for _ in range(2)]
    assert torch.equal(outs[0], outs[1])


def test_noise_layer_bad_arguments():
    with pytest.raises(ValueError, match="mean_range"):
        noise.ShiftScaleNoise(mean_range=-1)
    with pytest.raises(ValueError, match="scale_range"):
        noise.ShiftScaleNoise(scale_range=(2.0, 1.0))
    with pytest.raises(ValueError, match=r"input must have shape \(N, C\)"):
        noise.ShiftScaleNoise()(torch.zeros(4))
    with pytest.raises(TypeError, match="floating-point"):
        noise.ShiftScaleNoise()(torch.zeros(4, 2, dtype=torch.int64))
    with pytest.raises(TypeError, match="sample_std"):
        noise.ShiftScaleNoise(sample_std="1")
    with pytest.raises(TypeError, match="scale_range"):
        noise.ShiftScaleNoise(scale_range=1.0)


def test_noisy_mlp_puts_noise_after_every_norm():
    model = noise.noisy_mlp(10, 3, width=6, depth=4, norm="bn")
    kinds = [type(m) for b in model.blocks for m in b.norm]
    assert kinds == [torch.nn.BatchNorm1d, noise.ShiftScaleNoise] * 4
    plain = noise.noisy_mlp(10, 3, width=6, depth=4, norm=None, noise=False)
    assert not any(isinstance(m, noise.ShiftScaleNoise) for m in plain.modules())
    assert plain(torch.zeros(2, 10)).shape == (2, 3)


# ---------------------------------------------------------------- landscape.py

def test_along_gradient_matches_a_hand_computation():
    torch.manual_seed(4)
    model = MLP(5, 3, width=4, depth=0).double()  # logistic regression: one linear layer
    x = torch.randn(20, 5, dtype=torch.float64)
    y = torch.randint(0, 3, (20,))
    w0, b0 = model.head.weight.detach().clone(), model.head.bias.detach().clone()
    lr = 0.5
    result = landscape.along_gradient(model, x, y, lr, multipliers=(1.0, 2.0))
    assert torch.equal(model.head.weight, w0)  # the model is untouched

    def loss_and_grad(w, b):
        w, b = w.clone().requires_grad_(True), b.clone().requires_grad_(True)
        loss = F.cross_entropy(x @ w.T + b, y)
        gw, gb = torch.autograd.grad(loss, (w, b))
        return float(loss.detach()), torch.cat([gw.flatten(), gb])

    loss0, g0 = loss_and_grad(w0, b0)
    gw, gb = g0[:15].view(3, 5), g0[15:]
    assert result.losses[0] == pytest.approx(loss0, rel=1e-12)
    assert result.grad_norm == pytest.approx(float(g0.norm()), rel=1e-12)
    for i, k in enumerate((1.0, 2.0), start=1):
        loss_k, g_k = loss_and_grad(w0 - k * lr * gw, b0 - k * lr * gb)
        assert result.losses[i] == pytest.approx(loss_k, rel=1e-12)
        assert result.grad_changes[i] == pytest.approx(float((g_k - g0).norm()), rel=1e-10)
        assert result.distances[i] == pytest.approx(k * lr * float(g0.norm()), rel=1e-12)
    assert result.loss_range == pytest.approx(max(result.losses) - min(result.losses))
    assert result.smoothness == pytest.approx(
        max(c / d for c, d in zip(result.grad_changes[1:], result.distances[1:])))


def test_along_gradient_bad_input():
    model = MLP(5, 3, width=4, depth=1)
    x, y = torch.zeros(4, 5), torch.zeros(4).long()
    with pytest.raises(ValueError, match="lr"):
        landscape.along_gradient(model, x, y, -0.1)
    with pytest.raises(ValueError, match="multipliers"):
        landscape.along_gradient(model, x, y, 0.1, multipliers=(1.0, 0.0))


# ---------------------------------------------------------------- checks

def test_checks_pass_the_package_code(capsys):
    assert checks.check_saturation(by_hand(shift.saturation)).passed
    assert checks.check_percentile_probe(by_hand(ics.percentile_probe)).passed
    assert "[PASS] check_saturation" in capsys.readouterr().out


def test_checks_name_what_is_wrong():
    v = checks.check_saturation(lambda z, t: (float((z.abs() <= t).double().mean()), 0.1),
                                verbose=False)
    assert not v and "unsaturated share" in v.message
    v = checks.check_saturation(lambda z, t: 0.5, verbose=False)
    assert not v and "pair" in v.message

    def slope(z):
        return float((torch.sigmoid(z) * (1 - torch.sigmoid(z))).mean())

    def frac(z, t):
        return float((z.abs() > t).double().mean())

    slips = {
        "one tail": lambda z, t: (float((z > t).double().mean()), slope(z)),
        "slope at the mean input": lambda z, t: (frac(z, t),
                                                 float(shift.sigmoid_slope(z.mean()))),
        "mean(sigmoid) * (1 - mean(sigmoid))": lambda z, t: (
            frac(z, t), float(torch.sigmoid(z).mean() * (1 - torch.sigmoid(z).mean()))),
    }
    for hint, fn in slips.items():
        v = checks.check_saturation(fn, verbose=False)
        assert not v and hint in v.message, v.message
    # the float32 idiom passes, and no failure shows the right answer
    v = checks.check_saturation(lambda z, t: (float((z.abs() > t).float().mean()),
                                              slope(z.float())), verbose=False)
    assert v, v.message
    v = checks.check_saturation(lambda z, t: (0.123, 0.0456), verbose=False)
    assert not v and "expected" not in v.message

    def forgets_eval(model, x, module):
        seen = {}
        handle = module.register_forward_hook(lambda m, i, o: seen.update(z=i[0].detach()))
        model(x)
        handle.remove()
        return torch.quantile(seen["z"], torch.tensor([0.15, 0.5, 0.85], dtype=x.dtype), dim=0)

    v = checks.check_percentile_probe(forgets_eval, verbose=False)
    assert not v and "running statistics" in v.message
    v = checks.check_percentile_probe(lambda m, x, mod: by_hand(ics.percentile_probe)(m, x, mod).T,
                                      verbose=False)
    assert not v and "transposed" in v.message

    def always_train(model, x, module):
        out = by_hand(ics.percentile_probe)(model, x, module)
        model.train()
        return out

    v = checks.check_percentile_probe(always_train, verbose=False)
    assert not v and "arrived in eval mode" in v.message

    def hooks_the_output(model, x, module):
        out = probes.capture_in_eval(model, x, {"m": module}, capture="output")["m"]
        return torch.quantile(out, torch.tensor([0.15, 0.5, 0.85], dtype=x.dtype), dim=0)

    v = checks.check_percentile_probe(hooks_the_output, verbose=False)
    assert not v and "output" in v.message and "inputs[0]" in v.message

    own_noise = by_hand(noise.ShiftScaleNoise)
    v = checks.check_noise_layer(lambda: own_noise(mean_range=1.0), verbose=False)
    assert not v and "mu" in v.message
    v = checks.check_noise_layer(lambda: own_noise(sample_std=0.3), verbose=False)
    assert not v and "N(sigma, 0.1)" in v.message
    v = checks.check_noise_layer(torch.nn.Identity, verbose=False)
    assert not v


def test_relative_noise_scales_the_shift_with_each_units_spread():
    a = torch.randn(4096, 3, generator=torch.Generator().manual_seed(0))
    a = a * torch.tensor([0.01, 1.0, 100.0])  # three units with very different spreads
    g = torch.Generator().manual_seed(1)
    shifted = noise.ShiftScaleNoise(scale_range=(1.0, 1.0), sample_std=0.0, generator=g,
                                    relative=True)(a)
    shift = (shifted - a).mean(dim=0) / a.std(dim=0)  # the shift in units of the spread
    assert shift.abs().max() <= 0.5 + 0.1 + 1e-6  # |mu| + sample_range, relative to the spread
    absolute = noise.ShiftScaleNoise(scale_range=(1.0, 1.0), sample_std=0.0,
                                     generator=torch.Generator().manual_seed(1))(a)
    assert (absolute - a).mean(dim=0).abs()[0] > 10 * a[:, 0].std()  # swamps the small unit
    with pytest.raises(TypeError, match="relative"):
        noise.ShiftScaleNoise(relative=1)


def test_step_drift_sees_noise_and_leaves_the_model_and_rng_alone():
    torch.manual_seed(0)
    x, y = torch.randn(64, 10), torch.randint(0, 3, (64,))
    noisy = noise.noisy_mlp(10, 3, width=16, depth=3, norm="bn")
    torch.manual_seed(1)
    clean = noise.noisy_mlp(10, 3, width=16, depth=3, norm="bn", noise=False)
    before = [p.detach().clone() for p in noisy.parameters()]
    state = torch.get_rng_state()
    where = {"linear": "blocks.1.linear", "bn": "blocks.1.act", "next bn": "blocks.2.act"}
    d_noisy = noise.step_drift(noisy, x, y, 0.01, {"linear": "blocks.1.linear",
                                                   "bn": "blocks.1.norm.1",
                                                   "next bn": "blocks.2.norm.1"}, steps=5)
    d_clean = noise.step_drift(clean, x, y, 0.01, where, steps=5)
    assert torch.equal(torch.get_rng_state(), state)
    assert all(torch.equal(p, q) for p, q in zip(before, noisy.parameters()))
    assert d_noisy["linear"].mean > 10 * d_clean["linear"].mean
    # a BN output's batch mean is beta: its mean drift is tiny, its examples still move
    assert d_noisy["bn"].mean < 0.01 and d_clean["bn"].mean < 0.01
    assert d_noisy["next bn"].per_example > 5 * d_clean["next bn"].per_example
    assert d_noisy["next bn"].per_example > 10 * d_noisy["next bn"].mean
    with pytest.raises(ValueError, match="no submodule"):
        noise.step_drift(clean, x, y, 0.01, {"x": "blocks.9.linear"}, steps=2)
    with pytest.raises(ValueError, match="lr"):
        noise.step_drift(clean, x, y, 0.0, where, steps=2)


def test_step_drift_by_hand_on_a_frozen_network():
    torch.manual_seed(2)
    model = MLP(4, 3, width=5, depth=1, activation="relu")
    for p in model.parameters():
        p.requires_grad_(False)
    model.head.weight.requires_grad_(True)  # only the head learns: the block's output is fixed
    x, y = torch.randn(16, 4), torch.randint(0, 3, (16,))
    drift = noise.step_drift(model, x, y, 0.5, {"head": "head", "act": "blocks.0.act"},
                             steps=3)
    assert drift["act"].mean == 0.0 and drift["act"].per_example == 0.0
    assert drift["head"].mean == 0.0  # the head's input comes from the frozen block


# ---------------------------------------------------------------- lr-sensitive measures

def test_median_shift_and_unit_input_recorder():
    pcts = torch.tensor([[[0.0, -1.0], [1.0, 0.0], [2.0, 1.0]],
                         [[3.0, -1.0], [4.0, 0.5], [5.0, 1.0]]], dtype=torch.float64)
    shifted = ics.median_shift(pcts, [0, 10], start=0)
    assert torch.allclose(shifted, torch.tensor([1.5, 0.25], dtype=torch.float64))
    with pytest.raises(ValueError, match="start=5"):
        ics.median_shift(pcts, [0, 10], start=5)
    mnist = data.digits()
    model = MLP(mnist.num_features, 10, width=8, depth=2, activation="sigmoid")
    record = ics.unit_input_recorder(mnist.x_test[:50], model.blocks[-1].act)
    history = train(model, mnist, 4, lr=0.1, eval_every=2, record=record, progress=False)
    assert len(history.records["saturation"]) == 3
    z = probes.capture_in_eval(model, mnist.x_test[:50], {"z": model.blocks[-1].act})["z"]
    assert history.records["saturation"][-1] == shift.saturation(z)
    assert torch.equal(history.records["pcts"][-1], ics.percentile_probe(
        model, mnist.x_test[:50], model.blocks[-1].act))


def test_gradient_noise_is_zero_for_the_same_batch_and_matches_by_hand():
    torch.manual_seed(5)
    model = MLP(4, 3, width=5, depth=2, activation="relu", norm="bn").double()
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    x2, y2 = torch.randn(16, 4, dtype=torch.float64), torch.randint(0, 3, (16,))
    assert ics.gradient_noise(model, x, y, x, y) == [0.0, 0.0, 0.0]
    got = ics.gradient_noise(model, x, y, x2, y2)
    probe = copy.deepcopy(model)
    F.cross_entropy(probe(x), y).backward()
    g1 = probe.head.weight.grad.clone()
    probe.zero_grad()
    F.cross_entropy(probe(x2), y2).backward()
    assert got[-1] == pytest.approx(float((g1 - probe.head.weight.grad).norm() / g1.norm()))


def test_first_order_ratio_tends_to_one_for_small_steps():
    torch.manual_seed(6)
    model = MLP(5, 3, width=4, depth=0).double()
    x, y = torch.randn(20, 5, dtype=torch.float64), torch.randint(0, 3, (20,))
    tiny = landscape.along_gradient(model, x, y, 1e-4, multipliers=(1.0,))
    assert tiny.first_order_ratios[0] == pytest.approx(1.0, abs=1e-3)
    far = landscape.along_gradient(model, x, y, 0.5, multipliers=(1.0, 50.0))
    loss0, loss1 = far.losses[0], far.losses[1]
    assert far.first_order_ratios[0] == pytest.approx(
        (loss0 - loss1) / (0.5 * far.grad_norm ** 2))
    assert far.first_order_ratios[1] < far.first_order_ratios[0]


# ---------------------------------------------------------------- reweighting

def test_sine_features_make_the_boundary_linear():
    g = torch.Generator().manual_seed(7)
    x, y = shift.covariate_shift_data(500, generator=g)
    far = shift.covariate_shift_data(20000, shift=2.5, generator=g)
    sine = shift.fit_linear_classifier(shift.sine_features(x), y)
    line = shift.fit_linear_classifier(x, y)
    assert sine.weight.shape == (3,)
    assert shift.error_rate(sine, shift.sine_features(far[0]), far[1]) < \
        0.5 * shift.error_rate(line, *far)
    with pytest.raises(ValueError, match=r"shape \(n, 2\)"):
        shift.sine_features(torch.zeros(3, 3))


def test_importance_weights_are_the_density_ratio():
    x = torch.tensor([[0.0, 0.0], [1.0, 5.0], [-2.0, 1.0]], dtype=torch.float64)
    w = shift.importance_weights(x, 2.0, 1.0)
    new = torch.distributions.Normal(2.0, 0.7).log_prob(x[:, 0])
    old = torch.distributions.Normal(0.0, 0.7).log_prob(x[:, 0])
    assert torch.allclose(w, torch.exp(new - old))
    assert torch.allclose(shift.importance_weights(x, 2.0, 0.5), w.sqrt())
    assert torch.equal(shift.importance_weights(x, 2.0, 0.0), torch.ones(3, dtype=w.dtype))
    # reweighting the source sample reproduces the mean of x1 under the shifted one
    g = torch.Generator().manual_seed(8)
    xs, _ = shift.covariate_shift_data(200_000, generator=g)
    ws = shift.importance_weights(xs, 1.0, 1.0)
    assert float((ws * xs[:, 0]).sum() / ws.sum()) == pytest.approx(1.0, abs=0.02)
    with pytest.raises(ValueError, match="power"):
        shift.importance_weights(x, 1.0, -1.0)


def test_effective_sample_size_and_weighted_fit():
    assert shift.effective_sample_size(torch.ones(10, dtype=torch.float64)) == pytest.approx(10)
    w = torch.tensor([1.0, 0.0, 0.0, 0.0])
    assert shift.effective_sample_size(w) == pytest.approx(1.0)
    with pytest.raises(ValueError, match="positive sum"):
        shift.effective_sample_size(torch.zeros(3))
    g = torch.Generator().manual_seed(9)
    x, y = shift.covariate_shift_data(300, generator=g)
    plain = shift.fit_linear_classifier(x, y)
    same = shift.fit_linear_classifier(x, y, sample_weight=torch.ones(300, dtype=x.dtype))
    assert torch.allclose(plain.weight, same.weight, atol=1e-6)
    with pytest.raises(ValueError, match="sample_weight"):
        shift.fit_linear_classifier(x, y, sample_weight=torch.ones(5, dtype=x.dtype))
