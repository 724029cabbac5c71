"""One call that makes a lesson reproducible.

Printed numbers in the lessons are compared on every CI run, so every source
of randomness and of thread-dependent floating point order is fixed here.
"""
from __future__ import annotations

import random

import numpy as np
import torch

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
    "axes.prop_cycle": None,  # filled in below
}

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


def _apply_style() -> None:
    import matplotlib.pyplot as plt
    from cycler import cycler

    style = dict(STYLE)
    style["axes.prop_cycle"] = cycler(color=list(COLORS))
    plt.rcParams.update(style)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch and return a torch generator seeded alike."""
    if not isinstance(seed, int) or isinstance(seed, bool):
        raise TypeError(f"seed must be an int, got {type(seed).__name__}")
    if seed < 0:
        raise ValueError(f"seed must be non-negative, got {seed}")
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def setup(seed: int = 0, threads: int = 1) -> torch.Generator:
    """Make everything that follows reproducible; return a seeded generator.

    Seeds Python's, NumPy's and torch's global generators, runs torch on
    ``threads`` threads (one by default: a different thread count changes the
    order of floating-point sums, and so the last printed digit), asks torch
    for deterministic algorithms, and sets the course's matplotlib style.
    """
    if not isinstance(threads, int) or threads < 1:
        raise ValueError(f"threads must be a positive int, got {threads!r}")
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    _apply_style()
    return seed_everything(seed)
