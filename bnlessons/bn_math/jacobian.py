"""BN's Jacobian, and the Jacobians of the layers of a network with and without BN.

Over one feature, training-mode BN maps the batch column ``x`` (``m`` values)
to ``y = gamma * xhat + beta`` with ``xhat = s (x - mu)`` and
``s = 1 / sqrt(var + eps)`` (the course's notation). Its Jacobian is

    dy/dx = gamma * s * (I - 1 1^T / m - xhat xhat^T / m),

exactly, for any ``eps`` (``bn_jacobian``). With ``eps = 0``, ``xhat`` has
mean 0 and squared norm ``m``, so ``1/sqrt(m)`` and ``xhat/sqrt(m)`` are
orthonormal and the bracket is the orthogonal projection onto the
``m - 2``-dimensional space orthogonal to both. ``autograd_bn_jacobian``
builds the same matrix with ``torch.func.jacrev`` through
``reference.forward``, as the independent check.

``layer_jacobians`` measures what Ioffe & Szegedy (2015, section 3.3)
conjectured about: the per-example Jacobian of the map from one layer's
normalised values to the next layer's, with the batch statistics held at
the values of the batch the example came from (the linear map the paper's
argument is about). For a network without BN the same function returns the
Jacobians between consecutive pre-activations.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from bnlessons import reference
from bnlessons._own_work import answers
from bnlessons._validate import (
    as_float_tensor,
    check_eps,
    check_int,
    check_module,
    check_number,
    check_pair,
)


def _check_column(x: object) -> torch.Tensor:
    x = as_float_tensor(x, "x")
    if x.dim() != 1:
        raise ValueError(f"x must be one feature's batch column, shape (m,), got {tuple(x.shape)}")
    if len(x) < 3:
        raise ValueError(f"x needs at least 3 values (the projection has rank m - 2), got {len(x)}")
    if not torch.isfinite(x).all():
        raise ValueError("x contains NaN or inf")
    return x


@answers("check_bn_jacobian")
def bn_jacobian(x: torch.Tensor, gamma: float = 1.0, eps: float = 0.0) -> torch.Tensor:
    """``dy/dx`` of training-mode BN over one feature: ``gamma s (I - 11^T/m - xhat xhat^T/m)``.

    ``x`` is the batch column, shape ``(m,)``; the result is ``(m, m)`` in
    ``x``'s dtype. Exact for every ``eps``; a scaled projection when ``eps = 0``.
    """
    x = _check_column(x)
    gamma = check_number(gamma, "gamma")
    eps = check_eps(eps)
    m = len(x)
    var = x.var(unbiased=False)
    if var + eps == 0:
        raise ValueError("x is constant and eps is 0: BN divides by a zero standard deviation")
    s = 1 / torch.sqrt(var + eps)
    xhat = (x - x.mean()) * s
    eye = torch.eye(m, dtype=x.dtype)
    ones = torch.ones(m, dtype=x.dtype)
    return gamma * s * (eye - torch.outer(ones, ones) / m - torch.outer(xhat, xhat) / m)


@answers("check_bn_jacobian")
def autograd_bn_jacobian(x: torch.Tensor, gamma: float = 1.0, eps: float = 0.0) -> torch.Tensor:
    """The same Jacobian from ``torch.func.jacrev`` through ``reference.forward``
    (an independent check of ``bn_jacobian``)."""
    x = _check_column(x)
    gamma = check_number(gamma, "gamma")
    eps = check_eps(eps)
    g = torch.tensor([gamma], dtype=x.dtype)
    b = torch.zeros(1, dtype=x.dtype)

    def f(col: torch.Tensor) -> torch.Tensor:
        return reference.forward(col[:, None], g, b, eps, check_finite=False)[0][:, 0]
    return torch.func.jacrev(f)(x)


@dataclass(frozen=True)
class ProjectionReport:
    """How far ``J / (gamma s)`` is from an orthogonal projection with kernel {1, xhat}."""

    symmetry: float  # max |P - P^T|
    idempotence: float  # max |P P - P|
    singular_values: torch.Tensor  # of P, descending
    kernel: float  # max(|P 1|, |P xhat|) / sqrt(m)


def projection_report(jac: torch.Tensor, x: torch.Tensor, gamma: float = 1.0,
                      eps: float = 0.0) -> ProjectionReport:
    """Measure the projection properties of a BN Jacobian ``jac`` of the column ``x``."""
    x = _check_column(x)
    jac = as_float_tensor(jac, "jac")
    m = len(x)
    if jac.shape != (m, m):
        raise ValueError(f"jac must have shape {(m, m)} for a column of {m}, "
                         f"got {tuple(jac.shape)}")
    gamma = check_number(gamma, "gamma")
    if gamma == 0:
        raise ValueError("gamma must be nonzero: the report divides the Jacobian by gamma s")
    s = 1 / torch.sqrt(x.var(unbiased=False) + check_eps(eps))
    p = jac / (gamma * s)
    xhat = (x - x.mean()) * s
    ones = torch.ones(m, dtype=p.dtype)
    return ProjectionReport(
        symmetry=float((p - p.T).abs().max()),
        idempotence=float((p @ p - p).abs().max()),
        singular_values=torch.linalg.svdvals(p),
        kernel=float(max((p @ ones).norm(), (p @ xhat).norm()) / m ** 0.5),
    )


def _bn_mlp_parts(model: nn.Module) -> list[nn.Module]:
    check_module(model)
    blocks = getattr(model, "blocks", None)
    if blocks is None or len(blocks) < 2:
        raise ValueError("model needs .blocks with at least two hidden layers "
                         "(the block-network protocol of bnlessons.models)")
    for i, block in enumerate(blocks):
        if not all(hasattr(block, name) for name in ("linear", "norm", "act")):
            raise ValueError(f"blocks[{i}] must have .linear, .norm and .act (models.HiddenBlock)")
        if not isinstance(getattr(block, "drop", nn.Identity()), nn.Identity):
            raise ValueError(f"blocks[{i}] has dropout; layer_jacobians measures networks "
                             "without it")
        if getattr(block, "norm_position", "before") != "before":
            raise ValueError("layer_jacobians needs BN before the activation "
                             "(norm_position='before')")
    kinds = {"bn" if _is_bn(b.norm) else "none" if isinstance(b.norm, nn.Identity) else "other"
             for b in blocks}
    if kinds not in ({"bn"}, {"none"}):
        raise ValueError("the network needs BN in every block or no normalisation at all")
    return list(blocks)


@torch.no_grad()
def _pre_activations(blocks: list[nn.Module], x: torch.Tensor) -> list[torch.Tensor]:
    """Each block's linear output for the batch ``x``, the network run as in training."""
    zs = []
    h = x.flatten(1)
    for block in blocks:
        z = block.linear(h)
        zs.append(z)
        h = block.act(_normalise(block.norm, z)) if _is_bn(block.norm) else block.act(z)
    return zs


