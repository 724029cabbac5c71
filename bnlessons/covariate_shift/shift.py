"""Covariate shift in two dimensions, and what a moving input does to a sigmoid unit.

* ``covariate_shift_data``: points whose input distribution p(x) can be moved
  (``shift``) and stretched (``scale``) while the labelling rule p(y | x)
  stays the same: y = 1 exactly when x2 lies above the curve x2 = sin(x1).
* ``fit_linear_classifier`` / ``error_rate``: a logistic regression fitted on
  one input distribution and scored on another, on the inputs themselves or
  on ``sine_features`` (with which a linear boundary can follow the true one),
  optionally with a weight per training point.
* ``importance_weights`` / ``effective_sample_size``: the density ratio
  p_new(x) / p_train(x) (raised to a power) that reweights training points
  towards a shifted distribution, and how many points the weighted sample is
  worth.
* ``saturation`` (from the core ``bnlessons.probes``) / ``gaussian_saturation``:
  how much of a sigmoid unit's input lies where the sigmoid is flat
  (|z| > threshold), and the mean slope sigmoid'(z) there, from samples or in
  closed form for a Gaussian input.
* ``plot_unit_input``: the figure of one sigmoid unit's input distribution.
"""
from __future__ import annotations

import functools
import math
from dataclasses import dataclass
from typing import Optional

import numpy as np
import torch

from bnlessons._validate import (
    as_float_tensor,
    check_int,
    check_nonnegative,
    check_number,
    check_positive,
    check_tensor,
)

# The sigmoid-saturation measure is core (chapter 4 uses it too); the lessons of
# chapter 1 reach it here.
from bnlessons.probes import SATURATION_THRESHOLD, sigmoid_slope
from bnlessons.probes import saturation as saturation

SOURCE_STD = (0.7, 1.0)  # standard deviation of x1 and x2 before any scaling


def true_boundary(x1: torch.Tensor) -> torch.Tensor:
    """The curve that separates the classes: x2 = sin(x1)."""
    return torch.sin(x1)


def label(x: torch.Tensor) -> torch.Tensor:
    """p(y | x): class 1 exactly when the point lies above ``true_boundary``."""
    x = as_float_tensor(x, "x")
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got {tuple(x.shape)}")
    return (x[:, 1] > true_boundary(x[:, 0])).long()


