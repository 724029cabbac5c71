"""Signal propagation through a stack of residual blocks at initialisation.

A residual block computes ``x_l = x_{l-1} + alpha * f_l(x_{l-1})``. How the
variance of the skip path ``x_l`` and of the branch ``alpha * f_l`` grow with
``l`` decides whether a deep stack starts near the identity (De & Smith 2020)
and is what Brock et al. (2021) call a signal propagation plot.

* ``residual_stack``: pre-activation blocks of one of four branch designs,
  initialised so that each branch preserves the variance of what it reads.
* ``signal_propagation``: one forward pass of random inputs through the
  blocks (in float64), measuring per block the channel variance and squared
  channel mean of skip path and branch, how much the block changes its input
  and the cosine between its input and output.
* ``block_gradient_norms``: per block, the gradient norm of the branch
  weights and of the block's input, for a classification loss.
* ``fit_line``: least-squares line with R^2, for slopes on those plots.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Optional, Sequence, Union

import torch
import torch.nn.functional as F
from torch import nn

from bnlessons._validate import (
    as_float_tensor,
    check_int,
    check_number,
    check_tensor,
    reduce_dims,
)
from bnlessons.models import ResidualBlock

DESIGNS = ("linear", "bn-linear", "bn-relu-linear", "relu-linear")
"""Branch designs of ``residual_stack``:

* ``linear``: ``f(x) = W x``, no normalisation;
* ``bn-linear``: ``f(x) = W BN(x)``;
* ``bn-relu-linear``: ``f(x) = W ReLU(BN(x))`` (a pre-activation block);
* ``relu-linear``: ``f(x) = W ReLU(x)``, no normalisation.

Linear designs draw ``W`` with standard deviation ``1/sqrt(width)`` (a
variance-preserving map), ReLU designs with He's ``sqrt(2/width)``.
"""


def residual_stack(design: str, width: int, depth: int, scale: Optional[float] = None,
                   generator: Optional[torch.Generator] = None,
                   dtype: torch.dtype = torch.float64) -> nn.ModuleList:
    """``depth`` pre-activation residual blocks of one branch ``design``.

    ``scale`` is the branch multiplier alpha (``None``: no multiplier, the
    same as 1). Weights are drawn from ``generator`` only, so a stack is
    reproducible on its own and the global random state is left alone;
    biases are absent (BN designs) or zero.
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    check_int(width, "width", 1)
    check_int(depth, "depth", 1)
    if scale is not None:
        check_number(scale, "scale")
    norm = "bn" if design.startswith("bn") else None
    activation = "relu" if "relu" in design else "linear"
    std = math.sqrt(2.0 / width) if activation == "relu" else math.sqrt(1.0 / width)
    # Built on the meta device: no memory, and no default initialisation drawn
    # from the global generator (it would be overwritten anyway, and at width
    # 256 and depth 100 it costs more than the forward pass).
    with torch.device("meta"):
        blocks = nn.ModuleList(
            ResidualBlock(width, norm=norm, activation=activation, style="pre", scale=scale)
            for _ in range(depth)
        )
    blocks.to_empty(device="cpu")
    blocks.to(dtype)
    with torch.no_grad():
        for m in blocks.modules():
            if isinstance(m, nn.Linear):
                # Drawn in float32, which is as random for an initialisation and
                # several times cheaper than float64 draws, then stored in dtype.
                w = torch.randn(m.weight.shape, generator=generator, dtype=torch.float32)
                m.weight.copy_(w.to(dtype) * std)
                if m.bias is not None:
                    m.bias.zero_()
            elif isinstance(m, nn.modules.batchnorm._BatchNorm):
                m.reset_parameters()  # gamma 1, beta 0, fresh running statistics
            elif isinstance(m, ResidualBlock) and m.scale is not None:
                m.scale.fill_(float(scale))
    return blocks


def _blocks_of(blocks: object) -> list[ResidualBlock]:
    if isinstance(blocks, nn.Module) and hasattr(blocks, "blocks"):
        blocks = blocks.blocks
    if not isinstance(blocks, (nn.ModuleList, list, tuple)) or len(blocks) == 0:
        raise TypeError("blocks must be a non-empty list or nn.ModuleList of ResidualBlock "
                        "(or a model with a .blocks attribute)")
    for i, b in enumerate(blocks):
        if not isinstance(b, ResidualBlock):
            raise TypeError(f"blocks[{i}] must be a ResidualBlock, got {type(b).__name__}")
        if b.style != "pre":
            raise ValueError(f"blocks[{i}] is a post-activation block; signal propagation is "
                             "measured on pre-activation blocks x + alpha * f(x)")
    return list(blocks)


def _channel_stats(x: torch.Tensor) -> tuple[float, float]:
    """Average over channels of the batch variance, and of the squared batch mean."""
    dims = reduce_dims(x)
    var = x.var(dim=dims, unbiased=False).mean()
    mean_sq = (x.mean(dim=dims) ** 2).mean()
    return float(var), float(mean_sq)


@dataclass(frozen=True)
class SignalStats:
    """Per-block statistics of one forward pass; block ``l`` maps x_{l-1} to x_l.

    ``residual_*`` have length depth + 1 (index 0 is the input x_0);
    ``branch_*``, ``relative_change`` and ``cosine`` have length depth.
    Variances are per channel over the batch, averaged over channels;
    ``*_mean_sq`` are squared per-channel means, averaged over channels.
    """

    residual_var: torch.Tensor
    residual_mean_sq: torch.Tensor
    branch_var: torch.Tensor
    branch_mean_sq: torch.Tensor
    relative_change: torch.Tensor  # ||x_l - x_{l-1}|| / ||x_{l-1}||
    cosine: torch.Tensor  # cosine between x_{l-1} and x_l, flattened over the batch

    @property
    def depth(self) -> int:
        return len(self.branch_var)

    @property
    def branch_fraction(self) -> torch.Tensor:
        """Var(branch of block l) / Var(x_l): the share of the signal the branch adds."""
        return self.branch_var / self.residual_var[1:]


