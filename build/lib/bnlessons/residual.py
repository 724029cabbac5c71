"""Deep residual MLPs with and without normalisation, built and trained by name.

The variants compared in the residual chapter, all pre-activation residual
MLPs (linear stem, ``depth`` blocks, linear head) with He initialisation:

* ``"none"``: ``x + f(x)``, no normalisation, no branch scalar;
* ``"skipinit"``: ``x + alpha * f(x)`` with a learnable scalar alpha per
  block starting at ``alpha`` (0 by default; De & Smith 2020);
* ``"bn"``: BN inside every branch (BN -> ReLU -> Linear);
* ``"bn-zero-gamma"``: as ``"bn"``, with the last BN's gamma of each branch
  starting at zero, so every block starts as the identity;
* ``"fixup"``: ``fixup.FixupResidualMLP`` (Zhang et al. 2019).

``train_variant`` builds one from a seed and trains it with SGD and momentum
on a ``data.Dataset``; ``lr_sweep`` trains one at increasing learning rates;
``is_stable`` is the criterion the lessons use for a run that trained.
"""
from __future__ import annotations

import math
from typing import Optional, Sequence

import torch
from torch import nn

from bnlessons.data import Dataset
from bnlessons.fixup import FixupResidualMLP
from bnlessons.models import ResidualMLP
from bnlessons.progress import progress_bar
from bnlessons.train import History, train

VARIANTS = ("none", "skipinit", "bn", "bn-zero-gamma", "fixup")


def make_model(variant: str, depth: int, in_features: int = 784, num_classes: int = 10,
               width: int = 64, branch_layers: int = 1, alpha: float = 0.0,
               seed: int = 0) -> nn.Module:
    """A residual MLP of the named ``variant``, initialised from ``seed``.

    ``alpha`` is SkipInit's starting value (used by ``"skipinit"`` only; pass
    ``1 / math.sqrt(depth)`` for the paper's alternative). The global torch
    generator is reseeded with ``seed`` so the same call gives the same weights.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float)) or not math.isfinite(alpha):
        raise TypeError(f"alpha must be a finite number, got {alpha!r}")
    if isinstance(seed, bool) or not isinstance(seed, int) or seed < 0:
        raise ValueError(f"seed must be a non-negative int, got {seed!r}")
    torch.manual_seed(seed)
    if variant == "fixup":
        return FixupResidualMLP(in_features, num_classes, width, depth, max(branch_layers, 1))
    norm = "bn" if variant.startswith("bn") else None
    scale = float(alpha) if variant == "skipinit" else None
    return ResidualMLP(in_features, num_classes, width=width, depth=depth, norm=norm,
                       branch_layers=branch_layers, scale=scale, init="he",
                       zero_init_last_norm=(variant == "bn-zero-gamma"))


def train_variant(variant: str, data: Dataset, depth: int, lr: float, seed: int = 0,
                  steps: int = 200, batch_size: int = 64, momentum: float = 0.9,
                  width: int = 64, branch_layers: int = 1, alpha: float = 0.0,
                  eval_every: Optional[int] = None, progress: bool = False,
                  desc: Optional[str] = None) -> History:
    """Build ``variant`` from ``seed`` and train it with SGD (momentum) on ``data``.

    The same ``seed`` fixes the initial weights and the order of minibatches.
    Test accuracy is evaluated at step 0, every ``eval_every`` steps (default:
    only at the end) and at the end. Training stops at the first non-finite
    loss (``history.diverged_at``).
    """
    model = make_model(variant, depth, data.num_features, data.num_classes, width,
                       branch_layers, alpha, seed)
    return train(model, data, steps, lr, batch_size=batch_size, momentum=momentum, seed=seed,
                 eval_every=eval_every or max(steps, 1), progress=progress,
                 desc=desc or f"{variant} lr={lr:g}")


def lr_sweep(variant: str, data: Dataset, depth: int, lrs: Sequence[float], seed: int = 0,
             steps: int = 200, batch_size: int = 64, min_accuracy: float = 0.5,
             stop_at_failure: bool = True, progress: bool = False,
             **kwargs) -> dict[float, History]:
    """Train ``variant`` at each learning rate in ``lrs`` (in increasing order).

    Returns ``{lr: history}``. With ``stop_at_failure`` the sweep stops at the
    first rate that does not train (``is_stable`` with ``min_accuracy``): larger
    rates are then assumed to fail too, which saves most of the cost of a
    sweep. Other keyword arguments go to ``train_variant``.
    """
    if not lrs:
        raise ValueError("lrs is empty: give at least one learning rate")
    results: dict[float, History] = {}
    ordered = sorted(float(lr) for lr in lrs)
    with progress_bar(len(ordered), f"{variant} batch {batch_size}", enabled=progress) as bar:
        for lr in ordered:
            results[lr] = train_variant(variant, data, depth, lr, seed=seed, steps=steps,
                                        batch_size=batch_size, **kwargs)
            bar.update(1)
            if stop_at_failure and not is_stable(results[lr], min_accuracy):
                bar.update(len(ordered) - len(results))
                break
    return results


def is_stable(history: History, min_accuracy: float = 0.5) -> bool:
    """A run trained if its loss stayed finite and it ended at ``min_accuracy`` or better."""
    if not isinstance(history, History):
        raise TypeError(f"history must be a train.History, got {type(history).__name__}")
    if not 0.0 <= min_accuracy <= 1.0:
        raise ValueError(f"min_accuracy must lie in [0, 1], got {min_accuracy}")
    return (not history.diverged) and history.final_acc >= min_accuracy
