"""Batch normalization written out by hand (Ioffe & Szegedy 2015, Algorithm 1).

The functional pair follows the ``forward(x, ...) -> (out, cache)`` /
``backward(dout, cache)`` pattern so each intermediate has a name. The module
``BatchNorm`` matches ``torch.nn.BatchNorm1d`` / ``BatchNorm2d`` (running
statistics, momentum, ``num_batches_tracked``, eval mode) but differentiates
through the hand-written backward formula, so training with it exercises the
formula the lessons derive.

Notation: statistics are taken over every dimension except the channel
dimension 1, so an (N, C, H, W) input has an effective batch of m = N*H*W.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional

import torch
from torch import nn

from bnlessons import running_stats
from bnlessons._own_work import answers
from bnlessons._validate import (
    check_bn_input,
    check_channel_param,
    check_eps,
    check_fraction,
    check_gradient_like,
    check_int,
    check_training_batch,
    per_channel,
    reduce_dims,
    values_per_channel,
)


@dataclass
class Cache:
    """What the backward pass needs from the forward pass, by name."""

    x: torch.Tensor
    mu: torch.Tensor  # batch mean, shape (C,)
    var: torch.Tensor  # biased batch variance, shape (C,)
    inv_std: torch.Tensor  # 1 / sqrt(var + eps), shape (C,)
    xhat: torch.Tensor  # normalised input, shape of x
    gamma: torch.Tensor
    eps: float


@answers("check_forward")
def forward(
    x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float = 1e-5,
    check_finite: bool = True,
) -> tuple[torch.Tensor, Cache]:
    """Training-mode batch normalization; returns ``(out, cache)``.

    Uses the biased batch variance, as Algorithm 1 and PyTorch do when normalising.
    ``check_finite=False`` lets NaN and inf through (see ``BatchNorm``).
    """
    x = check_bn_input(x, finite=check_finite)
    check_training_batch(x)
    channels = x.shape[1]
    gamma = check_channel_param(gamma, "gamma", channels, x)
    beta = check_channel_param(beta, "beta", channels, x)
    eps = check_eps(eps)
    dims = reduce_dims(x)
    mu = x.mean(dim=dims)
    centred = x - per_channel(mu, x)
    var = (centred * centred).mean(dim=dims)
    inv_std = 1.0 / torch.sqrt(var + eps)
    xhat = centred * per_channel(inv_std, x)
    out = per_channel(gamma, x) * xhat + per_channel(beta, x)
    return out, Cache(x=x, mu=mu, var=var, inv_std=inv_std, xhat=xhat, gamma=gamma, eps=eps)


def _check_dout(dout: object, cache: Cache) -> torch.Tensor:
    if not isinstance(cache, Cache):
        raise TypeError(f"cache must be the Cache returned by forward, got {type(cache).__name__}")
    return check_gradient_like(dout, cache.x, "dout")


def compact_backward(dout: torch.Tensor, xhat: torch.Tensor, inv_std: torch.Tensor,
                     gamma: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The compact formula on plain tensors, without input checks; returns
    ``(dx, dgamma, dbeta)``.

    ``backward`` checks its inputs and calls this; chapter 2's timing lesson
    hands it to ``torch.compile`` as it is. With g = dL/dxhat = gamma * dout
    and m values per channel,
    dx = inv_std / m * (m * g - sum(g) - xhat * sum(g * xhat)).
    """
    dims = reduce_dims(xhat)
    m = values_per_channel(xhat)
    dbeta = dout.sum(dim=dims)
    dgamma = (dout * xhat).sum(dim=dims)
    g = dout * per_channel(gamma, xhat)
    sum_g = per_channel(g.sum(dim=dims), xhat)
    sum_gx = per_channel((g * xhat).sum(dim=dims), xhat)
    dx = per_channel(inv_std, xhat) / m * (m * g - sum_g - xhat * sum_gx)
    return dx, dgamma, dbeta


@answers("check_backward", "check_staged_backward", "check_dx_properties")
def backward(dout: torch.Tensor, cache: Cache) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The compact backward pass; returns ``(dx, dgamma, dbeta)`` (see ``compact_backward``)."""
    dout = _check_dout(dout, cache)
    return compact_backward(dout, cache.xhat, cache.inv_std, cache.gamma)


@answers("check_backward", "check_staged_backward", "check_dx_properties")
def backward_staged(
    dout: torch.Tensor, cache: Cache
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The backward pass one node of the graph at a time (the paper's section 3).

    Same result as ``backward``; slower, but each line is one chain-rule step.
    """
    dout = _check_dout(dout, cache)
    x, mu, var, xhat, eps = cache.x, cache.mu, cache.var, cache.xhat, cache.eps
    dims = reduce_dims(x)
    m = values_per_channel(x)
    dbeta = dout.sum(dim=dims)
    dgamma = (dout * xhat).sum(dim=dims)
    dxhat = dout * per_channel(cache.gamma, x)
    centred = x - per_channel(mu, x)
    dvar = (dxhat * centred).sum(dim=dims) * -0.5 * (var + eps) ** -1.5
    dmu = (dxhat * -per_channel(cache.inv_std, x)).sum(dim=dims) + dvar * (
        -2.0 * centred.sum(dim=dims) / m
    )
    dx = (
        dxhat * per_channel(cache.inv_std, x)
        + per_channel(dvar, x) * 2.0 * centred / m
        + per_channel(dmu, x) / m
    )
    return dx, dgamma, dbeta


