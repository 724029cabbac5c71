"""Ghost BN, Batch Renormalization, folding BN, AdaBN, and the inference checks."""
import copy
import math

import pytest
import torch
from torch import nn

from bnlessons import checks, models
from bnlessons.inference import deploy
from bnlessons.inference import small_batch as sb

from conftest import by_hand


def _x(n=16, c=5, seed=0, dtype=torch.float64):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, c, generator=g, dtype=dtype) * 2 + 1


def test_ghost_with_full_batch_is_batchnorm1d():
    x = _x()
    ref = nn.BatchNorm1d(5, momentum=0.2).double()
    ghost = sb.GhostBatchNorm1d(5, ghost_size=16, momentum=0.2).double()
    torch.testing.assert_close(ghost(x), ref(x))
    torch.testing.assert_close(ghost.running_var, ref.running_var)
    ghost.eval(), ref.eval()
    torch.testing.assert_close(ghost(x), ref(x))


def test_ghost_normalises_each_group_separately():
    x = _x(12)
    ghost = sb.GhostBatchNorm1d(5, ghost_size=4).double()
    out = ghost(x)
    for k in range(3):
        ref = nn.BatchNorm1d(5).double()
        torch.testing.assert_close(out[4 * k:4 * k + 4], ref(x[4 * k:4 * k + 4]))
    groups = x.reshape(3, 4, 5)
    want_var = 0.9 + 0.1 * groups.var(dim=1, unbiased=True).mean(0)
    torch.testing.assert_close(ghost.running_var, want_var)


def test_ghost_gradient_flows_and_errors():
    x = _x(8).requires_grad_()
    ghost = sb.GhostBatchNorm1d(5, ghost_size=4).double()
    (ghost(x) * torch.randn(8, 5, dtype=torch.float64)).sum().backward()
    assert x.grad is not None and torch.isfinite(x.grad).all()
    with pytest.raises(ValueError, match="multiple"):
        ghost(_x(6))
    with pytest.raises(ValueError, match="ghost_size"):
        sb.GhostBatchNorm1d(5, ghost_size=1)


def test_renorm_with_closed_limits_is_ghost_bn():
    x = _x(8)
    brn = sb.BatchRenorm1d(5, ghost_size=4, warmup_steps=10).double()
    ghost = sb.GhostBatchNorm1d(5, ghost_size=4).double()
    assert brn.limits() == (1.0, 0.0)
    torch.testing.assert_close(brn(x), ghost(x))


def test_renorm_unclipped_equals_eval_map():
    x = _x(8)
    brn = sb.BatchRenorm1d(5, ghost_size=8, r_max=1e6, d_max=1e6, warmup_steps=0,
                           ramp_steps=0).double()
    with torch.no_grad():
        brn.running_mean.copy_(torch.linspace(-1, 1, 5, dtype=torch.float64))
        brn.running_var.copy_(torch.linspace(0.5, 3, 5, dtype=torch.float64))
    want = copy.deepcopy(brn).eval()(x)
    torch.testing.assert_close(brn(x), want)


def test_renorm_schedule_and_errors():
    brn = sb.BatchRenorm1d(3, ghost_size=2, r_max=3, d_max=5, warmup_steps=2, ramp_steps=4)
    brn.num_batches_tracked.fill_(1)  # the next batch is the second: still warming up
    assert brn.limits() == (1.0, 0.0)
    brn.num_batches_tracked.fill_(3)  # the fourth batch: half-way through the ramp
    assert brn.limits() == pytest.approx((2.0, 2.5))
    brn.num_batches_tracked.fill_(100)
    assert brn.limits() == pytest.approx((3.0, 5.0))
    with pytest.raises(ValueError, match="r_max"):
        sb.BatchRenorm1d(3, 2, r_max=0.5)


def test_use_ghost_batchnorm_on_mlp():
    model = models.MLP(10, 3, width=8, depth=2, norm="bn")
    assert sb.use_ghost_batchnorm(model, 4) == 2
    assert isinstance(model.blocks[0].norm, sb.GhostBatchNorm1d)
    model2 = models.MLP(10, 3, width=8, depth=1, norm="bn")
    sb.use_ghost_batchnorm(model2, 2, renorm=True, warmup_steps=5)
    assert isinstance(model2.blocks[0].norm, sb.BatchRenorm1d)
    with pytest.raises(ValueError, match="renorm"):
        sb.use_ghost_batchnorm(models.MLP(10, 3, width=8, depth=1, norm="bn"), 2, r_max=2.0)
    with pytest.raises(ValueError, match="no nn.BatchNorm1d"):
        sb.use_ghost_batchnorm(models.MLP(10, 3, width=8, depth=1), 2)


