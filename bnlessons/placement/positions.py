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
from bnlessons.models import MLP, make_activation
from bnlessons.probes import capture_in_eval
from bnlessons.reproducibility import seeded

POSITIONS = ("none", "before", "after")
SATURATED = 4.0  # |z| beyond which the sigmoid's slope is below a tenth of its peak


def _check_position(position: str) -> None:
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")


def placed_mlp(position: str, activation: str, in_features: int = 784, num_classes: int = 10,
               width: int = 128, depth: int = 3, seed: int = 0) -> MLP:
    """A ``models.MLP`` with BN in ``position``; He initialisation for ReLU, Glorot
    otherwise. Weights come from ``seed``; torch's global random state is left alone."""
    _check_position(position)
    with seeded(seed):
        return MLP(in_features, num_classes, width=width, depth=depth, activation=activation,
                   norm=None if position == "none" else "bn",
                   norm_position="before" if position == "none" else position,
                   init="he" if activation == "relu" else "glorot")


def placed_cnn(position: str, activation: str, in_channels: int = 1, num_classes: int = 10,
               channels: tuple[int, int] = (16, 32), seed: int = 0) -> nn.Sequential:
    """Two 3x3 convolutions (the second with stride 2) with BN in ``position``, global
    average pooling and a linear head. Weights come from ``seed``."""
    _check_position(position)

    def block(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1, bias=position != "before")
        if position == "none":
            return [conv, make_activation(activation)]
        if position == "before":
            return [conv, nn.BatchNorm2d(c_out), make_activation(activation)]
        return [conv, make_activation(activation), nn.BatchNorm2d(c_out)]

    with seeded(seed):
        c1, c2 = channels
        return nn.Sequential(*block(in_channels, c1, 1), *block(c1, c2, 2),
                             nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, num_classes))


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
    """The fraction of sigmoid inputs with |z| > SATURATED (slope below a tenth of its peak)."""
    return float((z.abs() > SATURATED).double().mean())


def inactive_fraction(z: torch.Tensor) -> float:
    """The fraction of ReLU inputs that are <= 0 (no output, no gradient)."""
    return float((z <= 0).double().mean())
