"""Train/eval helpers, precise BN and the EMA tracker."""
import copy

import pytest
import torch
from torch import nn
from torchvision.ops import FrozenBatchNorm2d

from bnlessons import models
from bnlessons import running_stats as rs
from bnlessons.inference import bn_modes as bm
from bnlessons.inference import precise_bn as pb

from conftest import gaussian_classes


def _mlp(seed=0):
    torch.manual_seed(seed)
    return nn.Sequential(nn.Linear(6, 8, bias=False), nn.BatchNorm1d(8), nn.ReLU(),
                         nn.Linear(8, 3))


def test_logits_with_batch_stats_leaves_model_alone():
    model = _mlp()
    x = torch.randn(32, 6)
    before = bm.bn_buffers(model)
    model.eval()
    a = bm.logits_with_batch_stats(model, x, 8)
    assert not model.training
    assert bm.buffers_changed(before, bm.bn_buffers(model)) == []
    b = torch.cat([copy.deepcopy(model).train()(x[i:i + 8]) for i in range(0, 32, 8)]).detach()
    torch.testing.assert_close(a, b)
    assert not torch.allclose(a, bm.eval_logits(model, x))


def test_batch_mates_change_train_mode_output_only():
    model = _mlp()
    x = torch.randn(16, 6)
    other = torch.randn(16, 6)
    mixed = torch.cat([x[:1], other[1:]])
    train_a = bm.logits_with_batch_stats(model, x, 16)[0]
    train_b = bm.logits_with_batch_stats(model, mixed, 16)[0]
    assert (train_a - train_b).abs().max() > 1e-3
    torch.testing.assert_close(bm.eval_logits(model, x)[0], bm.eval_logits(model, mixed)[0])


def test_freeze_batchnorm_keeps_eval_function_and_ignores_training():
    torch.manual_seed(0)
    model = models.small_cnn()
    x = torch.randn(8, 1, 8, 8)
    model.train()(x)  # give the running statistics something
    frozen = bm.freeze_batchnorm(model)
    assert sum(isinstance(m, FrozenBatchNorm2d) for m in frozen.modules()) == 2
    want = bm.eval_logits(model, x)
    frozen.train()
    torch.testing.assert_close(frozen(x), want, rtol=1e-5, atol=1e-6)
    with pytest.raises(ValueError, match="BatchNorm2d"):
        bm.freeze_batchnorm(_mlp())


def test_replace_batchnorm_counts_and_checks():
    model = _mlp()
    assert bm.replace_batchnorm(model, lambda bn: nn.Identity()) == 1
    with pytest.raises(TypeError, match="factory"):
        bm.replace_batchnorm(_mlp(), 3)
    with pytest.raises(TypeError, match="model"):
        bm.bn_layers("not a model")


def test_batch_size_errors():
    with pytest.raises(ValueError, match="batch_size"):
        bm.logits_with_batch_stats(_mlp(), torch.randn(4, 6), 5)


def test_recompute_bn_stats_is_algorithm2_with_current_weights():
    model = _mlp().double()
    model[1].momentum = 0.3
    x = torch.randn(50, 6, dtype=torch.float64)
    model.train()
    used = pb.recompute_bn_stats(model, x, batch_size=16)
    assert used == 3
    feats = model[0](x[:48]).detach()
    mean, var = rs.algorithm2(list(feats.split(16)))
    torch.testing.assert_close(model[1].running_mean, mean)
    torch.testing.assert_close(model[1].running_var, var)
    assert model[1].momentum == 0.3 and model.training
    assert int(model[1].num_batches_tracked) == 3


def test_recompute_keeps_dropout_off():
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 6), nn.Dropout(0.5), nn.BatchNorm1d(6)).double()
    x = torch.randn(40, 4, dtype=torch.float64)
    pb.recompute_bn_stats(model, x, 20)
    feats = model[0](x).detach()
    _, var = rs.algorithm2(list(feats.split(20)))
    torch.testing.assert_close(model[2].running_var, var)


def test_recompute_errors():
    with pytest.raises(ValueError, match="batch-norm"):
        pb.recompute_bn_stats(nn.Linear(3, 3), torch.randn(8, 3), 4)
    with pytest.raises(ValueError, match="batch_size"):
        pb.recompute_bn_stats(_mlp(), torch.randn(8, 6), 1)
    with pytest.raises(ValueError, match="larger"):
        pb.recompute_bn_stats(_mlp(), torch.randn(8, 6), 9)


