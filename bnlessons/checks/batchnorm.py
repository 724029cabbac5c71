"""Checks for a learner's batch norm forward and backward passes."""
from __future__ import annotations

import math
from typing import Callable, Sequence

import torch

from bnlessons import reference
from bnlessons.checks.common import Verdict, compare, report

FORWARD_TOL = 1e-10
BACKWARD_TOL = 1e-8
SHAPES_2D: tuple[tuple[int, ...], ...] = ((8, 5), (64, 3), (2, 1))
SHAPES_4D: tuple[tuple[int, ...], ...] = ((4, 3, 5, 5), (2, 6, 3, 4))


def _inputs(shape: Sequence[int], seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3.0 + 1.5
    c = shape[1]
    gamma = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(c, generator=g, dtype=torch.float64)
    dout = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x, gamma, beta, dout


def _scale_hint(got: torch.Tensor, want: torch.Tensor, beta: torch.Tensor,
                x: torch.Tensor) -> str:
    """A targeted hint when ``got - beta`` is ``want - beta`` times one constant factor.

    Elementwise errors mislead there (near an output of beta the relative
    error is large whatever the factor); the factor itself says what went
    wrong. sqrt((m-1)/m) is the classic: normalising by ``x.std(0)`` or
    ``x.var(0)``, which divide by m - 1, instead of the biased variance.
    """
    if not torch.isfinite(got).all():
        return ""
    dims = (0,) + tuple(range(2, x.dim()))
    shift = beta.reshape((1, -1) + (1,) * (x.dim() - 2))
    g, w = got.double() - shift, want.double() - shift
    factor = (g * w).sum(dim=dims) / (w * w).sum(dim=dims)
    if float((g - w * factor.reshape(shift.shape)).abs().max()) > 1e-6 * float(w.abs().max()):
        return ""  # not a pure rescaling
    common = float(factor.mean())
    if float((factor - common).abs().max()) > 1e-6 * abs(common):
        return ""
    m = x.numel() // x.shape[1]
    hint = f". Every feature of out - beta is the reference's times {common:.6f}"
    if abs(common - math.sqrt((m - 1) / m)) < 1e-4:
        hint += (f" = sqrt((m-1)/m) for m = {m}: you normalised with the unbiased variance "
                 "(x.std(0) and x.var(0) divide by m - 1); Algorithm 1 uses the biased one, "
                 "x.var(0, unbiased=False)")
    return hint


def _first_output(result: object) -> object:
    return result[0] if isinstance(result, tuple) else result


def check_forward(fn: Callable, shapes: Sequence[Sequence[int]] = SHAPES_2D,
                  eps: float = 1e-5, tol: float = FORWARD_TOL, verbose: bool = True) -> Verdict:
    """Check ``fn(x, gamma, beta, eps)`` (returning ``out`` or ``(out, cache)``).

    Passes if the output matches Algorithm 1 to elementwise relative error ``tol`` for
    every shape; pass ``SHAPES_4D`` to check per-channel (conv) batch norm.
    """
    name = "check_forward"
    for i, shape in enumerate(shapes):
        x, gamma, beta, _ = _inputs(shape, seed=100 + i)
        note = f"(input shape {tuple(shape)})"
        want, _ = reference.forward(x, gamma, beta, eps)
        try:
            got = _first_output(fn(x.clone(), gamma.clone(), beta.clone(), eps))
        except Exception as err:  # noqa: BLE001 - the learner's error is the verdict
            return report(Verdict(name, False, f"your function raised {type(err).__name__}: "
                                   f"{err} {note}"), verbose)
        problem = compare("out", got, want, tol, note)
        if problem:
            hint = _scale_hint(got, want, beta, x) if not problem.startswith(
                ("out should", "out has")) else ""
            return report(Verdict(name, False, problem + hint), verbose)
    shown = ", ".join(str(tuple(s)) for s in shapes)
    return report(Verdict(name, True, f"output matches the reference to elementwise relative error "
                           f"{tol:.0e} for shapes {shown}"), verbose)


def check_backward(forward_fn: Callable, backward_fn: Callable,
                   shapes: Sequence[Sequence[int]] = SHAPES_2D, eps: float = 1e-5,
                   tol: float = BACKWARD_TOL, verbose: bool = True) -> Verdict:
    """Check a ``forward(x, gamma, beta, eps) -> (out, cache)`` and
    ``backward(dout, cache) -> (dx, dgamma, dbeta)`` pair.

    The upstream gradient ``dout`` is random. Passes if all three gradients
    match the reference to elementwise relative error ``tol`` for every shape.
    """
    name = "check_backward"
    for i, shape in enumerate(shapes):
        x, gamma, beta, dout = _inputs(shape, seed=200 + i)
        note = f"(input shape {tuple(shape)})"
        _, ref_cache = reference.forward(x, gamma, beta, eps)
        want = reference.backward(dout, ref_cache)
        try:
            result = forward_fn(x.clone(), gamma.clone(), beta.clone(), eps)
            if not (isinstance(result, tuple) and len(result) == 2):
                return report(Verdict(name, False, "your forward must return (out, cache) "
                                       f"{note}"), verbose)
            got = backward_fn(dout.clone(), result[1])
        except Exception as err:  # noqa: BLE001
            return report(Verdict(name, False, f"your code raised {type(err).__name__}: "
                                   f"{err} {note}"), verbose)
        if not (isinstance(got, tuple) and len(got) == 3):
            return report(Verdict(name, False, "your backward must return "
                                   f"(dx, dgamma, dbeta) {note}"), verbose)
        for label, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
            problem = compare(label, g, w, tol, note)
            if problem:
                return report(Verdict(name, False, problem), verbose)
    shown = ", ".join(str(tuple(s)) for s in shapes)
    return report(Verdict(name, True, f"dx, dgamma and dbeta match the reference to relative "
                           f"error {tol:.0e} for shapes {shown}"), verbose)
