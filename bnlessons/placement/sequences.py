"""BN in a sequence model: what it leaks, and what padding does to it.

In a causal model the output at step t may depend on inputs at steps <= t of
the same sequence, and on nothing else. BN over (batch, time) computes its
statistics from every step of every sequence in the batch, so in training
mode each output depends on the future and on the other sequences. A
normalisation over the channels of one position (LayerNorm, RMSNorm) has no
such dependence. ``leakage`` measures both kinds by perturbation.
"""
from __future__ import annotations

from typing import Callable, Optional

import torch
import torch.nn.functional as F
from torch import nn

from bnlessons._validate import as_float_tensor, check_int, check_module
from bnlessons.reproducibility import seeded


class CausalConv1d(nn.Conv1d):
    """A 1-D convolution over time that sees only the present and the past:
    the input is padded with ``kernel_size - 1`` zeros on the left only."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)
        self.left = kernel_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, 0)))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each (sequence, step) of an (N, C, T) input."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.norm = nn.LayerNorm(check_int(channels, "channels"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


NORMS = ("bn", "ln", None)


def causal_model(in_channels: int = 4, channels: int = 16, out_channels: int = 3,
                 norm: Optional[str] = "bn", seed: int = 0,
                 make_norm: Optional[Callable[[int], nn.Module]] = None) -> nn.Sequential:
    """Causal conv (kernel 3) -> norm -> ReLU -> causal conv (kernel 3), on (N, C, T).

    ``norm``: ``"bn"`` (``nn.BatchNorm1d``: statistics over batch and time),
    ``"ln"`` (``ChannelLayerNorm``) or ``None``; ``make_norm(channels)``, if
    given, builds the norm instead. Weights come from ``seed``; torch's global
    random state is left alone. Float64, for exact leakage measurements.
    """
    if make_norm is None and norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    with seeded(seed):
        if make_norm is not None:
            layer = make_norm(channels)
        else:
            layer = {"bn": lambda: nn.BatchNorm1d(channels),
                     "ln": lambda: ChannelLayerNorm(channels),
                     None: nn.Identity}[norm]()
        model = nn.Sequential(CausalConv1d(in_channels, channels, 3, bias=norm is None), layer,
                              nn.ReLU(), CausalConv1d(channels, out_channels, 3))
    return model.double()


@torch.no_grad()
def leakage(model: nn.Module, x: torch.Tensor, step: int, size: float = 1.0,
            seed: int = 0) -> dict[str, float]:
    """How much outputs that should not depend on a perturbation change with it.

    * ``"future"``: perturb every input at steps >= ``step`` and measure the
      largest change of any output at steps < ``step`` (a causal model: 0);
    * ``"batch"``: perturb every sequence but the first and measure the
      largest change of the first sequence's outputs (independent: 0).

    The model runs in its current mode; BN in training mode updates its
    running statistics, so pass a copy if they matter. ``x`` is (N, C, T).
    """
    check_module(model)
    x = as_float_tensor(x, "x")
    if x.dim() != 3 or x.shape[0] < 2:
        raise ValueError(f"x must be (N, C, T) with N >= 2 sequences, got {tuple(x.shape)}")
    check_int(step, "step", 1)
    if step >= x.shape[2]:
        raise ValueError(f"step must be < T = {x.shape[2]}, got {step}")
    g = torch.Generator().manual_seed(seed)
    noise = size * torch.randn(x.shape, generator=g, dtype=x.dtype)
    base = model(x)
    future = x.clone()
    future[:, :, step:] += noise[:, :, step:]
    others = x.clone()
    others[1:] += noise[1:]
    return {"future": float((model(future)[:, :, :step] - base[:, :, :step]).abs().max()),
            "batch": float((model(others)[0] - base[0]).abs().max())}


def padded(x: torch.Tensor, lengths: list[int]) -> torch.Tensor:
    """``x`` (N, C, T) with the steps after each sequence's length set to zero (padding)."""
    x = as_float_tensor(x, "x")
    if len(lengths) != x.shape[0]:
        raise ValueError(f"need one length per sequence ({x.shape[0]}), got {len(lengths)}")
    out = x.clone()
    for i, n in enumerate(lengths):
        check_int(n, "length", 1)
        out[i, :, n:] = 0.0
    return out
