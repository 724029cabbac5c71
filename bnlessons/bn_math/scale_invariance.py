"""Scale invariance of batch norm and what it does to SGD (Ioffe & Szegedy, section 3.3).

When BN follows a linear layer, ``BN((a W) u) = BN(W u)`` for any a > 0, and
the same holds for each row ``w_j`` of ``W`` separately (row j only feeds
feature j, which BN normalises on its own). Two consequences, measured here:

* the gradient with respect to ``a w_j`` is ``1/a`` times that with respect to
  ``w_j``, and each row is orthogonal to its own gradient (the loss does not
  change along ``w_j``), so a plain SGD step can only lengthen the row:
  ``|w - lr g|^2 = |w|^2 + lr^2 |g|^2``;
* a step of size ``lr`` on a row of norm ``|w|`` turns it by an angle of about
  ``lr |g| / |w|``, and ``|g|`` itself scales as ``1 / |w|``, so the
  *effective* learning rate is ``lr / |w|^2``: it falls as the norm grows.

``linear_bn_layer`` builds the small layer the measurements use;
``row_norms``, ``row_gradient_cosines`` and ``effective_lr`` measure a weight
matrix; ``weight_norm_recorder`` records them during ``bnlessons.train.train``.

With weight decay ``wd`` a step shrinks each row by ``1 - lr wd`` and the
gradient step lengthens it, at right angles: ``decayed_norm_sq``. The two
balance at ``equilibrium_norm_sq`` (from the gradients measured there) or
``scale_free_equilibrium_norm_sq`` (from ``|g|^2 |w|^2``, which the norm does
not change); ``RowNormTracker`` records norms,
gradients and the angle each row turns through at every training step.
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bnlessons._validate import (
    as_float_tensor,
    check_eps,
    check_int,
    check_nonnegative,
    check_positive,
)
from bnlessons.reference import BatchNorm


def _check_weight(weight: object, name: str = "weight") -> torch.Tensor:
    weight = as_float_tensor(weight, name)
    if weight.dim() < 2:
        raise ValueError(f"{name} must be a weight matrix (out_features, in_features, ...), "
                         f"got shape {tuple(weight.shape)}")
    return weight


def row_norms(weight: torch.Tensor) -> torch.Tensor:
    """The Euclidean norm of each row ``w_j`` (one per output unit): shape (out_features,)."""
    weight = _check_weight(weight)
    return weight.detach().flatten(1).norm(dim=1)


def row_gradient_cosines(weight: torch.Tensor, grad: torch.Tensor) -> torch.Tensor:
    """Cosine of the angle between each row ``w_j`` and its gradient ``g_j``.

    Zero (to rounding, with eps = 0) when BN follows the layer. Rows whose
    gradient is exactly zero give 0.
    """
    weight = _check_weight(weight)
    grad = _check_weight(grad, "grad")
    if grad.shape != weight.shape:
        raise ValueError(f"grad must have the shape of weight {tuple(weight.shape)}, got "
                         f"{tuple(grad.shape)}")
    w, g = weight.detach().flatten(1), grad.detach().flatten(1)
    dot = (w * g).sum(dim=1)
    return dot / (w.norm(dim=1) * g.norm(dim=1)).clamp_min(torch.finfo(w.dtype).tiny)


def effective_lr(lr: float, weight: torch.Tensor) -> torch.Tensor:
    """``lr / |w_j|^2`` for each row: the learning rate the row's *direction* sees."""
    return check_positive(lr, "lr") / row_norms(weight) ** 2


def linear_bn_layer(in_features: int, out_features: int, eps: float = 0.0,
                    dtype: torch.dtype = torch.float64) -> nn.Sequential:
    """``Linear(in, out, bias=False)`` followed by batch norm over ``out`` features, training mode.

    The norm is the course's ``reference.BatchNorm`` (PyTorch semantics), which,
    unlike ``nn.BatchNorm1d``, accepts ``eps = 0``: that makes the scale
    invariance exact, while PyTorch's default 1e-5 breaks it by a relative
    amount of order ``eps / var``.
    """
    check_int(in_features, "in_features")
    check_int(out_features, "out_features")
    eps = check_eps(eps)
    layer = nn.Sequential(nn.Linear(in_features, out_features, bias=False, dtype=dtype),
                          BatchNorm(out_features, eps=eps, dtype=dtype))
    return layer.train()


