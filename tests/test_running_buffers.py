"""running_stats.update_buffers: the one in-place update of a BN layer's buffers."""
from __future__ import annotations

import pytest
import torch
from torch import nn

from bnlessons import running_stats


@pytest.mark.parametrize("momentum", [0.1, 0.3, None])
def test_update_buffers_matches_pytorch_batchnorm(momentum):
    g = torch.Generator().manual_seed(4)
    torch_bn = nn.BatchNorm1d(5, momentum=momentum).double().train()
    ours = nn.BatchNorm1d(5, momentum=momentum).double()
    for _ in range(3):
        x = torch.randn(7, 5, generator=g, dtype=torch.float64) * 3 + 1
        torch_bn(x)
        m = x.shape[0]
        running_stats.update_buffers(ours, x.mean(0), x.var(0, unbiased=False) * m / (m - 1))
    assert int(ours.num_batches_tracked) == int(torch_bn.num_batches_tracked) == 3
    assert torch.allclose(ours.running_mean, torch_bn.running_mean, rtol=1e-12, atol=1e-14)
    assert torch.allclose(ours.running_var, torch_bn.running_var, rtol=1e-12, atol=1e-14)
