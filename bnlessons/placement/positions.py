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

from bnlessons._validate import check_module, check_number
from bnlessons.models import MLP, init_weights, small_cnn
from bnlessons.probes import capture_in_eval, saturation
from bnlessons.reproducibility import seeded

POSITIONS = ("none", "before", "after")
def _check_position(position: str) -> None:
    if position not in POSITIONS:
        raise ValueError(f"position must be one of {POSITIONS}, got {position!r}")


def init_rule(activation: str) -> str:
    """The initialisation every network of the lesson gets: He's for ReLU, Glorot's
    for the others (``models.init_weights`` names)."""
    return "he" if activation == "relu" else "glorot"


def placed_mlp(position: str, activation: str, *, in_features: int, num_classes: int,
               width: int, depth: int, seed: int) -> MLP:
    """A ``models.MLP`` with BN in ``position``, initialised by ``init_rule``. Weights
    come from ``seed``; torch's global random state is left alone. The sizes and the
    seed have no defaults: the lesson states them."""
    _check_position(position)
    with seeded(seed):
        return MLP(in_features, num_classes, width=width, depth=depth, activation=activation,
                   norm=None if position == "none" else "bn",
                   norm_position="before" if position == "none" else position,
                   init=init_rule(activation))


def placed_cnn(position: str, activation: str, *, in_channels: int, num_classes: int,
               channels: tuple[int, int], seed: int) -> nn.Sequential:
    """``models.small_cnn`` with BN in ``position`` and the given nonlinearity: two 3x3
    convolutions (the second with stride 2), global average pooling and a linear head.
    Initialised by ``init_rule``, like ``placed_mlp`` (PyTorch's default
    initialisation would leave the network without BN far smaller signals than
    the MLPs get). Weights come from ``seed``; torch's global random state is
    left alone."""
    _check_position(position)
    with seeded(seed):
        model = small_cnn(in_channels, num_classes, channels, norm=position != "none",
                          activation=activation,
                          norm_position="after" if position == "after" else "before")
        init_weights(model, init_rule(activation))
    return model


class CentredSigmoid(nn.Sigmoid):
    """``sigmoid(z) - 1/2``: the sigmoid's slope (at most 1/4), with outputs centred on
    zero. A subclass of ``nn.Sigmoid``, so ``nonlinearity_inputs`` finds it."""

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(z) - 0.5


def centre_sigmoids(model: nn.Module) -> int:
    """Replace every ``nn.Sigmoid`` of ``model`` (in place) by a ``CentredSigmoid``;
    returns how many were replaced."""
    check_module(model)
    count = 0
    for parent in list(model.modules()):
        for name, child in list(parent.named_children()):
            if type(child) is nn.Sigmoid:
                setattr(parent, name, CentredSigmoid())
                count += 1
    if not count:
        raise ValueError("model has no nn.Sigmoid layer to centre")
    return count


@torch.no_grad()
def scale_hidden_weights(model: MLP, factor: float) -> None:
    """Multiply the weights of every hidden layer of ``model`` (each ``blocks[i].linear``,
    not the head) by ``factor``, in place: an initialisation ``factor`` times larger."""
    if not isinstance(model, MLP):
        raise TypeError(f"model must be a models.MLP, got {type(model).__name__}")
    factor = check_number(factor, "factor")
    if not factor > 0:
        raise ValueError(f"factor must be > 0, got {factor}")
    for block in model.blocks:
        block.linear.weight.mul_(factor)


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