def scaled_weight_gradients(layer: nn.Sequential, u: torch.Tensor, upstream: torch.Tensor,
                            a: float) -> dict[str, torch.Tensor]:
    """Output and gradients of ``L = sum(upstream * layer(u))`` with the weight multiplied by a.

    ``layer`` is a ``linear_bn_layer``; its weight is left as it was. Returns
    ``out``, ``grad_weight`` (the gradient with respect to the scaled weight
    ``a W``) and ``grad_input`` (with respect to ``u``).
    """
    if not (isinstance(layer, nn.Sequential) and len(layer) == 2
            and isinstance(layer[0], nn.Linear)):
        raise TypeError("layer must be the nn.Sequential(Linear, BatchNorm) of linear_bn_layer")
    check_positive(a, "a")
    u = as_float_tensor(u, "u")
    upstream = as_float_tensor(upstream, "upstream")
    linear, norm = layer[0], layer[1]
    weight = (linear.weight.detach() * a).requires_grad_(True)
    u = u.detach().clone().requires_grad_(True)
    with torch.enable_grad():
        out = norm(u @ weight.T)
        if out.shape != upstream.shape:
            raise ValueError(f"upstream must have the output's shape {tuple(out.shape)}, got "
                             f"{tuple(upstream.shape)}")
        (out * upstream).sum().backward()
    return {"out": out.detach(), "grad_weight": weight.grad, "grad_input": u.grad}


def weight_norm_recorder(layers: dict[str, nn.Module],
                         lr: float) -> Callable[[nn.Module, int], dict]:
    """A ``record`` function for ``bnlessons.train.train`` that tracks weight rows.

    For each named layer (anything with a ``.weight`` matrix) it records, at
    every evaluation step: ``<name>/norm`` the median row norm and
    ``<name>/eff_lr`` the median effective learning rate ``lr / |w_j|^2``.
    """
    if not layers:
        raise ValueError("layers is empty: name at least one layer to record")
    for name, module in layers.items():
        if not isinstance(getattr(module, "weight", None), torch.Tensor):
            raise TypeError(f"layers[{name!r}] has no weight tensor")
    effective_lr(lr, next(iter(layers.values())).weight)  # validates lr

    def record(model: nn.Module, step: int) -> dict:
        out = {}
        for name, module in layers.items():
            norms = row_norms(module.weight)
            out[f"{name}/norm"] = float(norms.median())
            out[f"{name}/eff_lr"] = float((lr / norms**2).median())
        return out

    return record


def decayed_norm_sq(norm_sq: torch.Tensor, grad_sq: torch.Tensor, lr: float,
                    weight_decay: float) -> torch.Tensor:
    """``|w - lr (g + wd w)|^2`` for rows orthogonal to their gradients:
    ``(1 - lr wd)^2 |w|^2 + lr^2 |g|^2``. Shrinking by weight decay and
    growing by the gradient step add up like the two legs of a right angle."""
    _check_lr_wd(lr, weight_decay)
    return (1 - lr * weight_decay) ** 2 * norm_sq + lr ** 2 * grad_sq


def equilibrium_norm_sq(lr: float, weight_decay: float, mean_grad_sq: float) -> float:
    """The squared row norm at which weight decay's shrinking balances the growth
    from the gradient steps on average: ``lr E|g|^2 / (wd (2 - lr wd))``.

    It is the fixed point of ``decayed_norm_sq`` in expectation; ``mean_grad_sq``
    is ``E|g_j|^2`` measured there (van Laarhoven 2017 derive the same balance).
    """
    _check_lr_wd(lr, weight_decay)
    if not weight_decay > 0:
        raise ValueError("without weight decay there is no equilibrium: the norm only grows")
    check_nonnegative(mean_grad_sq, "mean_grad_sq")
    return lr * mean_grad_sq / (weight_decay * (2 - lr * weight_decay))