def _trained_stats(model, x):
    model.train()
    with torch.no_grad():
        for _ in range(3):
            model(x)
    return model.eval()


def test_fold_linear_and_conv_exact():
    torch.manual_seed(0)
    lin, bn = nn.Linear(6, 4).double(), nn.BatchNorm1d(4).double()
    with torch.no_grad():
        bn.weight.uniform_(0.5, 2)
        bn.bias.normal_()
    _trained_stats(nn.Sequential(lin, bn), _x(32, 6))
    u = _x(10, 6, seed=3)
    torch.testing.assert_close(deploy.fold_linear_bn(lin, bn)(u), bn(lin(u)), rtol=0, atol=1e-12)
    conv, bn2 = nn.Conv2d(2, 3, 3, padding=1, bias=False).double(), nn.BatchNorm2d(3).double()
    _trained_stats(nn.Sequential(conv, bn2), torch.randn(4, 2, 5, 5, dtype=torch.float64))
    v = torch.randn(2, 2, 5, 5, dtype=torch.float64)
    torch.testing.assert_close(deploy.fold_conv_bn(conv, bn2)(v), bn2(conv(v)), rtol=0,
                               atol=1e-12)


def test_fold_batchnorm_models():
    model = models.MLP(12, 3, width=8, depth=2, norm="bn").double()
    _trained_stats(model, _x(32, 12))
    folded, count = deploy.fold_batchnorm(model)
    assert count == 2 and not any(isinstance(m, nn.BatchNorm1d) for m in folded.modules())
    u = _x(7, 12, seed=5)
    torch.testing.assert_close(folded(u), model(u), rtol=0, atol=1e-8)
    from bnlessons.models import small_cnn
    cnn = small_cnn().double()
    _trained_stats(cnn, torch.randn(8, 1, 8, 8, dtype=torch.float64))
    folded_cnn, count = deploy.fold_batchnorm(cnn)
    assert count == 2
    v = torch.randn(3, 1, 8, 8, dtype=torch.float64)
    torch.testing.assert_close(folded_cnn(v), cnn(v), rtol=0, atol=1e-8)


def test_fold_errors():
    with pytest.raises(TypeError, match="bn must be an BatchNorm1d to follow a Linear"):
        deploy.fold_linear_bn(nn.Linear(3, 2), nn.BatchNorm2d(2))
    with pytest.raises(ValueError, match="features"):
        deploy.fold_linear_bn(nn.Linear(3, 2), nn.BatchNorm1d(3))
    with pytest.raises(ValueError, match="running statistics"):
        deploy.fold_linear_bn(nn.Linear(3, 2), nn.BatchNorm1d(2, track_running_stats=False))
    with pytest.raises(TypeError, match="conv"):
        deploy.fold_conv_bn(nn.Linear(3, 2), nn.BatchNorm2d(2))


