"""Library code leaves the caller's random state alone.

A notebook seeds Python's, NumPy's and torch's global generators once, in
``bnlessons.setup``; every check and experiment helper must draw from its own
generator (or a seed it is given), so that calling one does not change what
the notebook's next random draw gives. Every public check is called here with
a correct solution, and the training helpers with small settings, and the
three global states are compared before and after.
"""
from __future__ import annotations

import random

import numpy as np
import pytest
import torch

from bnlessons import checks, data, lr_sweep, reference, running_stats
from bnlessons.bn_math import jacobian
from bnlessons.covariate_shift import ics, noise, shift
from bnlessons.inference import precise_bn, small_batch
from bnlessons.models import MLP, ResidualBlock
from bnlessons.placement.dropout import variance_ratio, weighted_sum_variance_ratio
from bnlessons.placement.sequences import ChannelLayerNorm
from bnlessons.train import evaluate

from conftest import by_hand, largest_stable_lr
from conftest import staged_backward as _staged
from conftest import variance_prediction as _variance


def _state():
    return (torch.get_rng_state().clone(), np.random.get_state()[1].copy(), random.getstate())


def _same(a, b) -> bool:
    return torch.equal(a[0], b[0]) and np.array_equal(a[1], b[1]) and a[2] == b[2]


class _SkipInitBlock(torch.nn.Module):
    def __init__(self, width):
        super().__init__()
        self.linear = torch.nn.Linear(width, width)
        self.alpha = torch.nn.Parameter(torch.zeros(()))

    def forward(self, x):
        return x + self.alpha * self.linear(torch.relu(x))


def _update_ratio(before, after):
    return {name: float((a.weight - b.weight).detach().norm() / b.weight.detach().norm())
            for (name, b), (_, a) in zip(before.named_modules(), after.named_modules())
            if isinstance(b, torch.nn.Linear)}


def _fold(linear, bn):
    from bnlessons.inference import deploy

    folded = by_hand(deploy.fold_linear_bn)(linear, bn)
    return folded.weight, folded.bias


def _drop_bias(linear, bn):
    import copy

    new_linear = torch.nn.Linear(linear.in_features, linear.out_features, bias=False,
                                 dtype=linear.weight.dtype)  # draws from the global generator
    new_bn = copy.deepcopy(bn)
    with torch.no_grad():
        new_linear.weight.copy_(linear.weight)
        new_bn.running_mean -= linear.bias
    return new_linear, new_bn


def _toy_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(256, 8, generator=g)
    y = (x[:, 0] > 0).long() + (x[:, 1] > 0).long()
    return data.Dataset("toy", x[:192], y[:192], x[192:], y[192:])


CALLS = {
    "check_forward": lambda: checks.check_forward(by_hand(reference.forward), verbose=False),
    "check_bn_jacobian": lambda: checks.check_bn_jacobian(by_hand(jacobian.bn_jacobian),
                                                          verbose=False),
    "check_update_ratio": lambda: checks.check_update_ratio(_update_ratio, verbose=False),
    "check_backward": lambda: checks.check_backward(reference.forward, by_hand(reference.backward),
                                                    verbose=False),
    "check_dx_properties": lambda: checks.check_dx_properties(
        reference.forward, by_hand(reference.backward), verbose=False),
    "check_scale_answers": lambda: checks.check_scale_answers(
        {"output": 1.0, "grad_input": 1.0, "grad_weight": 0.25, "effective_lr": 1 / 16},
        verbose=False),
    "check_noise_layer": lambda: checks.check_noise_layer(by_hand(noise.ShiftScaleNoise),
                                                          verbose=False),
    "check_saturation": lambda: checks.check_saturation(by_hand(shift.saturation), verbose=False),
    "check_percentile_probe": lambda: checks.check_percentile_probe(by_hand(ics.percentile_probe),
                                                                    verbose=False),
    "check_pytorch_update": lambda: checks.check_pytorch_update(
        by_hand(running_stats.pytorch_update), verbose=False),
    "check_cs231n_update": lambda: checks.check_cs231n_update(
        by_hand(running_stats.cs231n_update), verbose=False),
    "check_precise_bn": lambda: checks.check_precise_bn(by_hand(precise_bn.recompute_bn_stats),
                                                        verbose=False),
    "check_fold_linear": lambda: checks.check_fold_linear(_fold, verbose=False),
    "check_staged_backward": lambda: checks.check_staged_backward(reference.forward, _staged,
                                                                  verbose=False),
    "check_evaluate": lambda: checks.check_evaluate(
        by_hand(lambda m, x, y, b: evaluate(m, x, y, b)[1]), verbose=False),
    "check_variance_prediction": lambda: checks.check_variance_prediction(_variance,
                                                                          verbose=False),
    "check_fixup_exponent": lambda: checks.check_fixup_exponent(lambda k: 1 / (2 * k - 2),
                                                                verbose=False),
    "check_skipinit_block": lambda: checks.check_skipinit_block(_SkipInitBlock, verbose=False),
    "check_largest_stable_lr": lambda: checks.check_largest_stable_lr(largest_stable_lr,
                                                                      verbose=False),
    "check_dropout_variance_ratio": lambda: checks.check_dropout_variance_ratio(
        by_hand(variance_ratio), verbose=False),
    "check_weighted_dropout_ratio": lambda: checks.check_weighted_dropout_ratio(
        by_hand(weighted_sum_variance_ratio), verbose=False),
    "check_causal_norm": lambda: checks.check_causal_norm(by_hand(ChannelLayerNorm), verbose=False),
    "check_drop_bias": lambda: checks.check_drop_bias(_drop_bias, verbose=False),
    "check_preact_block": lambda: checks.check_preact_block(
        by_hand(lambda width: ResidualBlock(width, norm="bn", branch_layers=2)), verbose=False),
    "lr_sweep": lambda: lr_sweep.lr_sweep(lambda: MLP(8, 3, width=8, depth=1, norm="bn"),
                                          _toy_data(), (0.1, 0.3), 5, seed=3, threshold=0.2,
                                          batch_size=32),
    "train_mlp": lambda: small_batch.train_mlp(_toy_data(), seed=3, steps=4, norm="bn",
                                               batch_size=32, lr=0.1, momentum=0.9, width=8,
                                               depth=1, ghost_size=8),
}


@pytest.mark.parametrize("name", sorted(CALLS))
def test_library_call_leaves_the_global_random_state_alone(name):
    torch.manual_seed(123)
    np.random.seed(123)
    random.seed(123)
    before = _state()
    result = CALLS[name]()
    if name.startswith("check_"):
        assert result.passed, result.message
    assert _same(before, _state()), f"{name} changed the global random state"


def test_every_public_check_is_covered():
    public = {n for n in checks.__all__ if n.startswith("check_")}
    assert public <= set(CALLS), sorted(public - set(CALLS))
