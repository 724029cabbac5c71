"""Figures that recur across chapters, in the course's one style.

Colours: index 0 (blue) is always the network without normalisation and
index 1 (vermillion) the network with batch normalization.
"""
from __future__ import annotations

from typing import Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from bnlessons._validate import check_int

# Colour-blind friendly cycle (Okabe & Ito); "no BN" is always the first colour
# and "BN" the second, so the two keep their colours across chapters.
COLORS: tuple[str, ...] = (
    "#0072B2",  # blue: no normalisation
    "#D55E00",  # vermillion: batch normalization
    "#009E73",  # green: a third variant
    "#CC79A7",  # purple
    "#E69F00",  # orange
    "#56B4E9",  # sky blue
    "#000000",
)

# One look for every figure in the course.
STYLE: dict[str, object] = {
    "figure.figsize": (6.4, 3.6),
    "figure.dpi": 100,
    "savefig.dpi": 100,
    "axes.grid": True,
    "grid.alpha": 0.3,
    "axes.spines.top": False,
    "axes.spines.right": False,
    "axes.titlesize": 11,
    "axes.labelsize": 10,
    "legend.fontsize": 9,
    "legend.frameon": False,
    "font.size": 10,
    "lines.linewidth": 1.6,
    "image.cmap": "viridis",
}


def apply_style() -> None:
    """Matplotlib's defaults (ignoring any matplotlibrc), then the course's style."""
    from cycler import cycler

    plt.rcdefaults()  # keeps the backend
    plt.rcParams.update(STYLE)
    plt.rcParams["axes.prop_cycle"] = cycler(color=list(COLORS))


def _np(values) -> np.ndarray:
    if isinstance(values, torch.Tensor):
        return values.detach().double().cpu().numpy()
    return np.asarray(values, dtype=float)


def moving_average(values: Sequence[float], window: int) -> np.ndarray:
    """Trailing mean of ``values`` over ``window`` points (fewer at the start).

    For per-step training losses, which are too noisy to read unsmoothed.
    Point ``i`` is the mean of ``values[max(0, i - window + 1) : i + 1]``, so
    the curve has one point per step and never looks ahead.
    """
    check_int(window, "window", 1)
    v = _np(values)
    if v.ndim != 1 or v.size == 0:
        raise ValueError(f"values must be a non-empty 1-D sequence, got shape {v.shape}")
    sums = np.cumsum(np.concatenate([[0.0], v]))
    idx = np.arange(1, v.size + 1)
    start = np.maximum(idx - window, 0)
    return (sums[idx] - sums[start]) / (idx - start)
