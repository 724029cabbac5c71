"""Running-statistics conventions: numbers against nn.BatchNorm, and clear errors."""
import pytest
import torch
from torch import nn

from bnlessons import running_stats as rs


def _x(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 1


@pytest.mark.parametrize("momentum", [0.1, 0.5, None])
@pytest.mark.parametrize("shape", [(8, 3), (4, 3, 5, 5)])
def test_pytorch_update_matches_nn_batchnorm(momentum, shape):
    bn = (nn.BatchNorm1d if len(shape) == 2 else nn.BatchNorm2d)(3, momentum=momentum).double()
    mean, var, count = bn.running_mean.clone(), bn.running_var.clone(), 0
    for i in range(4):
        x = _x(shape, seed=i)
        bn(x)
        mean, var, count = rs.pytorch_update(mean, var, count, x, momentum)
    assert count == int(bn.num_batches_tracked) == 4
    torch.testing.assert_close(mean, bn.running_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(var, bn.running_var, rtol=0, atol=1e-12)


def test_pytorch_update_uses_unbiased_variance():
    x = _x((2, 1))
    _, var, _ = rs.pytorch_update(torch.zeros(1, dtype=torch.float64),
                                  torch.zeros(1, dtype=torch.float64), 0, x, momentum=1.0)
    assert torch.allclose(var, x.var(0, unbiased=True))
    assert not torch.allclose(var, x.var(0, unbiased=False))


def test_momentum_none_is_algorithm2():
    batches = [_x((6, 4), seed=s) for s in range(5)]
    mean, var, count = torch.zeros(4, dtype=torch.float64), torch.ones(4, dtype=torch.float64), 0
    for xb in batches:
        mean, var, count = rs.pytorch_update(mean, var, count, xb, None)
    pop_mean, pop_var = rs.algorithm2(batches)
    torch.testing.assert_close(mean, pop_mean, rtol=0, atol=1e-12)
    torch.testing.assert_close(var, pop_var, rtol=0, atol=1e-12)


def test_cs231n_is_pytorch_with_decay_and_biased_variance():
    x = _x((5, 3))
    rm, rv = torch.zeros(3, dtype=torch.float64), torch.zeros(3, dtype=torch.float64)
    mean, var = rs.cs231n_update(rm, rv, x, momentum=0.9)
    torch.testing.assert_close(mean, 0.1 * x.mean(0))
    torch.testing.assert_close(var, 0.1 * x.var(0, unbiased=False))
    ema_mean, ema_var = rs.ema_update(rm, rv, x, decay=0.9, unbiased_var=False)
    torch.testing.assert_close(ema_mean, mean)
    torch.testing.assert_close(ema_var, var)


def test_batch_variance_bias_for_m2_through_batch_moments():
    # rs.batch_moments takes the biased variance: on average (m-1)/m of the truth
    g = torch.Generator().manual_seed(0)
    batches = torch.randn(50_000, 2, 1, generator=g, dtype=torch.float64) * 3  # m = 2 each
    biased = torch.stack([rs.batch_moments(b)[1] for b in batches[:5000]]).mean() / 9
    assert abs(float(biased) - 0.5) < 0.03
    corrected = rs.unbiased(torch.tensor([float(biased)]), 2)
    assert abs(float(corrected) - 1.0) < 0.06


def test_algorithm2_recovers_population_variance():
    g = torch.Generator().manual_seed(1)
    data = torch.randn(40_000, 2, generator=g, dtype=torch.float64) * torch.tensor([1.0, 3.0])
    batches = list(data.split(4))
    _, var = rs.algorithm2(batches)
    torch.testing.assert_close(var, torch.tensor([1.0, 9.0], dtype=torch.float64), rtol=0.03,
                               atol=0)


def test_ema_weight_of_start():
    assert rs.ema_weight_of_start(0.9, 10) == pytest.approx(0.9 ** 10)
    with pytest.raises(ValueError, match="steps"):
        rs.ema_weight_of_start(0.9, -1)


def test_errors_name_the_argument():
    x = _x((4, 3))
    ok = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(ValueError, match="running_mean"):
        rs.pytorch_update(torch.zeros(2, dtype=torch.float64), ok, 0, x)
    with pytest.raises(TypeError, match="running_var"):
        rs.pytorch_update(ok, torch.zeros(3), 0, x)
    with pytest.raises(ValueError, match="momentum"):
        rs.pytorch_update(ok, ok, 0, x, momentum=1.5)
    with pytest.raises(ValueError, match="num_batches_tracked"):
        rs.pytorch_update(ok, ok, -1, x)
    with pytest.raises(TypeError, match="momentum"):
        rs.cs231n_update(ok, ok, x, momentum="0.9")
    with pytest.raises(ValueError, match="empty"):
        rs.algorithm2([])
    with pytest.raises(ValueError, match="same m"):
        rs.algorithm2([_x((4, 3)), _x((5, 3))])
    with pytest.raises(ValueError, match="m must be"):
        rs.unbiased(ok, 1)


@pytest.mark.parametrize("use_unbiased", [True, False])
def test_ema_standard_error_matches_a_simulation(use_unbiased):
    g = torch.Generator().manual_seed(0)
    features, m, decay, sd = 20000, 4, 0.9, 2.0
    mean, var = torch.zeros(features), torch.zeros(features)
    for k in range(1, 31):
        mean, var = rs.ema_update(mean, var, torch.randn(m, features, generator=g) * sd,
                                  decay, use_unbiased)
        if k in (1, 5, 30):
            predicted = rs.ema_variance_standard_error(decay, k, sd**2, m, use_unbiased)
            assert abs(var.std().item() / predicted - 1) < 0.05, (k, var.std(), predicted)
    averaged = rs.ema_variance_standard_error(decay, 30, sd**2, m, use_unbiased, features=100)
    assert averaged == pytest.approx(rs.ema_variance_standard_error(
        decay, 30, sd**2, m, use_unbiased) / 10)


def test_ema_standard_error_bad_input():
    with pytest.raises(ValueError, match="m must"):
        rs.ema_variance_standard_error(0.9, 3, 1.0, 1, True)
    with pytest.raises(ValueError, match="true_var"):
        rs.ema_variance_standard_error(0.9, 3, 0.0, 4, True)
    with pytest.raises(ValueError, match="features"):
        rs.ema_variance_standard_error(0.9, 3, 1.0, 4, True, features=0)
    assert rs.ema_variance_standard_error(1.0, 3, 1.0, 4, True) == 0.0
