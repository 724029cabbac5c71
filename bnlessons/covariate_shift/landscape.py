"""The loss landscape along the gradient (Santurkar et al. 2018, section 3.2).

From the current parameters theta, take the gradient g of the loss on a batch
and look at the points theta - k * lr * g for a few step multipliers k:

* loss range: max minus min of the loss over those points (how much the loss
  changes along the direction a step takes; small means a predictable step);
* gradient change: ||grad(theta - k lr g) - g|| (how much the gradient moved:
  small means the gradient stays predictive along the step);
* effective smoothness: gradient change over the distance moved, ||k lr g||,
  the largest of which estimates a local Lipschitz constant of the gradient;
* first-order ratio: the loss decrease over the decrease that the gradient
  alone predicts, (L(theta) - L(theta - k lr g)) / (k lr ||g||^2). It is near
  1 while the loss is close to linear along the step, falls below 1 as the
  loss flattens or curves up, and is negative where the step overshoots and
  the loss ends above where it started.

With ``lr = d / ||g||`` (``grad_norm`` of a first slice) the multipliers are
distances: slices of two networks can then be compared at equal distance
moved.

``landscape_recorder`` wraps the measurement for ``train(record=...)``.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnlessons._validate import check_positive
from bnlessons.train import Recorder

MULTIPLIERS = (0.5, 1.0, 2.0, 4.0)


@dataclass(frozen=True)
class LandscapeSlice:
    """The loss and gradient at theta - k lr g for each multiplier k (k = 0 first)."""

    multipliers: tuple[float, ...]  # 0 followed by the requested ones
    losses: tuple[float, ...]
    grad_changes: tuple[float, ...]  # ||grad_k - grad_0||, 0 for k = 0
    distances: tuple[float, ...]  # ||k lr g||
    grad_norm: float  # ||g|| at the starting point

    @property
    def loss_range(self) -> float:
        return max(self.losses) - min(self.losses)

    @property
    def max_grad_change(self) -> float:
        return max(self.grad_changes)

    @property
    def first_order_ratios(self) -> tuple[float, ...]:
        """(L_0 - L_k) / (k lr ||g||^2) for each requested multiplier k: 1 where the
        first-order prediction holds, negative where the loss rose."""
        return tuple((self.losses[0] - loss) / (d * self.grad_norm)
                     for loss, d in zip(self.losses[1:], self.distances[1:]))

    @property
    def smoothness(self) -> float:
        """Largest gradient change per unit distance moved (effective beta-smoothness)."""
        return max(c / d for c, d in zip(self.grad_changes[1:], self.distances[1:]))


def _flat_grad(model: nn.Module, x: torch.Tensor, y: torch.Tensor) -> tuple[float, torch.Tensor]:
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    grads = [p.grad.detach().flatten() if p.grad is not None else torch.zeros(p.numel(),
             dtype=p.dtype) for p in model.parameters()]
    return loss.item(), torch.cat(grads)


def along_gradient(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float,
                   multipliers: Sequence[float] = MULTIPLIERS) -> LandscapeSlice:
    """Measure the loss and gradient at theta - k lr g; the model itself is not changed.

    Runs a copy of the model in training mode (BN uses the batch statistics
    of ``x``, as during an update).
    """
    check_positive(lr, "lr")
    ks = [check_positive(k, f"multipliers[{i}]") for i, k in enumerate(multipliers)]
    if not ks:
        raise ValueError("multipliers is empty: give at least one positive number")
    probe = copy.deepcopy(model).train()
    params = list(probe.parameters())
    start = [p.detach().clone() for p in params]
    loss0, g0 = _flat_grad(probe, x, y)
    losses, changes, distances = [loss0], [0.0], [0.0]
    for k in ks:
        offset = 0
        with torch.no_grad():
            for p, p0 in zip(params, start):
                n = p.numel()
                p.copy_(p0 - k * lr * g0[offset:offset + n].view_as(p))
                offset += n
        loss_k, g_k = _flat_grad(probe, x, y)
        losses.append(loss_k)
        changes.append(float((g_k - g0).norm()))
        distances.append(k * lr * float(g0.norm()))
    return LandscapeSlice((0.0, *ks), tuple(losses), tuple(changes), tuple(distances),
                          float(g0.norm()))


def landscape_recorder(x: torch.Tensor, y: torch.Tensor, lr: float,
                       multipliers: Sequence[float] = MULTIPLIERS) -> Recorder:
    """A ``record`` function for ``train``: stores ``along_gradient`` under "landscape"."""

    def record(model: nn.Module, step: int) -> dict:
        return {"landscape": along_gradient(model, x, y, lr, multipliers)}

    return record
