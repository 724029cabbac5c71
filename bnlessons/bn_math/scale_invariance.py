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
"""
from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from bnlessons._validate import as_float_tensor, check_int
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
    if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    return float(lr) / row_norms(weight) ** 2


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
    if isinstance(eps, bool) or not isinstance(eps, (int, float)) or eps < 0:
        raise ValueError(f"eps must be a number >= 0, got {eps!r}")
    layer = nn.Sequential(nn.Linear(in_features, out_features, bias=False, dtype=dtype),
                          BatchNorm(out_features, eps=float(eps), dtype=dtype))
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
    if isinstance(a, bool) or not isinstance(a, (int, float)) or not a > 0:
        raise ValueError(f"a must be a positive number, got {a!r}")
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