def _is_bn(norm: nn.Module) -> bool:
    return isinstance(norm, (nn.BatchNorm1d, reference.BatchNorm))


def _normalise(norm: nn.Module, z: torch.Tensor) -> torch.Tensor:
    """BN's output with this batch's statistics, leaving the running buffers alone."""
    mu, var = z.mean(0), z.var(0, unbiased=False)
    y = (z - mu) / torch.sqrt(var + norm.eps)
    return y * norm.weight + norm.bias if norm.affine else y


def layer_jacobians(model: nn.Module, x: torch.Tensor) -> list[torch.Tensor]:
    """Per-example Jacobians between consecutive hidden layers; element ``l`` has shape
    ``(N, width, width)`` and maps layer ``l`` to layer ``l + 1``.

    With BN (before the activation): from ``xhat_l`` to ``xhat_{l+1}``, the
    normalised values, with the statistics of the batch ``x`` held fixed.
    Without normalisation: from the pre-activation ``z_l`` to ``z_{l+1}``.
    Other normalisations are refused. The model's buffers and mode are not changed.
    """
    blocks = _bn_mlp_parts(model)
    x = as_float_tensor(x, "x")
    with_bn = all(_is_bn(b.norm) for b in blocks)
    zs = _pre_activations(blocks, x)
    jacobians = []
    for block, nxt, z, z_next in zip(blocks[:-1], blocks[1:], zs[:-1], zs[1:]):
        if with_bn:
            std = torch.sqrt(z.var(0, unbiased=False) + block.norm.eps)
            std_next = torch.sqrt(z_next.var(0, unbiased=False) + nxt.norm.eps)
            mu_next = z_next.mean(0)
            gamma = block.norm.weight if block.norm.affine else torch.ones_like(std)
            beta = block.norm.bias if block.norm.affine else torch.zeros_like(std)
            start = (z - z.mean(0)) / std

            def step(v, block=block, nxt=nxt, gamma=gamma, beta=beta, mu_next=mu_next,
                     std_next=std_next):
                return (nxt.linear(block.act(gamma * v + beta)) - mu_next) / std_next
        else:
            start = z

            def step(v, block=block, nxt=nxt):
                return nxt.linear(block.act(v))
        jac = torch.func.vmap(torch.func.jacrev(step))(start.detach())
        jacobians.append(jac.detach())
    return jacobians


