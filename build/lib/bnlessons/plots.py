"""Figures that recur across chapters, in the course's one style.

Colours: index 0 (blue) is always the network without normalisation and
index 1 (vermillion) the network with batch normalization.
"""
from __future__ import annotations

from typing import Optional, Sequence

import matplotlib.pyplot as plt
import numpy as np
import torch

from bnlessons.train import History

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


def plot_accuracy(histories: dict[str, History], ax: Optional[plt.Axes] = None,
                  target: Optional[float] = None, title: str = "Test accuracy") -> plt.Axes:
    """Test accuracy against training step, one line per labelled run."""
    ax = ax or plt.gca()
    for i, (label, h) in enumerate(histories.items()):
        ax.plot(h.steps, h.test_acc, label=label, color=COLORS[i % len(COLORS)])
    if target is not None:
        ax.axhline(target, color="0.5", linestyle=":", linewidth=1)
    ax.set(xlabel="training step", ylabel="test accuracy", title=title)
    ax.legend()
    return ax


def plot_percentile_band(steps: Sequence[int], pcts, ax: Optional[plt.Axes] = None,
                         color: str = COLORS[0], label: str = "",
                         title: str = "") -> plt.Axes:
    """Median line with the band between the lowest and highest percentile rows.

    ``pcts`` has shape (len(steps), 3): for example the 15th, 50th and 85th
    percentiles of one unit's input at each step.
    """
    ax = ax or plt.gca()
    p = _np(pcts)
    if p.ndim != 2 or p.shape[0] != len(steps) or p.shape[1] < 2:
        raise ValueError(f"pcts must have shape (len(steps), k>=2), got {p.shape}")
    ax.fill_between(steps, p[:, 0], p[:, -1], color=color, alpha=0.25, linewidth=0)
    ax.plot(steps, p[:, p.shape[1] // 2], color=color, label=label)
    ax.set(xlabel="training step", title=title)
    return ax


def plot_histograms(samples: dict[str, object], ax: Optional[plt.Axes] = None,
                    bins: int = 60, title: str = "") -> plt.Axes:
    """Overlaid density histograms of flattened samples, one per label."""
    ax = ax or plt.gca()
    for i, (label, values) in enumerate(samples.items()):
        ax.hist(_np(values).ravel(), bins=bins, density=True, alpha=0.5, label=label,
                color=COLORS[i % len(COLORS)])
    ax.set(ylabel="density", title=title)
    ax.legend()
    return ax


def plot_per_layer(values: dict[str, Sequence[float]], ax: Optional[plt.Axes] = None,
                   logy: bool = False, xlabel: str = "layer", ylabel: str = "",
                   title: str = "") -> plt.Axes:
    """One line per labelled series over layers (or blocks) 1..L."""
    ax = ax or plt.gca()
    for i, (label, series) in enumerate(values.items()):
        v = _np(series)
        ax.plot(np.arange(1, len(v) + 1), v, label=label, color=COLORS[i % len(COLORS)])
    if logy:
        ax.set_yscale("log")
    ax.set(xlabel=xlabel, ylabel=ylabel, title=title)
    ax.legend()
    return ax
