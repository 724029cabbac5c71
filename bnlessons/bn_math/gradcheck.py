"""Checking a batch norm backward pass: autograd at every node, finite differences.

* ``graph_gradients``: builds Algorithm 1 as a graph of named nodes (``mu``,
  ``var``, ``xhat``) and lets autograd compute the gradient of the loss
  ``L = sum(dout * out)`` at each of them, so a hand-written backward pass can
  be checked one node at a time.
* ``numerical_gradient``: central finite differences of that same loss with
  respect to any input tensor, an independent check that needs no autograd.
* ``relative_error``: the error measure used for both, scaled by the size of
  the gradients so that tiny entries do not dominate it.

The upstream gradient ``dout`` is an explicit argument everywhere: checking
with ``dout = ones`` (the loss ``sum(out)``) proves nothing, because BN's
input gradient is then identically zero whatever the implementation.
"""
from __future__ import annotations

from typing import Callable

import torch

from bnlessons._validate import (
    as_float_tensor,
    check_bn_input,
    check_channel_param,
    check_eps,
    check_gradient_like,
    check_positive,
    check_tensor,
    check_training_batch,
    per_channel,
    reduce_dims,
)

#: The nodes of ``graph_gradients`` in the order backpropagation reaches them.
GRAPH_NODES: tuple[str, ...] = ("beta", "gamma", "xhat", "var", "mu", "x")


def _check_dout(dout: object, x: torch.Tensor) -> torch.Tensor:
    return check_gradient_like(dout, x, "dout")


def graph_gradients(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor, eps: float,
                    dout: torch.Tensor) -> dict[str, torch.Tensor]:
    """Autograd's gradient of ``L = sum(dout * BN(x))`` at every node of Algorithm 1.

    The graph is the paper's: ``mu = mean(x)``, ``var = mean((x - mu)**2)``,
    ``xhat = (x - mu) / sqrt(var + eps)``, ``out = gamma * xhat + beta``, with
    statistics over every dimension but 1. Returns a dict keyed by
    ``GRAPH_NODES`` plus ``"out"`` (the forward output, detached). The gradient
    at ``mu`` is the *total* derivative, including the path through ``var``.
    """
    x = check_bn_input(x)
    check_training_batch(x)
    gamma = check_channel_param(gamma, "gamma", x.shape[1], x)
    beta = check_channel_param(beta, "beta", x.shape[1], x)
    eps = check_eps(eps)
    dout = _check_dout(dout, x)
    dims = reduce_dims(x)
    with torch.enable_grad():
        leaves = {name: t.detach().clone().requires_grad_(True)
                  for name, t in (("x", x), ("gamma", gamma), ("beta", beta))}
        xl = leaves["x"]
        mu = xl.mean(dim=dims)
        mu.retain_grad()
        var = ((xl - per_channel(mu, xl)) ** 2).mean(dim=dims)
        var.retain_grad()
        xhat = (xl - per_channel(mu, xl)) / torch.sqrt(per_channel(var, xl) + eps)
        xhat.retain_grad()
        out = per_channel(leaves["gamma"], xl) * xhat + per_channel(leaves["beta"], xl)
        (out * dout).sum().backward()
    grads = {"out": out.detach(), "mu": mu.grad, "var": var.grad, "xhat": xhat.grad}
    grads.update({name: leaf.grad for name, leaf in leaves.items()})
    return grads


def numerical_gradient(f: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor,
                       dout: torch.Tensor, h: float = 1e-5) -> torch.Tensor:
    """Central finite differences of ``L(x) = sum(dout * f(x))`` with respect to ``x``.

    ``dout`` has the shape of ``f(x)``, which need not be that of ``x`` (for
    example ``x`` may be gamma and ``f`` BN as a function of gamma).
    Entry ``i`` is ``(L(x + h e_i) - L(x - h e_i)) / (2 h)``: its truncation
    error is of order ``h**2`` and its rounding error of order ``1e-16 |L| / h``,
    so float64 is required (in float32 the rounding error alone is near 1e-2).
    Costs two evaluations of ``f`` per entry of ``x``: keep ``x`` small.
    """
    if not callable(f):
        raise TypeError(f"f must be callable, got {type(f).__name__}")
    x = as_float_tensor(x, "x")
    if x.dtype != torch.float64:
        raise TypeError(f"x must be float64 for finite differences, got {x.dtype}; "
                        "use x.double()")
    dout = as_float_tensor(dout, "dout")
    check_positive(h, "h")
    if x.numel() > 20_000:
        raise ValueError(f"x has {x.numel()} entries; finite differences need two forward "
                         "passes per entry, so use at most 20,000")

    def loss(v: torch.Tensor) -> float:
        out = f(v)
        if check_tensor(out, "f(x)").shape != dout.shape:
            raise ValueError(f"f(x) must return a tensor of the shape of dout "
                             f"{tuple(dout.shape)}, got {tuple(out.shape)}")
        return float((out.double() * dout.double()).sum())

    base = x.detach().clone()
    grad = torch.empty_like(base)
    flat, gflat = base.view(-1), grad.view(-1)
    with torch.no_grad():
        for i in range(flat.numel()):
            old = float(flat[i])
            flat[i] = old + h
            plus = loss(base)
            flat[i] = old - h
            minus = loss(base)
            flat[i] = old
            gflat[i] = (plus - minus) / (2.0 * h)
    return grad


def relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max |a - b| / max(max |a|, max |b|)``: the largest error, relative to the gradient's scale.

    Dividing by the largest entry rather than entry by entry keeps entries that
    are nearly zero (where any tiny error is a large *relative* error) from
    dominating the measure. Returns 0.0 when both tensors are all zeros.
    """
    a = as_float_tensor(a, "a")
    b = as_float_tensor(b, "b")
    if a.shape != b.shape:
        raise ValueError(f"a and b must have one shape, got {tuple(a.shape)} and "
                         f"{tuple(b.shape)}")
    a, b = a.detach().double(), b.detach().double()
    scale = max(float(a.abs().max()), float(b.abs().max()))
    if scale == 0.0:
        return 0.0
    return float((a - b).abs().max()) / scale