def test_shift_images_and_adapt_bn():
    x = torch.rand(64, 12, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(deploy.shift_images(x, "contrast", 0.5), 0.25 + 0.5 * x)
    assert deploy.shift_images(x, "brightness", 0.8).max() <= 1.0
    assert torch.equal(deploy.shift_images(x, "noise", 0.1, seed=1),
                       deploy.shift_images(x, "noise", 0.1, seed=1))
    with pytest.raises(ValueError, match="kind"):
        deploy.shift_images(x, "blur", 1.0)
    with pytest.raises(ValueError, match="gamma"):
        deploy.shift_images(x, "gamma", 0.0)
    # BN right after the first linear layer: an affine input shift is undone exactly
    # with a negligible eps (eps is not rescaled with the variance: the default 1e-5
    # leaves an error of about eps / Var, up to 1e-3 for these inputs)
    model = models.MLP(12, 3, width=8, depth=1, norm="bn").double()
    for _, bn in models.bn_layers(model):
        bn.eps = 1e-12
    xd = x.double()
    clean = deploy.adapt_bn(model, xd, batch_size=32)
    shifted = deploy.adapt_bn(model, 0.2 + 0.5 * xd, batch_size=32)
    torch.testing.assert_close(shifted(0.2 + 0.5 * xd), clean(xd), rtol=0, atol=1e-8)
    moved = deploy.adapt_bn(model, 0.2 + 0.6 * xd, batch_size=32)  # a different shift
    assert not torch.allclose(moved(0.2 + 0.5 * xd), clean(xd), rtol=0, atol=1e-3)
    assert model.training  # the original is untouched


def test_forward_time_measures_the_forward_pass(monkeypatch):
    import time

    clock = [0.0]  # a fake clock that only the model advances: exact under load

    class Slow(nn.Module):
        def forward(self, x):
            clock[0] += 0.002
            return x

    with monkeypatch.context() as patch:
        patch.setattr(time, "perf_counter", lambda: clock[0])
        seconds = deploy.forward_time(Slow(), torch.randn(4, 3), number=3, repeats=3)
    assert seconds == pytest.approx(0.002)
    with pytest.raises(ValueError, match="repeats"):
        deploy.forward_time(nn.Linear(3, 2), torch.randn(4, 3), repeats=0)


def test_checks_pass_references_and_fail_mistakes(capsys):
    from bnlessons import running_stats
    from bnlessons.inference import precise_bn
    assert checks.check_pytorch_update(by_hand(running_stats.pytorch_update)).passed
    assert checks.check_cs231n_update(by_hand(running_stats.cs231n_update)).passed
    assert checks.check_precise_bn(by_hand(precise_bn.recompute_bn_stats)).passed

    def fold(linear, bn):
        f = by_hand(deploy.fold_linear_bn)(linear, bn)
        return f.weight, f.bias
    assert checks.check_fold_linear(fold).passed

    def cs231n_as_pytorch(rm, rv, x, momentum):
        return by_hand(running_stats.cs231n_update)(rm, rv, x, 1 - momentum)
    verdict = checks.check_cs231n_update(cs231n_as_pytorch)
    assert not verdict.passed and "OLD" in verdict.message

    def no_eval(model, x, y, batch_size):
        with torch.no_grad():
            return float((model(x).argmax(1) == y).float().mean())
    verdict = checks.check_evaluate(no_eval)
    assert not verdict.passed and "running_mean" in verdict.message
    assert not checks.check_precise_bn(lambda m, x, b: None).passed
    assert not checks.check_fold_linear(lambda lin, bn: (lin.weight, lin.bias)).passed
    assert "[FAIL]" in capsys.readouterr().out


def test_checks_catch_a_solution_that_always_ends_in_training_mode():
    from bnlessons.inference import precise_bn

    def evaluate_then_train(model, x, y, batch_size):
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x).argmax(1) == y).float().mean())
        model.train()  # unconditional: wrong when the model came in eval mode
        return accuracy

    verdict = checks.check_evaluate(evaluate_then_train, verbose=False)
    assert not verdict.passed and "came in eval mode" in verdict.message

    def recompute_then_train(model, x, batch_size):
        by_hand(precise_bn.recompute_bn_stats)(model, x, batch_size)
        model.train()

    verdict = checks.check_precise_bn(recompute_then_train, verbose=False)
    assert not verdict.passed and "came in eval mode" in verdict.message


def test_checks_compare_every_submodules_mode_and_reject_in_place_updates():
    from bnlessons import running_stats
    from bnlessons.inference import precise_bn

    def recompute_restoring_the_top_flag_only(model, x, batch_size):
        was = model.training
        by_hand(precise_bn.recompute_bn_stats)(model, x, batch_size)
        model.train()
        model.training = was  # the submodules stay in training mode
    verdict = checks.check_precise_bn(recompute_restoring_the_top_flag_only, verbose=False)
    assert not verdict.passed and "only the top one" in verdict.message

    def evaluate_restoring_the_top_flag_only(model, x, y, batch_size):
        was = model.training
        model.eval()
        with torch.no_grad():
            accuracy = float((model(x).argmax(1) == y).double().mean())
        model.train()
        model.training = was
        return accuracy
    verdict = checks.check_evaluate(evaluate_restoring_the_top_flag_only, verbose=False)
    assert not verdict.passed and "only the top one" in verdict.message

    def in_place(rm, rv, count, x, momentum):
        new = by_hand(running_stats.pytorch_update)(rm, rv, count, x, momentum)
        rm.copy_(new[0])
        rv.copy_(new[1])
        return new
    verdict = checks.check_pytorch_update(in_place, verbose=False)
    assert not verdict.passed and "in place" in verdict.message

    def cs231n_in_place(rm, rv, x, momentum):
        new = by_hand(running_stats.cs231n_update)(rm, rv, x, momentum)
        rm.copy_(new[0])
        return new
    verdict = checks.check_cs231n_update(cs231n_in_place, verbose=False)
    assert not verdict.passed and "running_mean" in verdict.message