def test_ema_tracker_matches_a_batchnorm_with_that_momentum():
    a = _mlp()
    b = copy.deepcopy(a)
    b[1].momentum = 0.01
    tracker = pb.EMATracker(a, 0.01)
    for _ in range(5):
        x = torch.randn(16, 6)
        a(x)
        b(x)
    torch.testing.assert_close(tracker.mean["1"], b[1].running_mean)
    torch.testing.assert_close(tracker.var["1"], b[1].running_var)
    copy_ = tracker.copy_with_stats(a)
    torch.testing.assert_close(copy_[1].running_var, b[1].running_var)
    copy_.train()(torch.randn(16, 6))  # a copy's forward must not feed the tracker
    torch.testing.assert_close(tracker.mean["1"], b[1].running_mean)
    tracker.remove()
    with pytest.raises(ValueError, match="momentum"):
        pb.EMATracker(a, 0.0)


def test_bias_corrected_tracker_is_a_weighted_average_of_batch_statistics():
    model = _mlp()
    tracker = pb.EMATracker(model, 0.1, bias_correction=True)
    g = torch.Generator().manual_seed(3)
    batches = [torch.randn(16, 6, generator=g) * 2 + 5 for _ in range(4)]
    means, variances = [], []
    for x in batches:
        with torch.no_grad():
            inputs = model[0](x)  # what the BN layer "1" sees
        means.append(inputs.mean(dim=0))
        variances.append(inputs.var(dim=0, unbiased=True))
        model(x)
    weights = torch.tensor([0.1 * 0.9 ** (3 - k) for k in range(4)])
    weights = weights / weights.sum()  # the start's weight 0.9**4 removed
    mean, var = tracker.statistics("1")
    torch.testing.assert_close(mean, sum(w * m for w, m in zip(weights, means)))
    torch.testing.assert_close(var, sum(w * v for w, v in zip(weights, variances)))
    tracker.remove()
    with pytest.raises(TypeError, match="bias_correction"):
        pb.EMATracker(model, 0.1, bias_correction="yes")


def test_ema_vs_precise_small_run():
    data = gaussian_classes(100, 100, features=6)
    result = pb.ema_vs_precise(data, seed=0, model=_mlp(), epochs=2, batch_size=50, lr=0.1,
                               sgd_momentum=0.9, ema_momenta=(0.01, 0.1),
                               precise_samples=100, precise_batch=50, progress=False)
    assert result.epochs == [0, 1, 2]
    assert set(result.accuracy) == {"EMA decay 0.99", "EMA decay 0.9", "precise BN"}
    assert all(len(v) == 3 for v in result.accuracy.values())
    assert result.roughness("precise BN") > 0  # a 2-epoch run on toy data does move
    with pytest.raises(ValueError, match="divide"):
        pb.ema_vs_precise(data, 0, _mlp(), epochs=1, batch_size=30, lr=0.1, sgd_momentum=0.9,
                          ema_momenta=(0.1,), precise_samples=100, precise_batch=50,
                          progress=False)


def test_precise_bn_matches_swa_utils_update_bn_without_dropout():
    from torch.optim.swa_utils import update_bn

    model = _mlp(seed=4).double()
    x = torch.randn(96, 6, generator=torch.Generator().manual_seed(5), dtype=torch.float64)
    ours = copy.deepcopy(model)
    pb.recompute_bn_stats(ours, x, batch_size=32)
    theirs = copy.deepcopy(model)
    update_bn([x[i:i + 32] for i in range(0, 96, 32)], theirs)
    torch.testing.assert_close(ours[1].running_mean, theirs[1].running_mean, rtol=1e-12, atol=0)
    torch.testing.assert_close(ours[1].running_var, theirs[1].running_var, rtol=1e-12, atol=0)


def test_precise_bn_keeps_dropout_off_where_update_bn_does_not():
    from torch.optim.swa_utils import update_bn

    torch.manual_seed(6)
    model = nn.Sequential(nn.Linear(6, 8), nn.Dropout(0.5), nn.Linear(8, 8, bias=False),
                          nn.BatchNorm1d(8)).double()
    x = torch.randn(96, 6, generator=torch.Generator().manual_seed(7), dtype=torch.float64)
    ours = copy.deepcopy(model)
    pb.recompute_bn_stats(ours, x, batch_size=32)
    with torch.no_grad():
        z = model[2](model[0](x))  # the BN input with dropout off
    torch.testing.assert_close(ours[3].running_mean, z.mean(0), rtol=1e-10, atol=1e-12)
    theirs = copy.deepcopy(model)
    update_bn([x[i:i + 32] for i in range(0, 96, 32)], theirs)  # the whole model in train mode
    assert (theirs[3].running_var - ours[3].running_var).abs().max() > 1e-3