class BatchNormFunction(torch.autograd.Function):
    """Training-mode batch norm whose gradient is the hand-written ``backward``.

    The tensors the backward pass needs go through ``ctx.save_for_backward``,
    so autograd notices if one of them (the input, say) is modified in place
    between the forward and the backward pass, instead of silently computing
    a wrong gradient.
    """

    @staticmethod
    def forward(ctx, x, gamma, beta, eps):  # type: ignore[override]
        out, cache = forward(x, gamma, beta, eps, check_finite=False)
        ctx.save_for_backward(x, gamma, cache.mu, cache.var, cache.inv_std, cache.xhat)
        ctx.eps = eps
        return out

    @staticmethod
    def backward(ctx, dout):  # type: ignore[override]
        x, gamma, mu, var, inv_std, xhat = ctx.saved_tensors
        cache = Cache(x=x, mu=mu, var=var, inv_std=inv_std, xhat=xhat, gamma=gamma, eps=ctx.eps)
        dx, dgamma, dbeta = backward(dout.contiguous(), cache)
        return dx, dgamma, dbeta, None


class BatchNorm(nn.Module):
    """Batch normalization over dimension 1, with PyTorch's semantics.

    Matches ``nn.BatchNorm1d`` for (N, C) and (N, C, L) input and
    ``nn.BatchNorm2d`` for (N, C, H, W): ``momentum`` is the weight of the new
    batch (``None`` for a cumulative average), ``running_var`` is updated with
    the unbiased batch variance while normalisation uses the biased one, and
    ``num_batches_tracked`` counts updates. Parameters are named ``weight``
    (gamma) and ``bias`` (beta), so state dicts interchange with PyTorch's.
    """

    def __init__(
        self,
        num_features: int,
        eps: float = 1e-5,
        momentum: Optional[float] = 0.1,
        affine: bool = True,
        track_running_stats: bool = True,
        dtype: Optional[torch.dtype] = None,
    ) -> None:
        super().__init__()
        check_int(num_features, "num_features")
        if momentum is not None:
            check_fraction(momentum, "momentum")
        self.num_features = num_features
        self.eps = check_eps(eps)
        self.momentum = momentum
        self.affine = affine
        self.track_running_stats = track_running_stats
        factory = {"dtype": dtype or torch.get_default_dtype()}
        if affine:
            self.weight = nn.Parameter(torch.ones(num_features, **factory))
            self.bias = nn.Parameter(torch.zeros(num_features, **factory))
        else:
            self.register_parameter("weight", None)
            self.register_parameter("bias", None)
        if track_running_stats:
            self.register_buffer("running_mean", torch.zeros(num_features, **factory))
            self.register_buffer("running_var", torch.ones(num_features, **factory))
            self.register_buffer("num_batches_tracked", torch.tensor(0, dtype=torch.long))
        else:
            self.register_buffer("running_mean", None)
            self.register_buffer("running_var", None)
            self.register_buffer("num_batches_tracked", None)

    def extra_repr(self) -> str:
        return (
            f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, "
            f"affine={self.affine}, track_running_stats={self.track_running_stats}"
        )

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.zero_()
            self.running_var.fill_(1.0)
            self.num_batches_tracked.zero_()

    def _gamma_beta(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if self.affine:
            return self.weight, self.bias
        ones = torch.ones(self.num_features, dtype=x.dtype, device=x.device)
        return ones, torch.zeros_like(ones)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = check_bn_input(x, "input", finite=False)  # divergence is for train() to record
        if x.shape[1] != self.num_features:
            raise ValueError(
                f"input has {x.shape[1]} channels (dimension 1 of shape {tuple(x.shape)}) "
                f"but this BatchNorm was built for num_features={self.num_features}"
            )
        gamma, beta = self._gamma_beta(x)
        if gamma.dtype != x.dtype:
            raise TypeError(
                f"input has dtype {x.dtype} but the parameters are {gamma.dtype}; "
                "convert one of them (for example model.double())"
            )
        use_batch_stats = self.training or not self.track_running_stats
        if not use_batch_stats:
            mean = per_channel(self.running_mean, x)
            scale = per_channel(gamma / torch.sqrt(self.running_var + self.eps), x)
            return (x - mean) * scale + per_channel(beta, x)
        check_training_batch(x, "input")
        out = BatchNormFunction.apply(x, gamma, beta, self.eps)
        if self.training and self.track_running_stats:
            self._update_running_stats(x)
        return out

    @torch.no_grad()
    def _update_running_stats(self, x: torch.Tensor) -> None:
        """PyTorch's update (``running_stats.pytorch_update``), without its input checks,
        which the forward pass has done already (and which would reject NaN)."""
        dims = reduce_dims(x)
        mean, var = x.mean(dim=dims), x.var(dim=dims, unbiased=False)
        running_stats.update_buffers(self, mean,
                                     running_stats.unbiased(var, values_per_channel(x)))