def _accuracy_by(rule):
    """An evaluation loop in eval mode that combines per-batch counts by ``rule``."""
    def evaluate(model, x, y, batch_size):
        was = model.training
        model.eval()
        hits = []
        with torch.no_grad():
            for i in range(0, len(x), batch_size):
                hits.append((model(x[i:i + batch_size]).argmax(1) == y[i:i + batch_size])
                            .double())
        model.train(was)
        return rule(hits, batch_size)
    return evaluate


def test_check_evaluate_names_the_ways_an_accuracy_goes_wrong():
    right = _accuracy_by(lambda hits, b: float(torch.cat(hits).mean()))
    assert checks.check_evaluate(right, verbose=False).passed
    for rule, words in (
            (lambda hits, b: float(torch.stack([h.mean() for h in hits]).mean()),
             "per-batch accuracies"),
            (lambda hits, b: float(torch.cat([h for h in hits if len(h) == b]).mean()),
             "partial batch"),
            (lambda hits, b: 1 - float(torch.cat(hits).mean()), "error rate")):
        verdict = checks.check_evaluate(_accuracy_by(rule), verbose=False)
        assert not verdict.passed and words in verdict.message, words
        assert "expected" not in verdict.message


@pytest.mark.parametrize("bias", [True, False])
def test_folding_matches_pytorchs_own_fusion(bias):
    from torch.nn.utils.fusion import fuse_conv_bn_eval, fuse_linear_bn_eval

    g = torch.Generator().manual_seed(9)
    linear = nn.Linear(5, 4, bias=bias).double().eval()
    bn = nn.BatchNorm1d(4).double().eval()
    conv = nn.Conv2d(3, 6, 3, padding=1, bias=bias).double().eval()
    bn2 = nn.BatchNorm2d(6).double().eval()
    with torch.no_grad():
        for p in [*linear.parameters(), *bn.parameters(), *conv.parameters(), *bn2.parameters()]:
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        for layer in (bn, bn2):
            layer.running_mean.copy_(torch.randn(layer.num_features, generator=g,
                                                 dtype=torch.float64))
            layer.running_var.copy_(torch.rand(layer.num_features, generator=g,
                                               dtype=torch.float64) + 0.5)
    ours, theirs = deploy.fold_linear_bn(linear, bn), fuse_linear_bn_eval(linear, bn)
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.bias, theirs.bias, rtol=1e-12, atol=1e-12)
    ours, theirs = deploy.fold_conv_bn(conv, bn2), fuse_conv_bn_eval(conv, bn2)
    torch.testing.assert_close(ours.weight, theirs.weight, rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(ours.bias, theirs.bias, rtol=1e-12, atol=1e-12)


def test_renorm_track_std_keeps_algorithm_1s_moving_sigma():
    torch.manual_seed(0)
    x = torch.randn(64 * 128, 3)
    sigma = {}
    for track_std in (False, True):
        layer = sb.BatchRenorm1d(3, ghost_size=2, warmup_steps=0, ramp_steps=0,
                                          momentum=None, track_std=track_std)
        for batch in x.split(128):
            layer(batch)
        sigma[track_std] = (layer.running_var + layer.eps).sqrt()
    # unbiased variances average to the population's; sigma_B of a pair averages
    # to sigma / sqrt(pi) for Gaussian values
    torch.testing.assert_close(sigma[False], torch.ones(3), atol=0.03, rtol=0)
    torch.testing.assert_close(sigma[True], torch.full((3,), 1 / math.pi**0.5), atol=0.02,
                               rtol=0)
    with pytest.raises(TypeError, match="track_std"):
        sb.BatchRenorm1d(3, ghost_size=2, track_std=1)


def test_renorm_track_std_unclipped_equals_its_eval_map():
    torch.manual_seed(1)
    layer = sb.BatchRenorm1d(4, ghost_size=4, r_max=1e6, d_max=1e6, warmup_steps=0,
                                      ramp_steps=0, track_std=True)
    for _ in range(5):
        layer(torch.randn(16, 4) * 2 + 1)
    x = torch.randn(16, 4) * 2 + 1
    with torch.no_grad():
        sigma = (layer.running_var + layer.eps).sqrt()
        expected = (x - layer.running_mean) / sigma * layer.weight + layer.bias
    out = layer(x)  # normalises with the statistics before this batch's update
    torch.testing.assert_close(out, expected, atol=1e-5, rtol=1e-5)


def test_operation_counts_of_linear_conv_and_bn():
    model = nn.Sequential(nn.Linear(3, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU(),
                          nn.Linear(4, 2))
    counts = deploy.operation_counts(model, torch.randn(5, 3))
    assert counts == {"multiply_adds": 5 * 4 * 3 + 5 * 2 * 4, "bn_elements": 5 * 4}
    conv = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3))
    counts = deploy.operation_counts(conv, torch.randn(1, 2, 4, 4))
    assert counts == {"multiply_adds": 3 * 16 * 2 * 9, "bn_elements": 3 * 16}
    assert model.training  # the mode is restored