def covariate_shift_data(n: int, shift: float = 0.0, scale: float = 1.0,
                         generator: Optional[torch.Generator] = None
                         ) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` points (x, y): x1 ~ N(shift, (0.7 scale)^2), x2 ~ N(0, scale^2), y = label(x).

    Only p(x) depends on ``shift`` and ``scale``; the rule that turns x into y
    never changes, which is what makes this covariate shift.
    """
    check_int(n, "n")
    shift = check_number(shift, "shift")
    scale = check_positive(scale, "scale")
    noise = torch.randn(n, 2, generator=generator, dtype=torch.float64)
    x = noise * torch.tensor(SOURCE_STD, dtype=torch.float64) * scale
    x[:, 0] += shift
    return x, label(x)


@dataclass(frozen=True)
class LinearClassifier:
    """p(y = 1 | x) = sigmoid(x @ weight + bias), fitted by logistic regression."""

    weight: torch.Tensor  # (features,)
    bias: float

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The pre-activation z of the classifier's sigmoid unit."""
        return as_float_tensor(x, "x").double() @ self.weight + self.bias

    def predict(self, x: torch.Tensor) -> torch.Tensor:
        return (self.logits(x) > 0).long()


def sine_features(x: torch.Tensor) -> torch.Tensor:
    """(x1, x2) -> (x1, x2, sin x1): features in which the true boundary is linear.

    The boundary x2 = sin x1 is the plane x2 - sin x1 = 0 in these three
    features, so a linear classifier on them can represent it exactly (a
    correctly specified model), which it cannot on (x1, x2).
    """
    x = as_float_tensor(x, "x")
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got {tuple(x.shape)}")
    return torch.cat([x, torch.sin(x[:, :1])], dim=1)


def importance_weights(x: torch.Tensor, shift: float, power: float) -> torch.Tensor:
    """(p_new(x) / p_train(x)) ** power for points drawn with ``covariate_shift_data``.

    p_train has x1 ~ N(0, 0.7^2) and p_new has x1 ~ N(shift, 0.7^2), both with
    scale 1 and the same x2, so the ratio depends on x1 alone:
    exp((shift x1 - shift^2 / 2) / 0.7^2). ``power`` 1 reweights the training
    sample to the shifted distribution exactly (in expectation); 0 gives equal
    weights; in between trades bias for variance (Shimodaira 2000).
    """
    x = as_float_tensor(x, "x")
    if x.dim() != 2 or x.shape[1] != 2:
        raise ValueError(f"x must have shape (n, 2), got {tuple(x.shape)}")
    shift = check_number(shift, "shift")
    power = check_nonnegative(power, "power")
    log_ratio = (shift * x[:, 0].double() - 0.5 * shift ** 2) / SOURCE_STD[0] ** 2
    return torch.exp(power * log_ratio)


def effective_sample_size(weights: torch.Tensor) -> float:
    """(sum w)^2 / sum w^2: how many equally weighted points the weighted sample is worth."""
    weights = as_float_tensor(weights, "weights")
    if weights.dim() != 1 or weights.numel() == 0:
        raise ValueError("weights must be a non-empty 1-d tensor")
    if (weights < 0).any() or not weights.sum() > 0:
        raise ValueError("weights must be >= 0 with a positive sum")
    w = weights.double()
    return float(w.sum() ** 2 / (w ** 2).sum())


def fit_linear_classifier(x: torch.Tensor, y: torch.Tensor, c: float = 100.0,
                          sample_weight: Optional[torch.Tensor] = None) -> LinearClassifier:
    """Logistic regression (scikit-learn, L-BFGS, deterministic) with inverse penalty ``c``.

    ``x`` holds one row of features per point (the inputs, or ``sine_features``
    of them); ``sample_weight`` gives each point's weight in the loss.
    """
    from sklearn.linear_model import LogisticRegression

    x = as_float_tensor(x, "x")
    if check_tensor(y, "y").shape != (x.shape[0],):
        raise ValueError(f"y must have shape ({x.shape[0]},), one label per row of x, "
                         f"got {tuple(y.shape)}")
    weight = None
    if sample_weight is not None:
        sample_weight = as_float_tensor(sample_weight, "sample_weight")
        if sample_weight.shape != (x.shape[0],) or (sample_weight < 0).any():
            raise ValueError(f"sample_weight must hold {x.shape[0]} weights >= 0, one per "
                             f"row of x")
        weight = sample_weight.double().numpy()
    model = LogisticRegression(C=check_positive(c, "c"), max_iter=1000)
    model.fit(x.double().numpy(), y.numpy(), sample_weight=weight)
    return LinearClassifier(torch.tensor(model.coef_[0], dtype=torch.float64),
                            float(model.intercept_[0]))


def error_rate(classifier: LinearClassifier, x: torch.Tensor, y: torch.Tensor) -> float:
    """Fraction of points the classifier gets wrong."""
    return float((classifier.predict(x) != y).double().mean())


@functools.lru_cache(maxsize=8)
def _hermite(nodes: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Gauss-Hermite nodes and weights (float64), computed once per size."""
    check_int(nodes, "nodes", 2)
    t, w = np.polynomial.hermite.hermgauss(nodes)
    return torch.from_numpy(t), torch.from_numpy(w)


def gaussian_saturation(mean: float, std: float, threshold: float = SATURATION_THRESHOLD,
                        nodes: int = 101) -> tuple[float, float]:
    """``saturation`` in closed form for z ~ N(mean, std^2).

    The fraction is P(|z| > threshold) from the normal CDF; the mean slope
    E[sigmoid'(z)] is computed by Gauss-Hermite quadrature with ``nodes`` points.
    """
    mean = check_number(mean, "mean")
    std = check_positive(std, "std")
    threshold = check_positive(threshold, "threshold")

    def cdf(v: float) -> float:
        return 0.5 * math.erfc(-v / math.sqrt(2.0))

    fraction = cdf((-threshold - mean) / std) + 1.0 - cdf((threshold - mean) / std)
    t, w = _hermite(nodes)
    z = mean + math.sqrt(2.0) * std * t
    slope = float((w * sigmoid_slope(z)).sum()) / math.sqrt(math.pi)
    return fraction, slope


def plot_unit_input(mean: float, std: float, threshold: float = SATURATION_THRESHOLD,
                    ax=None, color: str = "#0072B2"):
    """Density of z ~ N(mean, std^2) under the sigmoid and its slope; saturated parts shaded.

    The title carries the saturated fraction and the mean slope from
    ``gaussian_saturation``. Returns the axes.
    """
    import matplotlib.pyplot as plt

    fraction, slope = gaussian_saturation(mean, std, threshold)
    ax = ax or plt.gca()
    z = torch.linspace(-12, 12, 801, dtype=torch.float64)
    density = torch.exp(-0.5 * ((z - mean) / std) ** 2) / (std * math.sqrt(2 * math.pi))
    ax.fill_between(z.numpy(), 0, (density / density.max()).numpy(), color=color, alpha=0.3,
                    linewidth=0, label="density of z (scaled)")
    ax.plot(z.numpy(), torch.sigmoid(z).numpy(), color="0.2", label="sigmoid(z)")
    ax.plot(z.numpy(), (4 * sigmoid_slope(z)).numpy(), color="0.2", linestyle="--",
            label="4 sigmoid'(z)")
    for side in (-1, 1):
        lo, hi = sorted((side * threshold, side * 12.0))
        ax.axvspan(lo, hi, color="0.85", zorder=0)
    ax.set(xlim=(-12, 12), ylim=(0, 1.05), xlabel="z",
           title=f"mean {mean:.1f}, std {std:.1f}: {100 * fraction:.0f}% saturated, "
                 f"mean slope {slope:.3f}")
    return ax


def unit_input_png(mean: float, std: float, threshold: float = SATURATION_THRESHOLD,
                   size: tuple[float, float] = (6.4, 3.2)) -> bytes:
    """``plot_unit_input`` rendered to PNG bytes, for an image widget.

    Uses matplotlib's object interface (no pyplot), so nothing is shown or
    kept open: the picture is only the returned bytes.
    """
    import io

    from matplotlib.figure import Figure

    fig = Figure(figsize=size, dpi=100)
    ax = fig.add_subplot()
    plot_unit_input(mean, std, threshold, ax=ax)
    ax.legend(loc="upper left", fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()
