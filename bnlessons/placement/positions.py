"""BN before or after the nonlinearity, in an MLP and a small CNN.

``before``: linear -> BN -> nonlinearity (Ioffe & Szegedy); the linear layer
has no bias, since BN's mean subtraction would cancel it. ``after``:
linear -> nonlinearity -> BN (the layer keeps its bias). ``none``: no BN.
``nonlinearity_inputs`` collects what each nonlinearity sees, so that one can
measure how much of it is saturated (sigmoid) or inactive (ReLU).
"""
from __future__ import annotations

import torch
from torch import nn

from bnlessons._validate import check_module
from bnlessons.models import MLP, small_cnn
from bnlessons.probes import capture_in_eval, saturation
from bnlessons.reproducibility import seeded

POSITIONS = ("none", "before", "after")
def _check_position(position: str) -> None:
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")


def placed_mlp(position: str, activation: str, *, in_features: int, num_classes: int,
               width: int, depth: int, seed: int) -> MLP:
    """A ``models.MLP`` with BN in ``position``; He initialisation for ReLU, Glorot
    otherwise. Weights come from ``seed``; torch's global random state is left alone.
    The sizes and the seed have no defaults: the lesson states them."""
    _check_position(position)
    with seeded(seed):
        return MLP(in_features, num_classes, width=width, depth=depth, activation=activation,
                   norm=None if position == "none" else "bn",
                   norm_position="before" if position == "none" else position,
                   init="he" if activation == "relu" else "glorot")


def placed_cnn(position: str, activation: str, *, in_channels: int, num_classes: int,
               channels: tuple[int, int], seed: int) -> nn.Sequential:
    """``models.small_cnn`` with BN in ``position`` and the given nonlinearity: two 3x3
    convolutions (the second with stride 2), global average pooling and a linear head.
    Weights come from ``seed``; torch's global random state is left alone."""
    _check_position(position)
    with seeded(seed):
        return small_cnn(in_channels, num_classes, channels, norm=position != "none",
                         activation=activation,
                         norm_position="after" if position == "after" else "before")


def nonlinearity_inputs(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """What each nonlinearity (sigmoid, tanh or ReLU) of ``model`` sees on ``x``, in eval
    mode, in the order of the layers."""
    check_module(model)
    acts = {str(i): m for i, m in enumerate(model.modules())
            if isinstance(m, (nn.Sigmoid, nn.Tanh, nn.ReLU))}
    if not acts:
        raise ValueError("model has no sigmoid, tanh or ReLU layer")
    seen = capture_in_eval(model, x, acts, capture="input")
    return [seen[k] for k in acts]


def saturated_fraction(z: torch.Tensor) -> float:
    """The fraction of sigmoid inputs with |z| > ``probes.SATURATION_THRESHOLD`` (slope
    below a tenth of its peak): the first of ``probes.saturation``'s two numbers."""
    return saturation(z)[0]


def inactive_fraction(z: torch.Tensor) -> float:
    """The fraction of ReLU inputs that are <= 0 (no output, no gradient)."""
    return float((z <= 0).double().mean())