@torch.no_grad()
def signal_propagation(blocks: Union[nn.ModuleList, Sequence[nn.Module], nn.Module],
                       x: torch.Tensor) -> SignalStats:
    """Push ``x`` through pre-activation residual blocks and measure every block.

    The blocks run in their current mode (train mode: BN uses the batch's own
    statistics, as at the start of training). Pass float64 blocks and inputs
    when the variance may grow over many orders of magnitude.
    """
    blocks = _blocks_of(blocks)
    x = as_float_tensor(x, "x")
    if x.dim() < 2 or x.shape[0] < 2:
        raise ValueError(f"x must be a batch (N >= 2, C, ...), got shape {tuple(x.shape)}")
    param = next(blocks[0].parameters(), None)
    if param is not None and param.dtype != x.dtype:
        raise TypeError(f"x has dtype {x.dtype} but the blocks have dtype {param.dtype}; "
                        "convert one of them")
    r_var, r_msq = [], []
    b_var, b_msq, change, cosine = [], [], [], []
    v, m = _channel_stats(x)
    r_var.append(v), r_msq.append(m)
    for block in blocks:
        f = block.branch(x)
        if block.scale is not None:
            f = block.scale * f
        x_next = x + f
        v, m = _channel_stats(f)
        b_var.append(v), b_msq.append(m)
        v, m = _channel_stats(x_next)
        r_var.append(v), r_msq.append(m)
        change.append(float(f.norm() / x.norm()))
        cosine.append(float(F.cosine_similarity(x.flatten(), x_next.flatten(), dim=0)))
        x = x_next
    t = lambda values: torch.tensor(values, dtype=torch.float64)  # noqa: E731
    return SignalStats(t(r_var), t(r_msq), t(b_var), t(b_msq), t(change), t(cosine))


def block_gradient_norms(model: nn.Module, x: torch.Tensor,
                         y: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per residual block, gradient norms of the mean cross-entropy on (x, y).

    Returns ``{"weight": ..., "input": ...}``, each of length depth: the norm
    of the gradient with respect to the weights of block l's branch (all its
    Linear/Conv weights together; the SkipInit scalar is not included), and
    with respect to block l's input x_{l-1} (the signal flowing backwards).
    The model needs ``.blocks`` and is left with its gradients zeroed.
    """
    blocks = _blocks_of(model)
    x = as_float_tensor(x, "x")
    if check_tensor(y, "y").dtype != torch.int64:
        raise TypeError(f"y must be an int64 tensor of class labels, got dtype {y.dtype}")
    if y.shape != x.shape[:1]:
        raise ValueError(f"y must hold one class label per row of x ({x.shape[0]}), "
                         f"got shape {tuple(y.shape)}")
    inputs: list[torch.Tensor] = []

    def keep_input(module, args):
        args[0].retain_grad()
        inputs.append(args[0])

    handles = [b.register_forward_pre_hook(keep_input) for b in blocks]
    try:
        model.zero_grad(set_to_none=True)
        loss = F.cross_entropy(model(x), y)
        loss.backward()
    finally:
        for h in handles:
            h.remove()
    weight_norms = []
    for b in blocks:
        grads = [m.weight.grad.flatten() for m in b.branch.modules()
                 if isinstance(m, (nn.Linear, nn.Conv2d))]
        weight_norms.append(float(torch.cat(grads).norm()))
    input_norms = [float(t.grad.norm()) for t in inputs]
    model.zero_grad(set_to_none=True)
    return {"weight": torch.tensor(weight_norms, dtype=torch.float64),
            "input": torch.tensor(input_norms, dtype=torch.float64)}


@dataclass(frozen=True)
class LineFit:
    """``y ~ slope * x + intercept`` by least squares, with its R^2."""

    slope: float
    intercept: float
    r2: float


def fit_line(y: object, x: object = None) -> LineFit:
    """Least-squares line through points (x, y); ``x`` defaults to 0, 1, 2, ..."""
    y_t = torch.as_tensor(y, dtype=torch.float64).flatten()
    if y_t.numel() < 2:
        raise ValueError(f"fit_line needs at least two points, got {y_t.numel()}")
    if not torch.isfinite(y_t).all():
        raise ValueError("y contains NaN or inf")
    x_t = (torch.arange(len(y_t), dtype=torch.float64) if x is None
           else torch.as_tensor(x, dtype=torch.float64).flatten())
    if x_t.shape != y_t.shape:
        raise ValueError(f"x and y must have the same length, got {len(x_t)} and {len(y_t)}")
    xc, yc = x_t - x_t.mean(), y_t - y_t.mean()
    sxx = float((xc * xc).sum())
    if sxx == 0.0:
        raise ValueError("x must not be constant")
    slope = float((xc * yc).sum()) / sxx
    intercept = float(y_t.mean()) - slope * float(x_t.mean())
    resid = y_t - (slope * x_t + intercept)
    ss_tot = float((yc * yc).sum())
    r2 = 1.0 - float((resid * resid).sum()) / ss_tot if ss_tot > 0 else 1.0
    return LineFit(slope, intercept, r2)
