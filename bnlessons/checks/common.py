"""What every check shares: the verdict, the error measure, the comparison."""
from __future__ import annotations

from dataclasses import dataclass

import torch


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


def elementwise_relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max_i |a_i - b_i| / max(|a_i| + |b_i|, 1e-8)``: the worst entry, each relative to itself.

    Strict: every entry must be right relative to its own size, which is what
    a check of a learner's code wants. (``gradcheck.relative_error`` divides by
    the largest entry instead, which suits finite differences, whose error is
    absolute rather than relative.)
    """
    a, b = a.double(), b.double()
    return float(((a - b).abs() / (a.abs() + b.abs()).clamp_min(1e-8)).max())


def _worst_index(a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...]:
    err = (a.double() - b.double()).abs() / (a.double().abs() + b.double().abs()).clamp_min(1e-8)
    flat = int(err.argmax())
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape))


def compare(what: str, got: object, want: torch.Tensor, tol: float, shape_note: str) -> str:
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
    err = elementwise_relative_error(got, want)
    if err > tol:
        idx = _worst_index(got, want)
        return (f"{what} is off by elementwise relative error {err:.2e} (threshold {tol:.0e}) "
                f"{shape_note}; "
                f"worst at index {idx}: got {float(got[idx]):.6g}, expected {float(want[idx]):.6g}")
    return ""


def report(verdict: Verdict, verbose: bool) -> Verdict:
    """Print the verdict (unless ``verbose`` is False) and return it."""
    if verbose:
        print(verdict)
    return verdict