def scale_free_equilibrium_norm_sq(lr: float, weight_decay: float,
                                   unit_grad_sq: float) -> float:
    """The equilibrium squared norm from the scale-free gradient size
    ``G = |g|^2 |w|^2``: ``sqrt(lr G / (wd (2 - lr wd)))``.

    For a row feeding a BN unit (eps = 0) ``|g|`` scales as ``1/|w|``, so
    ``G`` does not depend on the norm: it can be measured on a run that
    started from another scale and still predicts this one's equilibrium.
    Plain SGD (no momentum), weight decay added to the gradient.
    """
    _check_lr_wd(lr, weight_decay)
    if not weight_decay > 0:
        raise ValueError("without weight decay there is no equilibrium: the norm only grows")
    unit_grad_sq = check_nonnegative(unit_grad_sq, "unit_grad_sq")
    return (lr * unit_grad_sq / (weight_decay * (2 - lr * weight_decay))) ** 0.5


def _check_lr_wd(lr: object, weight_decay: object) -> None:
    check_positive(lr, "lr")
    if not check_nonnegative(weight_decay, "weight_decay") < 1 / lr:
        raise ValueError(f"weight_decay must be in [0, 1/lr) = [0, {1 / lr:g}), "
                         f"got {weight_decay!r}")


class RowNormTracker:
    """Record, at every training step, what a weight matrix's rows do.

    A gradient hook on each named layer's ``weight`` fires once per backward
    pass, before the optimiser moves the weights, and appends the mean over
    rows of ``|w_j|^2`` and of ``|g_j|^2``, and, from the second call on, the
    root mean square over rows of the angle (radians) each row turned through
    since the previous call, and the layer's update-to-data ratio
    ``|W - W(previous)|_F / |W(previous)|_F`` (Frobenius norms of the whole
    matrix; whatever the optimiser did, momentum included).
    Use it around ``bnlessons.train.train`` (evaluation runs without
    gradients and is not recorded)::

        with RowNormTracker({"layer 1": model.blocks[1].linear}) as tracker:
            train(model, ...)
        tracker.history["layer 1"]["norm_sq"]
    """

    def __init__(self, layers: dict[str, nn.Module]) -> None:
        if not layers:
            raise ValueError("layers is empty: name at least one layer to track")
        for name, module in layers.items():
            if not isinstance(getattr(module, "weight", None), nn.Parameter):
                raise TypeError(f"layers[{name!r}] has no weight parameter")
        self.layers = dict(layers)
        self.history: dict[str, dict[str, list[float]]] = {
            name: {"norm_sq": [], "grad_sq": [], "angle": [], "update_ratio": []}
            for name in layers}
        self._previous: dict[str, torch.Tensor] = {}
        self._handles: list = []

    def _hook(self, name: str):
        module = self.layers[name]

        def record(grad: torch.Tensor) -> None:
            w = module.weight.detach().flatten(1).double()
            g = grad.detach().flatten(1).double()
            entry = self.history[name]
            entry["norm_sq"].append(float((w ** 2).sum(1).mean()))
            entry["grad_sq"].append(float((g ** 2).sum(1).mean()))
            previous = self._previous.get(name)
            if previous is not None:
                cos = (w * previous).sum(1) / (w.norm(dim=1) * previous.norm(dim=1))
                entry["angle"].append(float(torch.arccos(cos.clamp(-1, 1)).pow(2).mean().sqrt()))
                entry["update_ratio"].append(float((w - previous).norm() / previous.norm()))
            self._previous[name] = w.clone()

        return record

    def __enter__(self) -> "RowNormTracker":
        self._handles = [module.weight.register_hook(self._hook(name))
                         for name, module in self.layers.items()]
        return self

    def __exit__(self, *exc: object) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles = []
