"""Internal covariate shift: watching it, and measuring it.

* ``percentile_probe``: percentiles, over a fixed probe batch, of the input
  of one module (say the sigmoid of the last hidden layer), unit by unit.
  ``percentile_recorder`` wraps it for ``bnlessons.train.train(record=...)``,
  which is how Ioffe & Szegedy's Figure 1 (b, c) is redrawn.
* ``spread_growth``: how much the 15th-85th percentile spread of each unit
  grew between two recorded steps.
* ``internal_covariate_shift``: Santurkar et al.'s Definition 2.1, the change
  in layer i's gradient caused by updating layers 1..i-1 first.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnlessons._validate import check_module, check_positive, check_tensor
from bnlessons.probes import capture_in_eval, percentiles
from bnlessons.train import Recorder

QUANTILES = (15, 50, 85)


def _check_module_in(model: nn.Module, module: nn.Module) -> None:
    check_module(model, "model")
    check_module(module, "module")
    if not any(m is module for m in model.modules()):
        raise ValueError("module is not part of model: pass a submodule such as "
                         "model.blocks[-1].act")


@torch.no_grad()
def percentile_probe(model: nn.Module, x: torch.Tensor, module: nn.Module,
                     qs: Sequence[float] = QUANTILES) -> torch.Tensor:
    """Percentiles of ``module``'s input over the batch ``x``: shape (len(qs), units).

    The model runs in eval mode (a BN layer uses its running statistics and
    does not update them), without gradients; its mode is restored afterwards.
    """
    _check_module_in(model, module)
    if check_tensor(x, "x").dim() < 2 or x.shape[0] < 1:
        raise ValueError(f"x must be a batch of inputs with a non-empty dimension 0, "
                         f"got shape {tuple(x.shape)}")
    return percentiles(capture_in_eval(model, x, {"probe": module})["probe"], qs)


def percentile_recorder(x: torch.Tensor, module: nn.Module,
                        qs: Sequence[float] = QUANTILES) -> Recorder:
    """A ``record`` function for ``train``: stores ``percentile_probe`` under "pcts"."""

    def record(model: nn.Module, step: int) -> dict:
        return {"pcts": percentile_probe(model, x, module, qs)}

    return record


def spread_growth(pcts: torch.Tensor, steps: Sequence[int], start: int) -> torch.Tensor:
    """Per unit: (highest - lowest percentile) at the last step over the same at ``start``.

    ``pcts`` has shape (len(steps), len(qs), units), as stacked from
    ``history.records["pcts"]``.
    """
    if check_tensor(pcts, "pcts").dim() != 3 or pcts.shape[0] != len(steps):
        raise ValueError(f"pcts must have shape (len(steps), len(qs), units) with "
                         f"len(steps) = {len(steps)}, got {tuple(pcts.shape)}")
    steps = list(steps)
    if start not in steps:
        raise ValueError(f"start={start} is not one of the recorded steps")
    spread = pcts[:, -1] - pcts[:, 0]
    return spread[-1] / spread[steps.index(start)]


def _layers(model: nn.Module) -> list[nn.Module]:
    blocks = getattr(model, "blocks", None)
    head = getattr(model, "head", None)
    if blocks is None or head is None:
        raise ValueError(f"{type(model).__name__} needs .blocks and .head (like bnlessons "
                         "MLP) to be split into layers")
    return list(blocks) + [head]


def _weight(layer: nn.Module) -> nn.Parameter:
    linear = getattr(layer, "linear", layer)
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"cannot find the weight matrix of {type(layer).__name__}: a layer "
                        "must be an nn.Linear or have one as .linear")
    return linear.weight


@dataclass(frozen=True)
class LayerShift:
    """Definition 2.1 for one layer: how far, and in which direction, G' moved from G."""

    l2: float  # ||G - G'||
    relative: float  # ||G - G'|| / ||G||
    cosine: float  # cos(G, G')
    grad_norm: float  # ||G||


def internal_covariate_shift(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                             lr: float) -> list[LayerShift]:
    """Santurkar et al.'s internal covariate shift of every layer, for one SGD step.

    G_i is the gradient of the loss on (x, y) with respect to layer i's weight
    matrix; G'_i is the same gradient after layers 1..i-1 took the SGD step
    ``-lr * gradient`` (computed on the same batch) and layers i..L did not.
    A layer is a hidden block (its linear map and its norm) or the head.
    The model is not changed: the work is done on copies, in training mode.
    """
    lr = check_positive(lr, "lr")
    base = copy.deepcopy(model).train()
    layers = _layers(base)
    loss = F.cross_entropy(base(x), y)
    base.zero_grad(set_to_none=True)
    loss.backward()
    steps = [{n: -lr * p.grad.detach().clone() for n, p in layer.named_parameters()
              if p.grad is not None} for layer in layers]
    results = []
    for i, layer in enumerate(layers):
        g = _weight(layer).grad.detach().double()  # float64 for the comparisons
        moved = copy.deepcopy(base)
        moved_layers = _layers(moved)
        with torch.no_grad():
            for j in range(i):
                for n, p in moved_layers[j].named_parameters():
                    if n in steps[j]:
                        p.add_(steps[j][n])
        moved.zero_grad(set_to_none=True)
        F.cross_entropy(moved(x), y).backward()
        g2 = _weight(moved_layers[i]).grad.detach().double()
        diff = float((g - g2).norm())
        norm = float(g.norm())
        cosine = float(F.cosine_similarity(g.flatten(), g2.flatten(), dim=0))
        results.append(LayerShift(diff, diff / max(norm, 1e-30), cosine, norm))
    return results
