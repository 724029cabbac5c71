"""Dropout before BN: the variance shift of Li et al. (2019).

Inverted dropout with keep probability ``p`` multiplies each value by
``mask / p`` with ``mask ~ Bernoulli(p)`` in training and does nothing at test
time. For an input of mean ``c`` and variance ``v`` it keeps the mean, but
in training the second moment is ``(c**2 + v) / p``, so

    Var_train / Var_test = ((c**2 + v) / p - c**2) / v.

A BN layer after it estimates its running variance in training mode, and at
test time sees inputs whose variance is smaller: a train/test inconsistency
that no amount of training removes. (Li et al. write the ratio the other way
up, Var_test / Var_train.)

Inside a network, BN sees a weighted sum ``y = sum_j w_j h_j b_j / p`` of
dropped-out units, with independent masks ``b_j``. Conditioning on ``h``,

    Var_train(y) = Var(w . h) + (1/p - 1) sum_j w_j**2 E[h_j**2],

so ``Var_train / Var_test = 1 + (1/p - 1) sum_j w_j**2 E[h_j**2] / Var(w . h)``
(``weighted_sum_variance_ratio``). With one unit this is the formula above;
units that are correlated and weighted so that they add up coherently make
``Var(w . h)`` large and the ratio close to 1.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from bnlessons._own_work import answers
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


@answers("check_dropout_variance_ratio")
def variance_ratio(c: float, v: float, p: float) -> float:
    """Var_train / Var_test of inverted dropout (keep probability ``p``) on an input of
    mean ``c`` and variance ``v``: ``((c**2 + v) / p - c**2) / v``."""
    c, v, p = check_number(c, "c"), check_positive(v, "v (a variance)"), _check_keep(p)
    return ((c * c + v) / p - c * c) / v


@answers("check_weighted_dropout_ratio")
def weighted_sum_variance_ratio(w: torch.Tensor, mean: torch.Tensor, cov: torch.Tensor,
                                p: float) -> torch.Tensor:
    """Var_train / Var_test of ``y = w . (h * b / p)``, with ``b_j ~ Bernoulli(p)``
    independent of each other and of ``h``, whose mean is ``mean`` (J,) and
    covariance ``cov`` (J, J):

        1 + (1/p - 1) * sum_j w_j**2 (mean_j**2 + cov_jj) / (w^T cov w).

    ``w`` is one weight vector (J,) or a layer's weights (K, J), one ratio per
    row. The result has ``w``'s dtype.
    """
    w, mean, cov = as_float_tensor(w, "w"), as_float_tensor(mean, "mean"), \
        as_float_tensor(cov, "cov")
    p = _check_keep(p)
    if mean.dim() != 1 or cov.shape != (len(mean), len(mean)):
        raise ValueError(f"mean must be (J,) and cov (J, J), got {tuple(mean.shape)} and "
                         f"{tuple(cov.shape)}")
    if w.dim() not in (1, 2) or w.shape[-1] != len(mean):
        raise ValueError(f"w must be (J,) or (K, J) with J = {len(mean)}, got {tuple(w.shape)}")
    rows = w.reshape(-1, len(mean)).to(cov.dtype)
    test = ((rows @ cov) * rows).sum(dim=1)
    if not (test > 0).all():
        raise ValueError("w . h has no variance for some row of w: the ratio is undefined")
    noise = (1 / p - 1) * (rows**2 @ (mean**2 + cov.diagonal()))
    ratio = 1 + noise / test
    return ratio.reshape(w.shape[:-1]).to(w.dtype)


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
