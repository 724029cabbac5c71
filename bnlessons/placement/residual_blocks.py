"""Post- versus pre-activation residual blocks (He et al. 2016) at initialisation.

The original block computes ``relu(x + f(x))`` with ``f`` = linear, BN, ReLU,
linear, BN: a ReLU sits on the skip path after every addition. The
pre-activation block computes ``x + f(x)`` with ``f`` = BN, ReLU, linear, BN,
ReLU, linear: the skip path is the identity from the first block to the
last. ``residual_net`` builds the designs a lesson compares, with the same
stem, initialisation and head, and ``block_signals`` follows one batch
through one.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from bnlessons._validate import check_module
from bnlessons.models import ResidualMLP, make_activation, make_norm
from bnlessons.reproducibility import seeded

#: The designs ``residual_net`` builds. "post": relu(x + f(x)), f = linear, BN,
#: ReLU, linear, BN (He et al. 2016a). "post, no ReLU after the sum": the same
#: branch, x + f(x): the one change that makes the skip path an identity.
#: "post, zero gamma": "post" with the gamma of each branch's last BN at zero
#: (Goyal et al. 2017). "pre": x + f(x), f = BN, ReLU, linear, BN, ReLU, linear
#: (He et al. 2016b).
DESIGNS = ("post", "post, no ReLU after the sum", "post, zero gamma", "pre")


def residual_net(design: str, *, in_features: int, num_classes: int, width: int, depth: int,
                 branch_layers: int, seed: int) -> ResidualMLP:
    """A ``models.ResidualMLP`` with BN in one of ``DESIGNS``, He-initialised from
    ``seed`` (torch's global random state is left alone).

    Every design gets the same stem (a linear layer) and the same head: BN,
    ReLU, then the linear classifier, the head of a pre-activation network,
    whose stream is never normalised or rectified otherwise. The designs
    differ only in their blocks. The sizes and the seed have no defaults.
    """
    if design not in DESIGNS:
        raise ValueError(f"design must be one of {DESIGNS}, got {design!r}")
    with seeded(seed):
        model = ResidualMLP(in_features, num_classes, width=width, depth=depth, norm="bn",
                            branch_layers=branch_layers,
                            style="pre" if design == "pre" else "post",
                            zero_init_last_norm=design == "post, zero gamma", init="he")
    if design != "pre":  # the pre-activation head: BN and ReLU before the classifier
        model.final_norm, model.final_act = make_norm("bn", width), make_activation("relu")
    if design == "post, no ReLU after the sum":
        for block in model.blocks:
            block.act = nn.Identity()
    return model


def block_signals(model: ResidualMLP, x: torch.Tensor, y: torch.Tensor) -> dict[str, list[float]]:
    """Per block of ``model`` (in its current mode), on one batch:

    * ``"variance"``: the variance of the stream x_l (per feature, averaged);
    * ``"cut"``: the fraction of x_{l-1} + f(x_{l-1}) that the ReLU after the
      addition sets to zero (0 for blocks without one: nothing is cut);
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
            cut.append(float((total < 0).double().mean())
                       if isinstance(block.act, nn.ReLU) else 0.0)
        h = block(h)
        h.retain_grad()
        streams.append(h)
    logits = model.head(model.final_act(model.final_norm(h)))
    F.cross_entropy(logits, y).backward()
    model.zero_grad(set_to_none=True)
    return {"variance": [float(s.detach().var(dim=0).mean()) for s in streams], "cut": cut,
            "grad": [float(s.grad.norm()) for s in streams]}
