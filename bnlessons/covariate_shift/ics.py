"""Internal covariate shift: watching it, and measuring it.

* ``percentile_probe``: percentiles, over a fixed probe batch, of the input
  of one module (say the sigmoid of the last hidden layer), unit by unit.
  ``percentile_recorder`` wraps it for ``bnlessons.train.train(record=...)``,
  which is how Ioffe & Szegedy's Figure 1 (b, c) is redrawn.
* ``unit_input_recorder``: the same percentiles and, for a sigmoid's input,
  the saturated fraction and mean slope (``shift.saturation``) at each step.
* ``spread_growth``: how much the 15th-85th percentile spread of each unit
  grew between two recorded steps; ``median_shift``: how far each unit's
  median moved between them, in units of its spread at the first.
* ``internal_covariate_shift``: Santurkar et al.'s Definition 2.1, the change
  in layer l's gradient caused by updating layers 1..l-1 first;
  ``gradient_noise``: the change in each layer's gradient from one batch to
  another at the same weights, the reference it is compared with.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnlessons._own_work import answers
from bnlessons._validate import check_module, check_positive, check_tensor
from bnlessons.covariate_shift import shift
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
@answers("check_percentile_probe")
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


def unit_input_recorder(x: torch.Tensor, module: nn.Module,
                        qs: Sequence[float] = QUANTILES) -> Recorder:
    """A ``record`` function for ``train`` that looks at ``module``'s input on ``x`` once
    per call (in eval mode, as ``percentile_probe``) and stores its percentiles under
    "pcts" and ``shift.saturation`` of all its values (fraction with |z| > 4, mean
    sigmoid slope) under "saturation"."""

    def record(model: nn.Module, step: int) -> dict:
        _check_module_in(model, module)
        z = capture_in_eval(model, x, {"probe": module})["probe"]
        return {"pcts": percentiles(z, qs), "saturation": shift.saturation(z)}

    return record


def _check_pcts(pcts: object, steps: Sequence[int], start: int) -> int:
    """Validate stacked percentiles and their steps; the index of ``start`` among them."""
    if check_tensor(pcts, "pcts").dim() != 3 or pcts.shape[0] != len(steps):
        raise ValueError(f"pcts must have shape (len(steps), len(qs), units) with "
                         f"len(steps) = {len(steps)}, got {tuple(pcts.shape)}")
    steps = list(steps)
    if start not in steps:
        raise ValueError(f"start={start} is not one of the recorded steps")
    return steps.index(start)


def median_shift(pcts: torch.Tensor, steps: Sequence[int], start: int) -> torch.Tensor:
    """Per unit: |median at the last step - median at ``start``| / spread at ``start``.

    ``pcts`` is stacked as for ``spread_growth``, with the median in the middle
    row and the spread taken from the first to the last row (15th to 85th
    percentile for the default quantiles). 1 means the median moved by as much
    as the unit's inputs were spread at ``start``.
    """
    i = _check_pcts(pcts, steps, start)
    if pcts.shape[1] % 2 != 1:
        raise ValueError("pcts needs an odd number of percentiles, the median in the middle")
    mid = pcts.shape[1] // 2
    spread = pcts[i, -1] - pcts[i, 0]
    return (pcts[-1, mid] - pcts[i, mid]).abs() / spread.clamp_min(1e-12)


def spread_growth(pcts: torch.Tensor, steps: Sequence[int], start: int) -> torch.Tensor:
    """Per unit: (highest - lowest percentile) at the last step over the same at ``start``.

    ``pcts`` has shape (len(steps), len(qs), units), as stacked from
    ``history.records["pcts"]``.
    """
    i = _check_pcts(pcts, steps, start)
    spread = pcts[:, -1] - pcts[:, 0]
    return spread[-1] / spread[i]


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
    """Definition 2.1 for one layer l: how far, and in which direction, G' moved from G."""

    l2: float  # ||G - G'||
    relative: float  # ||G - G'|| / ||G||
    cosine: float  # cos(G, G')
    grad_norm: float  # ||G||


def internal_covariate_shift(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                             lr: float) -> list[LayerShift]:
    """Santurkar et al.'s internal covariate shift of every layer, for one SGD step.

    G_l is the gradient of the loss on (x, y) with respect to layer l's weight
    matrix; G'_l is the same gradient after layers 1..l-1 took the SGD step
    ``-lr * gradient`` (computed on the same batch) and layers l..D did not.
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


def _layer_gradients(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> list[torch.Tensor]:
    model.zero_grad(set_to_none=True)
    F.cross_entropy(model(x), y).backward()
    return [_weight(layer).grad.detach().double().clone() for layer in _layers(model)]


def gradient_noise(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                   x2: torch.Tensor, y2: torch.Tensor) -> list[float]:
    """Per layer: ||G - G2|| / ||G||, with G the weight gradient on (x, y) and G2 on (x2, y2).

    Both at the same weights, in training mode, on a copy of the model (the
    model is not changed). This is how much a layer's gradient changes from one
    minibatch to another with nothing updated: the noise of stochastic
    gradients, against which ``internal_covariate_shift``'s relative change
    can be read.
    """
    base = copy.deepcopy(model).train()
    g1 = _layer_gradients(base, x, y)
    g2 = _layer_gradients(base, x2, y2)
    return [float((a - b).norm() / a.norm().clamp_min(1e-30)) for a, b in zip(g1, g2)]
