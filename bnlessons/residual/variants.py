"""Deep residual MLPs with and without normalisation, built and trained by name.

The variants compared in the residual chapter, all pre-activation residual
MLPs (linear stem, ``depth`` blocks, ReLU, linear head) with He
initialisation. By default every variant has the same head, so the variants
differ only inside their residual branches:

* ``"none"``: ``x + f(x)``, no normalisation, no branch scalar;
* ``"skipinit"``: ``x + alpha * f(x)`` with a learnable scalar alpha per
  block starting at ``alpha`` (0 by default; De & Smith 2020);
* ``"bn"``: BN inside every branch (BN -> ReLU -> Linear);
* ``"bn-zero-gamma"``: as ``"bn"``, plus a BN after the branch's last Linear
  whose gamma starts at zero (Goyal et al. 2017), so every block starts as
  the identity while every branch weight still gets a gradient once gamma
  has moved;
* ``"bn-unit-gamma"``: the same layers as ``"bn-zero-gamma"`` (and the same
  weights from the same seed), but the added BN keeps gamma = 1: the matched
  control, which does not start as the identity;
* ``"fixup"``: ``fixup.FixupResidualMLP`` (Zhang et al. 2019).

``final_norm=True`` puts a BN between the last block and the head (the usual
pre-activation ResNet layout), for the ablation of that one difference;
``head_scale=c`` instead multiplies the head's input by the fixed number ``c``
(``FixedScale``), which changes its scale as that BN does at initialisation
but normalises nothing.
``fit_variant`` builds a variant from a seed and trains it with SGD and
momentum on a ``data.Dataset``, returning the trained network and its
history (``train.History.trained`` says whether a run trained, and
``lr_sweep.lr_sweep`` scans learning rates with ``make_model`` as the builder);
``branch_weight_change`` measures how far training moved each block's branch.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

from bnlessons._validate import (
    check_bool,
    check_fraction,
    check_int,
    check_module,
    check_number,
    check_positive,
)
from bnlessons.data import Dataset
from bnlessons.models import ResidualMLP
from bnlessons.reproducibility import seeded
from bnlessons.residual.fixup import FixupResidualMLP
from bnlessons.train import History, train

VARIANTS = ("none", "skipinit", "bn", "bn-zero-gamma", "bn-unit-gamma", "fixup")


class FixedScale(nn.Module):
    """Multiplies its input by a fixed number (no parameter, no statistics)."""

    def __init__(self, factor: float) -> None:
        super().__init__()
        self.factor = float(check_positive(factor, "factor"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.factor

    def extra_repr(self) -> str:
        return f"factor={self.factor:g}"


def _check_dropout(dropout: object) -> float:
    return check_fraction(dropout, "dropout", one=False)


def _build(variant: str, depth: int, in_features: int, num_classes: int, width: int,
           branch_layers: int, alpha: float, final_norm: bool, dropout: float,
           head_scale: Optional[float] = None) -> nn.Module:
    if variant == "fixup":
        model: nn.Module = FixupResidualMLP(in_features, num_classes, width, depth,
                                            max(branch_layers, 1))
    else:
        bn = variant.startswith("bn")
        scale = float(alpha) if variant == "skipinit" else None
        model = ResidualMLP(in_features, num_classes, width=width, depth=depth,
                            norm="bn" if bn else None, branch_layers=branch_layers,
                            scale=scale, init="he")
        # ResidualMLP puts a BN before the head of a BN network only; here the
        # head is the same for every variant unless final_norm asks for that BN.
        model.final_norm = nn.BatchNorm1d(width) if final_norm else nn.Identity()
        if head_scale is not None:
            model.final_norm = FixedScale(head_scale)
        if variant in ("bn-zero-gamma", "bn-unit-gamma"):
            for block in model.blocks:
                last = nn.BatchNorm1d(width)
                if variant == "bn-zero-gamma":
                    nn.init.zeros_(last.weight)
                block.branch.append(last)
    if dropout > 0:
        model.final_act = nn.Sequential(model.final_act, nn.Dropout(dropout))
    return model


def make_model(variant: str, *, depth: int, in_features: int, num_classes: int, width: int,
               seed: int, branch_layers: int = 1, alpha: float = 0.0, final_norm: bool = False,
               dropout: float = 0.0, head_scale: Optional[float] = None) -> nn.Module:
    """A residual MLP of the named ``variant``, initialised from ``seed``.

    ``alpha`` is SkipInit's starting value (used by ``"skipinit"`` only; pass
    ``1 / math.sqrt(depth)`` for the paper's alternative). ``final_norm`` puts
    a BN between the last block and the head (the usual pre-activation
    layout for the BN variants; for ``"none"`` and ``"skipinit"`` an ablation
    that gives them one normalisation layer). ``head_scale`` (a positive
    number, or None) multiplies the head's input by that fixed number instead,
    the ablation that changes only the scale the head reads.
    ``dropout`` > 0 drops features right before
    the head, as in De & Smith's regularised SkipInit. ``depth=0`` gives the
    shallow control: stem, ReLU and head, the same for every variant but
    ``"fixup"`` (which needs a block). The same call gives the same weights;
    the global random state is left as it was. The sizes and the seed have no
    defaults: a lesson states them.
    """
    if variant not in VARIANTS:
        raise ValueError(f"variant must be one of {VARIANTS}, got {variant!r}")
    check_number(alpha, "alpha")
    check_int(seed, "seed", 0)
    check_bool(final_norm, "final_norm")
    if final_norm and variant == "fixup":
        raise ValueError("final_norm is not available for 'fixup', which has no "
                         "normalisation by design")
    if head_scale is not None:
        check_positive(head_scale, "head_scale")
        if final_norm or variant == "fixup":
            raise ValueError("head_scale replaces the layer before the head: it cannot be "
                             "combined with final_norm=True or with 'fixup'")
    dropout = _check_dropout(dropout)
    with seeded(seed):
        return _build(variant, depth, in_features, num_classes, width, branch_layers,
                      float(alpha), final_norm, dropout, head_scale)


def fit_variant(variant: str, data: Dataset, *, depth: int, width: int, seed: int, lr: float,
                steps: int, batch_size: int, momentum: float, branch_layers: int = 1,
                alpha: float = 0.0, final_norm: bool = False, dropout: float = 0.0,
                head_scale: Optional[float] = None, eval_every: Optional[int] = None,
                progress: bool = False,
                desc: Optional[str] = None) -> tuple[nn.Module, History]:
    """Build ``variant`` from ``seed`` and train it with SGD (``momentum``) on ``data``;
    returns ``(trained network, history)``.

    The network is ``make_model`` with these arguments and ``data``'s sizes,
    so ``make_model`` with the same ``seed`` rebuilds it as it was before
    training, for a parameter-by-parameter comparison
    (``branch_weight_change``). The same ``seed`` fixes the initial weights
    and the order of minibatches. Test accuracy is evaluated at step 0,
    every ``eval_every`` steps (default: only at the end) and at the end;
    ``history.train_loss`` holds the loss of every step. Training stops at
    the first non-finite loss (``history.diverged_at``). Every setting of the
    experiment is an argument without a default: a lesson states them.
    """
    if not isinstance(data, Dataset):
        raise TypeError(f"data must be a data.Dataset, got {type(data).__name__}")
    model = make_model(variant, depth=depth, in_features=data.num_features,
                       num_classes=data.num_classes, width=width, seed=seed,
                       branch_layers=branch_layers, alpha=alpha, final_norm=final_norm,
                       dropout=dropout, head_scale=head_scale)
    history = train(model, data, steps, lr, batch_size=batch_size, momentum=momentum,
                    seed=seed, eval_every=eval_every or max(steps, 1), progress=progress,
                    desc=desc or f"{variant} lr={lr:g}")
    return model, history


def _branch_weights(block: nn.Module) -> torch.Tensor:
    mods = block.linears if hasattr(block, "linears") else block.branch.modules()
    weights = [m.weight.detach().flatten() for m in mods if isinstance(m, (nn.Linear, nn.Conv2d))]
    if not weights:
        raise ValueError(f"{type(block).__name__} has no Linear or Conv2d weights in its branch")
    return torch.cat(weights)


def branch_weight_change(initial: nn.Module, trained: nn.Module) -> torch.Tensor:
    """Per block, ``||W_trained - W_initial|| / ||W_initial||`` over the branch's weights.

    ``W`` stacks the weight matrices of every Linear/Conv layer in a block's
    branch (not its scalars, biases or BN parameters): a branch whose weights
    never received a gradient scores exactly 0. Both networks need ``.blocks``
    of the same design, as ``make_model`` builds them.
    """
    for name, model in (("initial", initial), ("trained", trained)):
        if not hasattr(check_module(model, name), "blocks"):
            raise TypeError(f"{name} must be a network with .blocks, got {type(model).__name__}")
    if len(initial.blocks) != len(trained.blocks):
        raise ValueError(f"the networks have {len(initial.blocks)} and {len(trained.blocks)} "
                         "blocks; compare a network with its own initial state")
    changes = []
    for i, (a, b) in enumerate(zip(initial.blocks, trained.blocks)):
        w0, w1 = _branch_weights(a), _branch_weights(b)
        if w0.shape != w1.shape:
            raise ValueError(f"block {i}: the branches have different shapes")
        norm0 = float(w0.double().norm())
        if norm0 == 0.0:
            raise ValueError(f"block {i}: the initial branch weights are all zero, so a "
                             "relative change is undefined")
        changes.append(float((w1.double() - w0.double()).norm()) / norm0)
    return torch.tensor(changes, dtype=torch.float64)
