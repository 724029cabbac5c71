"""Dropout before BN: the variance shift of Li et al. (2019).

Inverted dropout with keep probability ``p`` multiplies each value by
``mask / p`` with ``mask ~ Bernoulli(p)`` in training and does nothing at test
time. For an input of mean ``c`` and variance ``v`` it keeps the mean, but
in training the second moment is ``(c**2 + v) / p``, so

    Var_train / Var_test = ((c**2 + v) / p - c**2) / v.

A BN layer after it estimates its running variance in training mode, and at
test time sees inputs whose variance is smaller: a train/test inconsistency
that no amount of training removes.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from bnlessons._validate import (
    as_float_tensor,
    check_fraction,
    check_int,
    check_number,
    check_positive,
)
from bnlessons.models import MLP, bn_layers
from bnlessons.probes import capture_in_eval
from bnlessons.reproducibility import seeded

PLACES = ("none", "every", "last")


def _check_keep(p: object) -> float:
    return check_fraction(p, "p (a keep probability)", zero=False)


def variance_ratio(c: float, v: float, p: float) -> float:
    """Var_train / Var_test of inverted dropout (keep probability ``p``) on an input of
    mean ``c`` and variance ``v``: ``((c**2 + v) / p - c**2) / v``."""
    c, v, p = check_number(c, "c"), check_positive(v, "v (a variance)"), _check_keep(p)
    return ((c * c + v) / p - c * c) / v


def inverted_dropout(x: torch.Tensor, p: float, generator: torch.Generator) -> torch.Tensor:
    """``x * mask / p`` with ``mask ~ Bernoulli(p)`` drawn from ``generator`` (training mode)."""
    x, p = as_float_tensor(x, "x"), _check_keep(p)
    mask = torch.rand(x.shape, generator=generator, dtype=x.dtype) < p
    return x * mask / p


def monte_carlo_variance_ratio(x: torch.Tensor, p: float, generator: torch.Generator) -> float:
    """The same ratio measured: variance of ``inverted_dropout(x)`` over that of ``x``."""
    x = as_float_tensor(x, "x")
    if x.numel() < 2:
        raise ValueError("x needs at least two values to have a variance")
    return float(inverted_dropout(x, p, generator).var() / x.var())


def dropout_mlp(place: str, *, in_features: int, num_classes: int, width: int, depth: int,
                p_drop: float, seed: int, norm: Optional[str] = "bn") -> MLP:
    """A ``models.MLP`` with BN before each ReLU and dropout (rate ``p_drop``) in ``place``:

    ``"every"``: after every hidden layer, so every BN but the first reads dropped
    inputs (the arrangement Li et al. warn about); ``"last"``: only after the
    last hidden layer, after the last BN; ``"none"``: no dropout. Weights come
    from ``seed`` (torch's global random state is left alone). The sizes, the
    rate and the seed have no defaults: the lesson states them.
    """
    if place not in PLACES:
        raise ValueError(f"place must be one of {PLACES}, got {place!r}")
    check_int(depth, "depth")
    p_drop = check_fraction(p_drop, "p_drop", one=False)
    with seeded(seed):
        model = MLP(in_features, num_classes, width=width, depth=depth, norm=norm,
                    dropout=p_drop if place == "every" else 0.0)
    if place == "last":
        model.blocks[-1].drop = nn.Dropout(p_drop)
    return model


def bn_variance_shift(model: nn.Module, x: torch.Tensor) -> list[float]:
    """Per BN layer of ``model`` (in order): median over units of
    running_var / the variance of the BN's input on ``x`` in eval mode.

    1 means the running statistics describe what the layer sees at test time;
    above 1, they were collected on inputs that varied more (dropout on).
    """
    layers = dict(bn_layers(model))
    if not layers:
        raise ValueError("model has no BN layer")
    seen = capture_in_eval(model, x, layers, capture="input")
    return [float((layer.running_var / seen[name].var(dim=0, unbiased=False)).median())
            for name, layer in layers.items()]
