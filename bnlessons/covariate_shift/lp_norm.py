"""Batch normalization with another measure of scale (Santurkar et al. 2018, section 3.3).

BN subtracts each unit's batch mean and divides by its batch standard
deviation, the l2 norm of the centred values averaged over the batch. The
l_p versions keep the centring and divide by another norm of the centred
values ``c = x - mean``:

* p = 1: the mean absolute deviation ``mean(|c|)``;
* p = 2: ``sqrt(mean(c^2))``, BN's own scale (without BN's eps inside the root);
* p = inf: the largest ``|c|`` in the batch.

Only p = 2 fixes the variance of what the next layer sees; for p = 1 and
p = inf the second moment is whatever the shape of the batch makes it, and it
moves as the layers below learn. Like BN, each is unchanged when the weights
feeding it are scaled. ``LpBatchNorm`` is the layer (with BN's learned scale
and shift and running statistics for eval mode); ``lp_mlp`` puts it where
``bnlessons.models.MLP`` puts BN.
"""
from __future__ import annotations

import math

import torch
from torch import nn

from bnlessons._validate import (
    check_fraction,
    check_int,
    check_nonnegative,
    check_number,
    check_tensor,
)
from bnlessons.models import MLP, InitSpec


def _check_p(p: object) -> float:
    """p >= 1, or math.inf (which ``check_number`` would refuse as not finite)."""
    if isinstance(p, float) and math.isinf(p) and p > 0:
        return p
    return check_number(p, "p", low=1)


def lp_scale(c: torch.Tensor, p: float) -> torch.Tensor:
    """The l_p scale of centred values ``c`` (N, C), per unit: ``mean(|c|^p)^(1/p)``,
    or ``max |c|`` for p = inf. Shape (C,)."""
    p = _check_p(p)
    if check_tensor(c, "c").dim() != 2:
        raise ValueError(f"c must have shape (N, C), got {tuple(c.shape)}")
    if math.isinf(p):
        return c.abs().amax(dim=0)
    return c.abs().pow(p).mean(dim=0).pow(1.0 / p)


class LpBatchNorm(nn.Module):
    """``gamma * (x - mean) / (lp_scale + eps) + beta`` over the batch, unit by unit.

    Input of shape (N, C). In training mode the batch mean and l_p scale are
    used and folded into running estimates with PyTorch's convention
    (``running = (1 - momentum) running + momentum batch``); in eval mode the
    running estimates are used. ``p = 2`` is BN with eps added to the
    standard deviation instead of the variance.
    """

    def __init__(self, num_features: int, p: float, momentum: float = 0.1,
                 eps: float = 1e-5) -> None:
        super().__init__()
        check_int(num_features, "num_features")
        self.p = _check_p(p)
        self.num_features = num_features
        self.momentum = check_fraction(momentum, "momentum", zero=False)
        self.eps = check_nonnegative(eps, "eps")
        self.weight = nn.Parameter(torch.ones(num_features))
        self.bias = nn.Parameter(torch.zeros(num_features))
        self.register_buffer("running_mean", torch.zeros(num_features))
        self.register_buffer("running_scale", torch.ones(num_features))

    def extra_repr(self) -> str:
        return f"{self.num_features}, p={self.p:g}, momentum={self.momentum}, eps={self.eps}"

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if check_tensor(x, "input").dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"input must have shape (N, {self.num_features}), got "
                             f"{tuple(x.shape)}")
        if self.training:
            if x.shape[0] < 2:
                raise ValueError("training mode needs a batch of at least 2 samples")
            mean = x.mean(dim=0)
            scale = lp_scale(x - mean, self.p)
            with torch.no_grad():
                self.running_mean.lerp_(mean.detach(), self.momentum)
                self.running_scale.lerp_(scale.detach(), self.momentum)
        else:
            mean, scale = self.running_mean, self.running_scale
        return self.weight * (x - mean) / (scale + self.eps) + self.bias


def lp_mlp(in_features: int, num_classes: int, *, width: int, depth: int, p: float,
           activation: str, init: InitSpec) -> MLP:
    """``bnlessons.models.MLP`` with ``LpBatchNorm(p)`` where its BN layers would be.

    The linear layers have no bias (the norm's beta takes that role), as with BN.
    """
    p = _check_p(p)
    model = MLP(in_features, num_classes, width=width, depth=depth, activation=activation,
                norm="bn", init=init)
    for block in model.blocks:
        block.norm = LpBatchNorm(width, p)
    return model