def test_bn_time_and_paired_ratios(monkeypatch):
    import time

    # A fake clock that only the models advance: the ratios are then exact,
    # whatever else the machine is doing (a real sleep was flaky under load).
    clock = [0.0]

    class Slow(nn.Module):
        def __init__(self, seconds):
            super().__init__()
            self.seconds = seconds

        def forward(self, x):
            clock[0] += self.seconds
            return x

    with monkeypatch.context() as patch:
        patch.setattr(time, "perf_counter", lambda: clock[0])
        ratios = deploy.paired_time_ratios(Slow(0.001), Slow(0.003), torch.randn(2, 3),
                                           rounds=4, number=2)
    assert ratios == pytest.approx([3.0] * 4)
    with pytest.raises(ValueError, match="rounds"):
        deploy.paired_time_ratios(Slow(0.0), Slow(0.0), torch.randn(2, 3), rounds=0, number=1)

    class TimedBN(nn.BatchNorm1d):
        def forward(self, x):
            clock[0] += 0.002
            return super().forward(x)

    # bn_time counts the BN layer's time only, not the slow layer after it.
    model = nn.Sequential(nn.Linear(3, 4), TimedBN(4), Slow(1.0))
    with monkeypatch.context() as patch:
        patch.setattr(time, "perf_counter", lambda: clock[0])
        seconds = deploy.bn_time(model, torch.randn(8, 3), number=2, repeats=2)
    assert seconds == pytest.approx(0.002)
    with pytest.raises(ValueError, match="no BN"):
        deploy.bn_time(nn.Linear(3, 2), torch.randn(2, 3))


def _pytorch_update_with(biased=False, swapped=False, count_off=False):
    def update(rm, rv, n, x, momentum):
        dims = (0,) + tuple(range(2, x.dim()))
        if momentum is None:
            w = 1.0 / max(n, 1) if count_off else 1.0 / (n + 1)
        else:
            w = 1 - momentum if swapped else momentum
        return ((1 - w) * rm + w * x.mean(dims),
                (1 - w) * rv + w * x.var(dims, unbiased=not biased), n + 1)

    return update


@pytest.mark.parametrize("mistake, reason", [
    ({"biased": True}, "this is the biased variance"),
    ({"swapped": True}, "momentum is the weight of the NEW batch"),
    ({"count_off": True}, "k = num_batches_tracked + 1"),
])
def test_the_running_stat_checks_name_each_usual_mistake(mistake, reason):
    assert checks.check_pytorch_update(_pytorch_update_with(), verbose=False)
    v = checks.check_pytorch_update(_pytorch_update_with(**mistake), verbose=False)
    assert not v and reason in v.message, v.message

    def cs231n_unbiased(rm, rv, x, momentum):
        dims = (0,) + tuple(range(2, x.dim()))
        return (momentum * rm + (1 - momentum) * x.mean(dims),
                momentum * rv + (1 - momentum) * x.var(dims, unbiased=True))

    v = checks.check_cs231n_update(cs231n_unbiased, verbose=False)
    assert not v and "CS231n feeds the biased batch variance" in v.message, v.message
