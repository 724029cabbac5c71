"""Verdicts on a learner's own implementation, measured against the reference.

Each ``check_*`` function runs the learner's code on random float64 inputs of
several shapes (with random upstream gradients, never ``sum(out)``, whose
gradient is identically zero), compares with ``bnlessons.reference`` and
prints one verdict: a pass, or the first thing that is wrong (an exception,
a shape, a dtype, which output, how far off and where). It also returns a
``Verdict`` so tests and autograders can assert on ``verdict.passed``.

Agreement is measured by the relative error
``max |a - b| / max(|a| + |b|, 1e-8)`` (elementwise), with thresholds
stated in each function.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Sequence

import torch

from bnlessons import reference

FORWARD_TOL = 1e-10
BACKWARD_TOL = 1e-8
SHAPES_2D: tuple[tuple[int, ...], ...] = ((8, 5), (64, 3), (2, 1))
SHAPES_4D: tuple[tuple[int, ...], ...] = ((4, 3, 5, 5), (2, 6, 3, 4))


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``passed`` and a one-line explanation."""

    name: str
    passed: bool
    message: str

    def __str__(self) -> str:
        mark = "PASS" if self.passed else "FAIL"
        return f"[{mark}] {self.name}: {self.message}"

    def __bool__(self) -> bool:
        return self.passed


def rel_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """Largest elementwise relative error between two tensors of one shape."""
    a, b = a.double(), b.double()
    return float(((a - b).abs() / (a.abs() + b.abs()).clamp_min(1e-8)).max())


def _worst_index(a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...]:
    err = (a.double() - b.double()).abs() / (a.double().abs() + b.double().abs()).clamp_min(1e-8)
    flat = int(err.argmax())
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape))


def _compare(what: str, got: object, want: torch.Tensor, tol: float, shape_note: str) -> str:
    """Empty string if ``got`` matches ``want``; otherwise what is wrong."""
    if not isinstance(got, torch.Tensor):
        return f"{what} should be a torch.Tensor, got {type(got).__name__} {shape_note}"
    if got.shape != want.shape:
        return f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)} {shape_note}"
    if got.dtype != want.dtype:
        return (f"{what} has dtype {got.dtype}, expected {want.dtype} {shape_note}: "
                "keep the input's dtype (no .float() or numpy round trips)")
    if not torch.isfinite(got).all():
        return f"{what} contains NaN or inf {shape_note}"
    err = rel_error(got, want)
    if err > tol:
        idx = _worst_index(got, want)
        return (f"{what} is off by relative error {err:.2e} (threshold {tol:.0e}) {shape_note}; "
                f"worst at index {idx}: got {float(got[idx]):.6g}, expected {float(want[idx]):.6g}")
    return ""


def _inputs(shape: Sequence[int], seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 3.0 + 1.5
    c = shape[1]
    gamma = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(c, generator=g, dtype=torch.float64)
    dout = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x, gamma, beta, dout


def _first_output(result: object) -> object:
    return result[0] if isinstance(result, tuple) else result


def _report(verdict: Verdict, verbose: bool) -> Verdict:
    if verbose:
        print(verdict)
    return verdict


def check_forward(fn: Callable, shapes: Sequence[Sequence[int]] = SHAPES_2D,
                  eps: float = 1e-5, tol: float = FORWARD_TOL, verbose: bool = True) -> Verdict:
    """Check ``fn(x, gamma, beta, eps)`` (returning ``out`` or ``(out, cache)``).

    Passes if the output matches Algorithm 1 to relative error ``tol`` for
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
            return _report(Verdict(name, False, f"your function raised {type(err).__name__}: "
                                   f"{err} {note}"), verbose)
        problem = _compare("out", got, want, tol, note)
        if problem:
            return _report(Verdict(name, False, problem), verbose)
    shown = ", ".join(str(tuple(s)) for s in shapes)
    return _report(Verdict(name, True, f"output matches the reference to relative error "
                           f"{tol:.0e} for shapes {shown}"), verbose)


def check_backward(forward_fn: Callable, backward_fn: Callable,
                   shapes: Sequence[Sequence[int]] = SHAPES_2D, eps: float = 1e-5,
                   tol: float = BACKWARD_TOL, verbose: bool = True) -> Verdict:
    """Check a ``forward(x, gamma, beta, eps) -> (out, cache)`` and
    ``backward(dout, cache) -> (dx, dgamma, dbeta)`` pair.

    The upstream gradient ``dout`` is random. Passes if all three gradients
    match the reference to relative error ``tol`` for every shape.
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
                return _report(Verdict(name, False, "your forward must return (out, cache) "
                                       f"{note}"), verbose)
            got = backward_fn(dout.clone(), result[1])
        except Exception as err:  # noqa: BLE001
            return _report(Verdict(name, False, f"your code raised {type(err).__name__}: "
                                   f"{err} {note}"), verbose)
        if not (isinstance(got, tuple) and len(got) == 3):
            return _report(Verdict(name, False, "your backward must return "
                                   f"(dx, dgamma, dbeta) {note}"), verbose)
        for label, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
            problem = _compare(label, g, w, tol, note)
            if problem:
                return _report(Verdict(name, False, problem), verbose)
    shown = ", ".join(str(tuple(s)) for s in shapes)
    return _report(Verdict(name, True, f"dx, dgamma and dbeta match the reference to relative "
                           f"error {tol:.0e} for shapes {shown}"), verbose)
