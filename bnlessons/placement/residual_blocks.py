"""Post- versus pre-activation residual blocks (He et al. 2016) at initialisation.

The original block computes ``relu(x + f(x))`` with ``f`` = linear, BN, ReLU,
linear, BN: a ReLU sits on the skip path after every addition. The
pre-activation block computes ``x + f(x)`` with ``f`` = BN, ReLU, linear, BN,
ReLU, linear: the skip path is the identity from the first block to the
last. ``block_signals`` follows one batch through a ``models.ResidualMLP``.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from bnlessons._validate import check_module
from bnlessons.models import ResidualMLP


def block_signals(model: ResidualMLP, x: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
    """Per block of ``model`` (in its current mode), on one batch:

    * ``"variance"``: the variance of the stream x_l (per feature, averaged);
    * ``"cut"``: the fraction of x_{l-1} + f(x_{l-1}) that the ReLU after the
      addition sets to zero (0 for pre-activation blocks: nothing is cut);
    * ``"grad"``: the norm of the gradient of the cross-entropy with respect
      to x_l, from one backward pass.
    """
    check_module(model)
    if not isinstance(model, ResidualMLP):
        raise TypeError(f"model must be a models.ResidualMLP, got {type(model).__name__}")
    h = model.stem(x.flatten(1))
    streams, cut = [], []
    for block in model.blocks:
        with torch.no_grad():
            total = h + (block.scale if block.scale is not None else 1.0) * block.branch(h)
            cut.append(float((total < 0).double().mean()) if block.style == "post" else 0.0)
        h = block(h)
        h.retain_grad()
        streams.append(h)
    logits = model.head(model.final_act(model.final_norm(h)))
    F.cross_entropy(logits, y).backward()
    model.zero_grad(set_to_none=True)
    return {"variance": [float(s.detach().var(dim=0).mean()) for s in streams], "cut": cut,
            "grad": [float(s.grad.norm()) for s in streams]}