def chain(jacobians: list[torch.Tensor]) -> torch.Tensor:
    """The per-example product ``J_{L-1} ... J_1``: the whole stack's Jacobian."""
    if not jacobians:
        raise ValueError("chain needs at least one Jacobian")
    total = jacobians[0]
    for jac in jacobians[1:]:
        total = jac @ total
    return total


def singular_value_summary(jacobians: list[torch.Tensor],
                           band: tuple[float, float] = (0.5, 2.0)) -> dict[str, float]:
    """Pooled singular values of per-example Jacobians (one tensor per layer).

    Returns the 10th, 50th and 90th percentiles (``q10``, ``q50``, ``q90``),
    the fraction inside ``band`` (``in_band``), and the smallest and largest
    per-layer mean squared singular value (``gain_min``, ``gain_max``:
    ``||J||_F^2 / n`` averaged over examples, the factor by which the layer
    scales the squared norm of a random direction).
    """
    if not jacobians:
        raise ValueError("singular_value_summary needs at least one Jacobian")
    low, high = check_pair(band, "band", low=0)
    if not low < high:
        raise ValueError(f"band must be (low, high) with 0 <= low < high, got {band!r}")
    sv = torch.linalg.svdvals(torch.cat(list(jacobians))).flatten().double()
    gains = torch.stack([(j.double() ** 2).sum((-2, -1)).mean() / j.shape[-1] for j in jacobians])
    q10, q50, q90 = torch.quantile(sv, torch.tensor([0.1, 0.5, 0.9], dtype=sv.dtype)).tolist()
    return {"q10": q10, "q50": q50, "q90": q90,
            "in_band": float(((sv >= low) & (sv <= high)).double().mean()),
            "gain_min": float(gains.min()), "gain_max": float(gains.max())}


def correlation_eigenvalues(model: nn.Module, x: torch.Tensor, layer: int) -> torch.Tensor:
    """Eigenvalues (descending) of the correlation matrix of hidden layer ``layer``'s
    pre-activations over the batch ``x``: BN's normalised values are their
    standardised form. All ones would mean uncorrelated units, the premise of
    Ioffe & Szegedy's argument; a finite batch of ``N`` uncorrelated values
    still spreads them over about ``(1 +- sqrt(width / N))^2``.
    """
    blocks = _bn_mlp_parts(model)
    check_int(layer, "layer", 0, len(blocks) - 1)
    x = as_float_tensor(x, "x")
    z = _pre_activations(blocks, x)[layer].double()
    if len(z) <= z.shape[1]:
        raise ValueError(f"x needs more examples ({len(z)}) than the layer has units "
                         f"({z.shape[1]}) for a full-rank correlation matrix")
    return torch.linalg.eigvalsh(torch.corrcoef(z.T)).flip(0)
