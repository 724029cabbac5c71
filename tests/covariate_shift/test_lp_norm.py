"""bnlessons.covariate_shift.lp_norm: batch normalization with an l_p measure of scale."""
import math

import pytest
import torch
import torch.nn.functional as F

from bnlessons.bn_math import scale_invariance
from bnlessons.covariate_shift import lp_norm
from bnlessons.models import MLP
from bnlessons.reproducibility import seeded


def _x(seed=0, n=32, c=5):
    g = torch.Generator().manual_seed(seed)
    return 3.0 + 2.0 * torch.randn(n, c, generator=g, dtype=torch.float64)


def test_lp_scale_by_hand():
    c = torch.tensor([[1.0, -2.0], [-3.0, 2.0], [2.0, 0.0]], dtype=torch.float64)
    assert torch.allclose(lp_norm.lp_scale(c, 1), torch.tensor([2.0, 4 / 3], dtype=c.dtype))
    assert torch.allclose(lp_norm.lp_scale(c, 2), c.pow(2).mean(0).sqrt())
    assert torch.equal(lp_norm.lp_scale(c, math.inf), torch.tensor([3.0, 2.0], dtype=c.dtype))


def test_p2_is_batch_norm_up_to_where_eps_goes():
    x = _x()
    layer = lp_norm.LpBatchNorm(5, 2, eps=0.0).double()
    bn = torch.nn.BatchNorm1d(5, eps=1e-12).double()
    assert torch.allclose(layer(x), bn(x), atol=1e-10)
    assert torch.allclose(layer.running_mean, bn.running_mean)


@pytest.mark.parametrize("p", [1.0, 2.0, math.inf])
def test_training_output_is_centred_scaled_and_scale_invariant(p):
    x = _x(1)
    layer = lp_norm.LpBatchNorm(5, p, eps=0.0).double()
    out = layer(x)
    assert torch.allclose(out.mean(0), torch.zeros(5, dtype=x.dtype), atol=1e-12)
    assert torch.allclose(lp_norm.lp_scale(out, p), torch.ones(5, dtype=x.dtype))
    assert torch.allclose(layer(7.0 * x), out, atol=1e-12)  # scaling what feeds it: no change


def test_running_estimates_and_eval_mode():
    x = _x(2)
    layer = lp_norm.LpBatchNorm(5, 1, momentum=0.5).double()
    layer(x)
    centred = x - x.mean(0)
    assert torch.allclose(layer.running_mean, 0.5 * x.mean(0))
    assert torch.allclose(layer.running_scale, 0.5 + 0.5 * centred.abs().mean(0))
    layer.eval()
    before = layer.running_mean.clone()
    out = layer(x)
    assert torch.equal(layer.running_mean, before)
    assert torch.allclose(out, (x - layer.running_mean) / (layer.running_scale + layer.eps))


def test_lp_mlp_has_the_bn_networks_weights_and_orthogonal_row_gradients():
    with seeded(3):
        net = lp_norm.lp_mlp(12, 3, width=8, depth=3, p=math.inf, activation="relu", init="he")
    with seeded(3):
        bn = MLP(12, 3, width=8, depth=3, activation="relu", norm="bn", init="he")
    assert all(isinstance(b.norm, lp_norm.LpBatchNorm) for b in net.blocks)
    assert torch.equal(net.blocks[1].linear.weight, bn.blocks[1].linear.weight)
    x, y = torch.randn(20, 12), torch.randint(0, 3, (20,))
    F.cross_entropy(net(x), y).backward()
    for block in net.blocks:
        w = block.linear.weight
        assert scale_invariance.row_gradient_cosines(w, w.grad).abs().max() < 1e-3


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="p must be a finite number >= 1"):
        lp_norm.LpBatchNorm(4, 0.5)
    with pytest.raises(TypeError, match="p must be a finite number"):
        lp_norm.LpBatchNorm(4, "inf")
    with pytest.raises(ValueError, match="momentum"):
        lp_norm.LpBatchNorm(4, 1, momentum=0.0)
    with pytest.raises(ValueError, match=r"shape \(N, 4\)"):
        lp_norm.LpBatchNorm(4, 1)(torch.zeros(3, 5))
    with pytest.raises(ValueError, match="at least 2"):
        lp_norm.LpBatchNorm(4, 1)(torch.zeros(1, 4))
