"""The reference batch norm against PyTorch's, in float64."""
import pytest
import torch
from torch import nn

from bnlessons import reference
from bnlessons.reference import BatchNorm

from conftest import gaussian_classes

TOL = 1e-10


@pytest.fixture(autouse=True)
def float64_by_default():
    """Every tensor in this module is float64 (conftest's fixture restores the default)."""
    torch.set_default_dtype(torch.float64)

SHAPES = [(2, 1), (3, 7), (16, 64), (256, 5), (2, 3, 4, 4), (8, 16, 3, 5), (2, 64, 2, 2),
          (5, 4, 6)]


def torch_bn_for(shape, **kwargs):
    cls = nn.BatchNorm2d if len(shape) == 4 else nn.BatchNorm1d
    return cls(shape[1], dtype=torch.float64, **kwargs)


def random_inputs(shape, seed):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g) * 2.5 + 0.7
    gamma = torch.rand(shape[1], generator=g) + 0.5
    beta = torch.randn(shape[1], generator=g)
    dout = torch.randn(*shape, generator=g)
    return x, gamma, beta, dout


def max_diff(a, b):
    return (a - b).abs().max().item()


@pytest.mark.parametrize("shape", SHAPES)
def test_forward_and_backward_match_autograd_through_torch(shape):
    x, gamma, beta, dout = random_inputs(shape, seed=sum(shape))
    bn = torch_bn_for(shape)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    xt = x.clone().requires_grad_(True)
    out_torch = bn(xt)
    out_torch.backward(dout)

    out, cache = reference.forward(x, gamma, beta, bn.eps)
    assert max_diff(out, out_torch) < TOL
    for backward in (reference.backward, reference.backward_staged):
        dx, dgamma, dbeta = backward(dout, cache)
        assert max_diff(dx, xt.grad) < TOL
        assert max_diff(dgamma, bn.weight.grad) < TOL
        assert max_diff(dbeta, bn.bias.grad) < TOL


@pytest.mark.parametrize("n", [2, 3, 17, 64, 256])
@pytest.mark.parametrize("c", [1, 8, 64])
def test_forward_over_batch_and_channel_sizes(n, c):
    x, gamma, beta, _ = random_inputs((n, c), seed=n * 100 + c)
    out, _ = reference.forward(x, gamma, beta)
    bn = nn.BatchNorm1d(c, dtype=torch.float64)
    with torch.no_grad():
        bn.weight.copy_(gamma)
        bn.bias.copy_(beta)
    assert max_diff(out, bn(x)) < TOL


def test_gradients_are_not_trivially_zero():
    """Guard against a check that cannot fail: dx must be far from zero here."""
    x, gamma, beta, dout = random_inputs((16, 4), seed=3)
    _, cache = reference.forward(x, gamma, beta)
    dx, _, _ = reference.backward(dout, cache)
    assert dx.abs().max() > 1e-2


def test_wrong_backward_is_detected():
    x, gamma, beta, dout = random_inputs((16, 4), seed=4)
    _, cache = reference.forward(x, gamma, beta)
    dx, _, _ = reference.backward(dout, cache)
    naive = dout * gamma * cache.inv_std  # forgets the paths through mean and variance
    assert max_diff(dx, naive) > 1e-3


def test_gradcheck_of_autograd_function():
    for shape in [(6, 3), (3, 2, 3, 3)]:
        x, gamma, beta, _ = random_inputs(shape, seed=11)
        args = (x.requires_grad_(True), gamma.requires_grad_(True), beta.requires_grad_(True), 1e-5)
        assert torch.autograd.gradcheck(reference.BatchNormFunction.apply, args, eps=1e-6,
                                        atol=1e-8)


def test_gradcheck_second_function_call_is_independent():
    # The cache lives on ctx: two interleaved calls must not share it.
    x1, g1, b1, d1 = random_inputs((5, 3), seed=1)
    x2, g2, b2, d2 = random_inputs((5, 3), seed=2)
    x1.requires_grad_(True)
    x2.requires_grad_(True)
    out1 = reference.BatchNormFunction.apply(x1, g1, b1, 1e-5)
    out2 = reference.BatchNormFunction.apply(x2, g2, b2, 1e-5)
    (out1 * d1).sum().backward()
    (out2 * d2).sum().backward()
    _, c1 = reference.forward(x1.detach(), g1, b1)
    assert max_diff(x1.grad, reference.backward(d1, c1)[0]) < TOL


@pytest.mark.parametrize("shape", [(32, 6), (8, 4, 3, 3), (10, 3, 7)])
@pytest.mark.parametrize("momentum", [0.1, None, 0.5])
@pytest.mark.parametrize("affine", [True, False])
def test_module_matches_torch_over_training_and_eval(shape, momentum, affine):
    ours = BatchNorm(shape[1], momentum=momentum, affine=affine, dtype=torch.float64)
    theirs = torch_bn_for(shape, momentum=momentum, affine=affine)
    opt_ours = torch.optim.SGD(ours.parameters(), lr=0.1) if affine else None
    opt_theirs = torch.optim.SGD(theirs.parameters(), lr=0.1) if affine else None
    g = torch.Generator().manual_seed(0)
    for step in range(20):
        x = torch.randn(*shape, generator=g) * (1 + step / 10) + step / 5
        dout = torch.randn(*shape, generator=g)
        xa, xb = x.clone().requires_grad_(True), x.clone().requires_grad_(True)
        ya, yb = ours(xa), theirs(xb)
        assert max_diff(ya, yb) < TOL
        ya.backward(dout)
        yb.backward(dout)
        assert max_diff(xa.grad, xb.grad) < TOL
        if affine:
            assert max_diff(ours.weight.grad, theirs.weight.grad) < TOL
            opt_ours.step()
            opt_theirs.step()
            opt_ours.zero_grad()
            opt_theirs.zero_grad()
    assert max_diff(ours.running_mean, theirs.running_mean) < TOL
    assert max_diff(ours.running_var, theirs.running_var) < TOL
    assert int(ours.num_batches_tracked) == int(theirs.num_batches_tracked) == 20
    ours.eval()
    theirs.eval()
    x = torch.randn(*shape, generator=g)
    assert max_diff(ours(x), theirs(x)) < TOL
    single = x[:1]  # a batch of one is fine in eval mode
    assert max_diff(ours(single), theirs(single)) < TOL


def test_running_var_is_unbiased_and_momentum_none_is_cumulative():
    bn = BatchNorm(3, momentum=None, dtype=torch.float64)
    g = torch.Generator().manual_seed(5)
    batches = [torch.randn(4, 3, generator=g) for _ in range(6)]
    for x in batches:
        bn(x)
    means = torch.stack([x.mean(0) for x in batches])
    unbiased = torch.stack([x.var(0, unbiased=True) for x in batches])
    assert max_diff(bn.running_mean, means.mean(0)) < TOL
    assert max_diff(bn.running_var, unbiased.mean(0)) < TOL


def test_track_running_stats_false_uses_batch_stats_in_eval():
    ours = BatchNorm(4, track_running_stats=False, dtype=torch.float64)
    theirs = nn.BatchNorm1d(4, track_running_stats=False, dtype=torch.float64)
    ours.eval()
    theirs.eval()
    x = torch.randn(9, 4, generator=torch.Generator().manual_seed(2))
    assert max_diff(ours(x), theirs(x)) < TOL
    assert ours.running_mean is None and ours.num_batches_tracked is None


def test_state_dict_interchanges_with_torch():
    theirs = nn.BatchNorm1d(5, dtype=torch.float64)
    theirs(torch.randn(8, 5))
    ours = BatchNorm(5, dtype=torch.float64)
    ours.load_state_dict(theirs.state_dict())
    ours.eval()
    theirs.eval()
    x = torch.randn(3, 5)
    assert max_diff(ours(x), theirs(x)) < TOL


def test_float32_training_matches_torch_to_float32_precision():
    ours, theirs = BatchNorm(8, dtype=torch.float32), nn.BatchNorm1d(8, dtype=torch.float32)
    x = torch.randn(32, 8, dtype=torch.float32)
    assert (ours(x) - theirs(x)).abs().max().item() < 1e-5


def test_batchnorm_function_detects_in_place_changes_of_saved_tensors():
    x = torch.randn(8, 3, dtype=torch.float64, requires_grad=True)
    gamma = torch.ones(3, dtype=torch.float64, requires_grad=True)
    beta = torch.zeros(3, dtype=torch.float64, requires_grad=True)
    h = x * 1.0  # a non-leaf, so that it can be modified in place
    out = reference.BatchNormFunction.apply(h, gamma, beta, 1e-5)
    h.mul_(2.0)  # changes the input after the forward pass
    with pytest.raises(RuntimeError, match="modified by an inplace operation"):
        out.sum().backward()


def test_a_diverging_network_with_the_reference_bn_is_recorded_not_crashed():
    from bnlessons import models
    from bnlessons.train import train

    toy = gaussian_classes(192, 64, features=8)
    torch.manual_seed(0)
    model = models.MLP(8, 2, width=16, depth=3, norm="reference", init=1.0)
    history = train(model, toy, steps=50, lr=1e30, batch_size=32, progress=False)
    assert history.diverged, history.train_loss[-3:]
    with pytest.raises(ValueError, match="NaN"):  # the functional forward still says so
        reference.forward(torch.full((4, 2), float("nan")), torch.ones(2), torch.zeros(2))
