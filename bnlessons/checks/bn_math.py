"""Checks for chapter 2, the mathematics of BN: the forward pass, the backward pass
(compact and node by node), the properties of dx, the scale factors of
section 3.3, BN's Jacobian over one feature, and the update-to-data ratio."""
from __future__ import annotations

import copy
import math
from typing import Callable, Mapping, Sequence

import torch
from torch import nn

from bnlessons import reference
from bnlessons._validate import (
    check_int,
    check_positive,
    per_channel,
    reduce_dims,
    values_per_channel,
)
from bnlessons.bn_math import gradcheck
from bnlessons.bn_math import jacobian as bn_jacobian
from bnlessons.bn_math.scale_invariance import linear_bn_layer, scaled_weight_gradients
from bnlessons.checks.common import (
    Verdict,
    call_learner,
    compare,
    elementwise_relative_error,
    gradable,
    report,
)

FORWARD_TOL = 1e-10
BACKWARD_TOL = 1e-8
SHAPES_2D: tuple[tuple[int, ...], ...] = ((8, 5), (64, 3), (2, 1))
SHAPES_4D: tuple[tuple[int, ...], ...] = ((4, 3, 5, 5), (2, 6, 3, 4))
#: The backward checks use batches of at least 8 values per feature: with m = 2 BN's output
#: is about +-1 whatever x is, dx is rounding noise, and a correct backward can miss a
#: tolerance of 1e-8.
BACKWARD_SHAPES: tuple[tuple[int, ...], ...] = ((8, 5), (64, 3), (16, 1))
MIN_VALUES_PER_FEATURE = 8


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
    dims = reduce_dims(x)
    shift = per_channel(beta, x)
    g, w = got.double() - shift, want.double() - shift
    factor = (g * w).sum(dim=dims) / (w * w).sum(dim=dims)
    if gradcheck.relative_error(g, w * per_channel(factor, x)) > 1e-6:
        return ""  # not a pure rescaling
    common = float(factor.mean())
    if abs(common - 1.0) < 1e-4:
        return ""  # the size of an eps mistake: the forward hints name those
    if gradcheck.relative_error(factor, torch.full_like(factor, common)) > 1e-6:
        return ""  # a different factor for each feature
    m = values_per_channel(x)
    hint = f". Every feature of out - beta is the reference's times {common:.6f}"
    if abs(common - math.sqrt((m - 1) / m)) < 1e-4:
        hint += (f" = sqrt((m-1)/m) for m = {m}: you normalised with the unbiased variance "
                 "(x.std(0) and x.var(0) divide by m - 1); Algorithm 1 uses the biased one, "
                 "x.var(0, unbiased=False)")
    return hint


def _mismatch(what: str, got: object, want: torch.Tensor, tol: float, note: str) -> str:
    """Empty if ``got`` matches ``want``; otherwise what is wrong, without the expected value:
    a numeric mismatch is reported only by its size, so that a message never hands the
    learner the answer (the hint says which reasoning broke)."""
    return compare(what, got, want, tol, note, show_expected=False)


def _normalise(x: torch.Tensor, dims: tuple[int, ...], eps: float,
               outside: bool = False) -> torch.Tensor:
    """(x - mean) / sqrt(var + eps) over ``dims``; ``outside``: / (sqrt(var) + eps)."""
    mu = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    return (x - mu) / ((var.sqrt() + eps) if outside else (var + eps).sqrt())


def _forward_mistakes(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                      eps: float) -> dict[str, torch.Tensor]:
    """Outputs of the usual wrong forward passes, each named by the reasoning it broke."""
    dims = reduce_dims(x)
    g, b = per_channel(gamma, x), per_channel(beta, x)
    xhat = _normalise(x, dims, eps)
    every = "dimension 0" if x.dim() == 2 else "dimensions 0, 2 and 3"
    wrong = {
        "eps belongs under the square root, s = 1 / sqrt(var + eps); added after the root it "
        "changes every output by a relative amount of the order of eps / std":
            g * _normalise(x, dims, eps, outside=True) + b,
        "eps is missing: Algorithm 1 divides by sqrt(var + eps), and leaving it out changes "
        "every output by a relative amount of the order of eps / var":
            g * _normalise(x, dims, 0.0) + b,
        "the learned shift is missing: out = gamma * xhat + beta": g * xhat,
        "each feature is off by its own factor, the learned scale: out = gamma * xhat + beta":
            xhat + b,
        "the statistics are taken over each example's own values (that is layer "
        f"normalisation); batch norm takes one mean and variance per feature over {every}":
            g * _normalise(x, tuple(range(1, x.dim())), eps) + b,
    }
    if x.dim() == 4:
        n, c, h, w = x.shape
        rows = x.reshape(-1, c)  # no permute: a row mixes channels and positions
        wrong.update({
            "the statistics are per channel and position, over the images alone; for "
            "convolutions batch norm shares one mean and variance per channel over the batch "
            "and every position (dimensions 0, 2 and 3)":
                g * _normalise(x, (0,), eps) + b,
            "the statistics are per image and channel (that is instance normalisation); batch "
            "norm averages over the batch too, dimensions 0, 2 and 3":
                g * _normalise(x, (2, 3), eps) + b,
            "x.reshape(-1, C) does not put one channel's values in one column: move the channel "
            "dimension last first (permute(0, 2, 3, 1)) or reduce over dimensions 0, 2 and 3":
                (_normalise(rows, (0,), eps) * gamma + beta).reshape(n, c, h, w),
        })
    return wrong


def _forward_hint(got: torch.Tensor, want: torch.Tensor, x: torch.Tensor,
                  gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> str:
    """Why the forward output is wrong: first the usual mistakes by name, then a pure
    rescaling of ``out - beta`` (a factor within 1e-4 of 1 is left to the mistakes and
    invariants: it is the size of an eps error, and printing it would show the answer),
    then the invariants every correct output satisfies."""
    if not isinstance(got, torch.Tensor) or got.shape != x.shape \
            or not bool(torch.isfinite(got).all()):
        return ""
    got = got.double()
    for reason, output in _forward_mistakes(x, gamma, beta, eps).items():
        if elementwise_relative_error(got, output) < 1e-7:
            return f". Hint: {reason}"
    scale = _scale_hint(got, want, beta, x)
    if scale:
        return scale
    dims = reduce_dims(x)
    z = (got - per_channel(beta, x)) / per_channel(gamma, x)
    var = x.var(dim=dims, unbiased=False)
    if float(z.mean(dim=dims).abs().max()) > 1e-6:
        return (". Hint: for every feature, (out - beta) / gamma should average to zero over "
                "the batch: check the mean you subtract and which dimensions it averages over")
    if float((z.var(dim=dims, unbiased=False) - var / (var + eps)).abs().max()) > 1e-6:
        return (". Hint: for every feature, (out - beta) / gamma should have the (biased) "
                "variance var / (var + eps): check how you divide by the standard deviation")
    return ""


def _first_output(result: object) -> object:
    return result[0] if isinstance(result, tuple) else result


def _forward_then_backward(name: str, forward_fn: Callable, backward_fn: Callable,
                           inputs: tuple[torch.Tensor, torch.Tensor, torch.Tensor, float],
                           dout: torch.Tensor, note: str, verbose: bool) -> object:
    """The learner's backward on the cache of the learner's forward, or the verdict on why not."""
    x, gamma, beta, eps = inputs
    result = call_learner(name, forward_fn, x.clone(), gamma.clone(), beta.clone(), eps,
                          verbose=verbose, who="your forward", note=note)
    if isinstance(result, Verdict):
        return result
    if not (isinstance(result, tuple) and len(result) == 2):
        return report(Verdict(name, False, f"your forward must return (out, cache) {note}"),
                      verbose)
    return call_learner(name, backward_fn, dout.clone(), result[1], verbose=verbose,
                        who="your backward", note=note)


@gradable
def check_forward(fn: Callable, shapes: Sequence[Sequence[int]] = SHAPES_2D,
                  eps: float = 1e-5, tol: float = FORWARD_TOL, verbose: bool = True,
                  seed: int = 100) -> Verdict:
    """Check ``fn(x, gamma, beta, eps)`` (returning ``out`` or ``(out, cache)``).

    Passes if the output matches Algorithm 1 to elementwise relative error ``tol`` for
    every shape; pass ``SHAPES_4D`` to check per-channel (conv) batch norm.
    ``seed`` chooses the random inputs (shape ``i`` uses ``seed + i``).
    """
    name = "check_forward"
    for i, shape in enumerate(shapes):
        x, gamma, beta, _ = _inputs(shape, seed=seed + i)
        note = f"(input shape {tuple(shape)})"
        want, _ = reference.forward(x, gamma, beta, eps)
        result = call_learner(name, fn, x.clone(), gamma.clone(), beta.clone(), eps,
                              verbose=verbose, note=note)
        if isinstance(result, Verdict):
            return result
        got = _first_output(result)
        problem = _mismatch("out", got, want, tol, note)
        if problem:
            hint = "" if problem.startswith(("out should", "out has")) else _forward_hint(
                got, want, x, gamma, beta, eps)
            return report(Verdict(name, False, problem + hint), verbose)
    shown = ", ".join(str(tuple(s)) for s in shapes)
    return report(Verdict(name, True, f"output matches the reference to elementwise relative error "
                           f"{tol:.0e} for shapes {shown}"), verbose)


def _backward_hint(label: str, got: torch.Tensor, dout: torch.Tensor, x: torch.Tensor,
                   gamma: torch.Tensor, beta: torch.Tensor, eps: float) -> str:
    """Why a gradient from ``check_backward`` is wrong: the usual mistakes, then invariants."""
    if not isinstance(got, torch.Tensor) or not bool(torch.isfinite(got).all()):
        return ""
    _, cache = reference.forward(x, gamma, beta, eps)
    dims = reduce_dims(x)
    m = values_per_channel(x)
    got = got.double()
    if label in ("dgamma", "dbeta"):
        want = (dout * cache.xhat).sum(dim=dims) if label == "dgamma" else dout.sum(dim=dims)
        if got.shape != want.shape:
            return ""
        term = "dout * xhat" if label == "dgamma" else "dout"
        if elementwise_relative_error(got, want / m) < 1e-7:
            return f". Hint: {label} sums {term} over the batch; you took the mean"
        if elementwise_relative_error(got, want * gamma) < 1e-7:
            return (f". Hint: {label} sums {term} over the batch, without gamma: out depends "
                    f"on {'gamma through gamma * xhat' if label == 'dgamma' else 'beta alone'}")
        return ""
    if got.shape != x.shape:
        return ""
    xhat = cache.xhat
    g = dout * per_channel(gamma, x)
    want = reference.backward(dout, cache)[0]
    sum_g = g.sum(dim=dims, keepdim=True)
    sum_gx = (g * xhat).sum(dim=dims, keepdim=True)
    s0 = per_channel(1 / cache.var.sqrt(), x)
    mistakes = {
        "dx has the wrong sign: check the sign of each of the three terms": -want,
        "each feature of dx is off by its own factor, gamma: the gradient reaching xhat is "
        "g = gamma * dout": want / per_channel(gamma, x),
        "each feature of dx is off by its own factor, gamma: multiply dout by gamma once":
            want * per_channel(gamma, x),
        "dx is off by the factor m / (m - 1): m counts the values per feature (N, times H W "
        "for images), and the batch variance divides by m": want * m / (m - 1),
        "dx is off by the factor (m - 1) / m: m counts the values per feature (N, times H W "
        "for images), and the batch variance divides by m": want * (m - 1) / m,
        "dx is off by a relative amount of the order of eps / var: s = 1 / sqrt(var + eps) "
        "must include eps, as in the forward pass": s0 / m * (m * g - sum_g - xhat * sum_gx),
    }
    for reason, wrong in mistakes.items():
        if elementwise_relative_error(got, wrong) < 1e-7:
            return f". Hint: {reason}"
    scale = float(got.abs().sum(dim=dims).max()) or 1.0
    if float(got.sum(dim=dims).abs().max()) > 1e-9 * scale:
        return (". Hint: dx should sum to zero over the batch for every feature (adding the "
                "same number to every x of a feature changes nothing): the term through the "
                "mean, -sum(g) / m, is missing or wrong")
    along = (got * xhat).sum(dim=dims)
    predicted = (per_channel(cache.inv_std, x) * sum_gx).flatten() * eps / (cache.var + eps)
    if float((along - predicted).abs().max()) > 1e-9 * float((got * xhat).abs().sum(dim=dims)
                                                             .max()) + 1e-3 * float(
            predicted.abs().max()):
        return (". Hint: dx should be orthogonal to xhat, up to a term of the order of "
                "eps / var (scaling a feature's centred values changes nothing): the term "
                "through the variance, -xhat * sum(g * xhat) / m, is missing or wrong")
    return ""


def _check_batch(shapes: Sequence[Sequence[int]], name: str) -> None:
    for shape in shapes:
        if values_per_channel(torch.empty(shape, device="meta")) < MIN_VALUES_PER_FEATURE:
            raise ValueError(f"{name} needs at least {MIN_VALUES_PER_FEATURE} values per "
                             f"feature, got shape {tuple(shape)}: with fewer, a correct dx is "
                             "mostly rounding noise")


@gradable
def check_backward(forward_fn: Callable, backward_fn: Callable,
                   shapes: Sequence[Sequence[int]] = BACKWARD_SHAPES, eps: float = 1e-5,
                   tol: float = BACKWARD_TOL, verbose: bool = True,
                   seed: int = 200) -> Verdict:
    """Check a ``forward(x, gamma, beta, eps) -> (out, cache)`` and
    ``backward(dout, cache) -> (dx, dgamma, dbeta)`` pair.

    The upstream gradient ``dout`` is random. Passes if all three gradients
    match the reference to elementwise relative error ``tol`` for every shape
    (each with at least 8 values per feature); ``seed`` chooses the random
    inputs. A wrong gradient is named with the reasoning that broke: a known
    mistake (gamma, the sign, m, eps), or the invariant dx violates (its sum
    over the batch, its orthogonality to xhat).
    """
    name = "check_backward"
    _check_batch(shapes, name)
    for i, shape in enumerate(shapes):
        x, gamma, beta, dout = _inputs(shape, seed=seed + i)
        note = f"(input shape {tuple(shape)})"
        _, ref_cache = reference.forward(x, gamma, beta, eps)
        want = reference.backward(dout, ref_cache)
        got = _forward_then_backward(name, forward_fn, backward_fn, (x, gamma, beta, eps),
                                     dout, note, verbose)
        if isinstance(got, Verdict):
            return got
        if not (isinstance(got, tuple) and len(got) == 3):
            return report(Verdict(name, False, "your backward must return "
                                   f"(dx, dgamma, dbeta) {note}"), verbose)
        for label, g, w in zip(("dx", "dgamma", "dbeta"), got, want):
            problem = _mismatch(label, g, w, tol, note)
            if problem:
                hint = _backward_hint(label, g, dout, x, gamma, beta, eps)
                return report(Verdict(name, False, problem + hint), verbose)
    shown = ", ".join(str(tuple(s)) for s in shapes)
    return report(Verdict(name, True, f"dx, dgamma and dbeta match the reference to relative "
                           f"error {tol:.0e} for shapes {shown}"), verbose)

#: What the staged backward returns, in the order backpropagation computes it.
STAGED_KEYS: tuple[str, ...] = ("dbeta", "dgamma", "dxhat", "dvar", "dmu", "dx")
_NODE = {"dbeta": "beta", "dgamma": "gamma", "dxhat": "xhat", "dvar": "var", "dmu": "mu",
         "dx": "x"}
_HINT = {
    "dbeta": "out = gamma * xhat + beta, so dbeta sums dout over the batch",
    "dgamma": "dgamma sums dout * xhat over the batch",
    "dxhat": "dxhat = dout * gamma, elementwise",
    "dvar": "dvar sums dxhat * (x - mu) over the batch, times -1/2 (var + eps)^(-3/2)",
    "dmu": "dmu has two terms: the path through xhat (-inv_std times the sum of dxhat) "
           "and the path through var (dvar times the mean of -2 (x - mu), zero in value "
           "but part of the formula)",
    "dx": "dx has three terms: dxhat * inv_std, dvar * 2 (x - mu) / m and dmu / m, where m "
          "counts the values per feature",
}
PROPERTY_TOL = 1e-10
#: Batches of at least 8: with m = 2 BN's output is about +-1 whatever x is, dx itself is
#: rounding noise, and "sums to zero" would compare noise with noise.
PROPERTY_SHAPES: tuple[tuple[int, ...], ...] = ((8, 5), (16, 3), (64, 4), (256, 2))
SCALE_QUANTITIES: tuple[str, ...] = ("output", "grad_input", "grad_weight", "effective_lr")


@gradable
def check_staged_backward(forward_fn: Callable, backward_fn: Callable,
                          shapes: Sequence[Sequence[int]] = BACKWARD_SHAPES, eps: float = 1e-5,
                          tol: float = BACKWARD_TOL, verbose: bool = True,
                          seed: int = 300) -> Verdict:
    """Check a backward pass that returns the gradient at every node of the graph.

    ``forward_fn(x, gamma, beta, eps)`` returns ``(out, cache)`` and
    ``backward_fn(dout, cache)`` returns a dict with the keys ``STAGED_KEYS``.
    Each gradient is compared, in the order backpropagation computes them,
    with autograd's gradient at that node (``gradcheck.graph_gradients``); the
    first one that is off is named, with the chain-rule step that produces it.
    Every shape needs at least 8 values per feature; ``seed`` chooses the
    random inputs. One mistake no comparison can see: leaving out the path of
    ``dmu`` through the variance, which is zero in value when mu is the mean
    of the same x.
    """
    name = "check_staged_backward"
    _check_batch(shapes, name)
    for i, shape in enumerate(shapes):
        x, gamma, beta, dout = _inputs(shape, seed=seed + i)
        note = f"(input shape {tuple(shape)})"
        want = gradcheck.graph_gradients(x, gamma, beta, eps, dout)
        got = _forward_then_backward(name, forward_fn, backward_fn, (x, gamma, beta, eps),
                                     dout, note, verbose)
        if isinstance(got, Verdict):
            return got
        if not isinstance(got, Mapping):
            return report(Verdict(name, False, "your backward must return a dict with keys "
                                   f"{', '.join(STAGED_KEYS)}; got {type(got).__name__}"),
                          verbose)
        missing = [k for k in STAGED_KEYS if k not in got]
        if missing:
            return report(Verdict(name, False, f"your dict has no {', '.join(missing)}: "
                                   f"return all of {', '.join(STAGED_KEYS)}"), verbose)
        for key in STAGED_KEYS:
            problem = _mismatch(key, got[key], want[_NODE[key]], tol, note)
            if problem:
                earlier = STAGED_KEYS[:STAGED_KEYS.index(key)]
                so_far = f" ({', '.join(earlier)} are right)" if earlier else ""
                return report(Verdict(name, False, f"{problem}{so_far}. Hint: {_HINT[key]}"),
                              verbose)
    shown = ", ".join(str(tuple(s)) for s in shapes)
    return report(Verdict(name, True, f"every node ({', '.join(STAGED_KEYS)}) matches autograd "
                           f"to elementwise relative error {tol:.0e} for shapes {shown}"), verbose)


def _turn(w: torch.Tensor, grad: torch.Tensor, lr: float) -> torch.Tensor:
    """The angle (radians) by which one SGD step of size ``lr`` turns each row of ``w``."""
    stepped = w - lr * grad
    unit = w / w.norm(dim=1, keepdim=True)
    along = (stepped * unit).sum(dim=1)
    across = (stepped - along.unsqueeze(1) * unit).norm(dim=1)
    return torch.atan2(across, along)


def _variance_eps_input(x: torch.Tensor) -> torch.Tensor:
    """``x`` centred and rescaled so that every feature's batch variance is exactly 1e-5."""
    dims = reduce_dims(x)
    centred = x - x.mean(dim=dims, keepdim=True)
    return centred / centred.pow(2).mean(dim=dims, keepdim=True).sqrt() * 1e-5 ** 0.5


def _dx_five_ways(forward_fn: Callable, backward_fn: Callable, x: torch.Tensor,
                  gamma: torch.Tensor, beta: torch.Tensor,
                  dout: torch.Tensor) -> tuple[object, ...]:
    """The learner's dx for ``dout``; with eps = 0; for ``dout = ones``; with gamma
    doubled; and for an input whose every feature has batch variance exactly eps (where
    s differs from 1 / std by sqrt(2))."""
    tiny = _variance_eps_input(x)
    _, cache = forward_fn(x.clone(), gamma.clone(), beta.clone(), 1e-5)
    dx = backward_fn(dout.clone(), cache)[0]
    _, cache0 = forward_fn(x.clone(), gamma.clone(), beta.clone(), 0.0)
    dx0 = backward_fn(dout.clone(), cache0)[0]
    dx_ones = backward_fn(torch.ones_like(dout), cache)[0]
    _, cache2 = forward_fn(x.clone(), 2 * gamma, beta.clone(), 1e-5)
    dx2 = backward_fn(dout.clone(), cache2)[0]
    _, cache_tiny = forward_fn(tiny.clone(), gamma.clone(), beta.clone(), 1e-5)
    dx_tiny = backward_fn(dout.clone(), cache_tiny)[0]
    return dx, dx0, dx_ones, dx2, dx_tiny


def _column_ratio(values: torch.Tensor, dims: tuple[int, ...]) -> float:
    """max over features of |sum of values| / sum of |values|: 0 when they cancel exactly."""
    total = values.sum(dim=dims).abs()
    size = values.abs().sum(dim=dims).clamp_min(torch.finfo(values.dtype).tiny)
    return float((total / size).max())


@gradable
def check_dx_properties(forward_fn: Callable, backward_fn: Callable,
                        shapes: Sequence[Sequence[int]] = PROPERTY_SHAPES,
                        tol: float = PROPERTY_TOL, verbose: bool = True,
                        seed: int = 400) -> Verdict:
    """Check five facts about BN's input gradient on a learner's backward pass.

    1. ``dx`` sums to zero over the batch, for each feature;
    2. with ``eps = 0``, ``dx`` is orthogonal to ``xhat``, feature by feature;
    3. for ``dout = ones`` (the loss ``sum(out)``) ``dx`` is zero everywhere;
    4. ``dx`` is linear in gamma: doubling gamma doubles it;
    5. with ``eps > 0``, ``sum_i dx_i xhat_i`` is not zero but exactly
       ``s * sum(g * xhat) * eps / (var + eps)`` (02/02 derives it);
    6. per feature, ``|dx| <= |gamma| s |dout|`` (BN's Jacobian is ``gamma s``
       times a projection), tested where the batch variance equals eps, so
       that a backward that leaves eps out of s breaks it.

    "Zero" means: at most ``tol`` times the size of the terms that cancel.
    Every shape needs a batch of at least 8 values per feature (see
    ``PROPERTY_SHAPES``); ``seed`` chooses the random inputs.
    """
    name = "check_dx_properties"
    cases = [_inputs(shape, seed=seed + i) for i, shape in enumerate(shapes)]
    for shape, (x, *_) in zip(shapes, cases):
        if values_per_channel(x) < 8:
            raise ValueError(f"check_dx_properties needs at least 8 values per feature, got "
                             f"shape {tuple(shape)}: with fewer, dx is mostly rounding noise")
    for shape, (x, gamma, beta, dout) in zip(shapes, cases):
        note = f"(input shape {tuple(shape)})"
        dims = reduce_dims(x)
        result = call_learner(name, _dx_five_ways, forward_fn, backward_fn, x, gamma, beta,
                              dout, verbose=verbose, who="your code", note=note)
        if isinstance(result, Verdict):
            return result
        dx, dx0, dx_ones, dx2, dx_tiny = result
        for label, got in (("dx", dx), ("dx (eps = 0)", dx0), ("dx (dout = ones)", dx_ones),
                           ("dx (gamma doubled)", dx2), ("dx (variance eps)", dx_tiny)):
            if not isinstance(got, torch.Tensor) or got.shape != x.shape:
                shape_got = tuple(got.shape) if isinstance(got, torch.Tensor) else type(got)
                return report(Verdict(name, False, f"{label} should be a tensor of shape "
                                       f"{tuple(x.shape)}, got {shape_got} {note}"), verbose)
        if _column_ratio(dx, dims) > tol:
            return report(Verdict(name, False, f"dx does not sum to zero over the batch {note}: "
                                   "check the dmu / m term, which every example shares"),
                          verbose)
        xhat0 = reference.forward(x, gamma, beta, 0.0)[1].xhat
        if _column_ratio(dx0 * xhat0, dims) > tol:
            return report(Verdict(name, False, f"with eps = 0, dx is not orthogonal to xhat "
                                   f"{note}: check the term through var"), verbose)
        scale = float(dx.abs().max())
        if float(dx_ones.abs().max()) > tol * scale:
            return report(Verdict(name, False, f"with dout = ones, dx should vanish but it does "
                                   f"not {note}"), verbose)
        if float((dx2 - 2 * dx).abs().max()) > 1e-8 * scale:
            return report(Verdict(name, False, f"dx does not double when gamma doubles {note}: "
                                   "the gradient reaching xhat is g = gamma * dout, and every "
                                   "term of dx is linear in g"), verbose)
        _, ref = reference.forward(x, gamma, beta, 1e-5)
        g = dout * per_channel(gamma, x)
        predicted = (ref.inv_std * (g * ref.xhat).sum(dim=dims) * 1e-5 / (ref.var + 1e-5))
        along = (dx * ref.xhat).sum(dim=dims)
        cancel = float((dx * ref.xhat).abs().sum(dim=dims).max())
        if float((along - predicted).abs().max()) > (tol * cancel
                                                     + 1e-3 * float(predicted.abs().max())):
            return report(Verdict(name, False, f"with eps > 0, sum_i dx_i xhat_i should be "
                                   f"s * sum(g * xhat) * eps / (var + eps), and it is not "
                                   f"{note}: check the term through the variance and where eps "
                                   "goes"), verbose)
        tiny = _variance_eps_input(x)
        s_tiny = 1 / (tiny.var(dim=dims, unbiased=False) + 1e-5).sqrt()
        bound = gamma.abs() * s_tiny * dout.pow(2).sum(dim=dims).sqrt()
        if bool((dx_tiny.pow(2).sum(dim=dims).sqrt() > bound * (1 + 1e-9)).any()):
            return report(Verdict(name, False, f"where a feature's batch variance is as small as "
                                   f"eps, |dx| exceeds |gamma| s |dout| {note}, the most BN's "
                                   "Jacobian (gamma s times a projection) allows: "
                                   "s = 1 / sqrt(var + eps) must include eps, as in the forward "
                                   "pass"), verbose)
    return report(Verdict(name, True, "dx sums to zero over the batch, is orthogonal to xhat "
                           "when eps = 0 (and off it by the eps term when eps > 0), vanishes "
                           "for dout = ones and doubles with gamma (each to within "
                           f"{tol:.0e} of the terms that cancel)"), verbose)


#: Where the scales a that check_scale_answers draws from its seed lie (log-uniform), and how
#: far (in log10) each stays from 1, from the default a = 4 and from the other draws, so that
#: an answer written for one scale cannot pass at another.
SCALE_RANGE: tuple[float, float] = (0.1, 10.0)
SCALE_GAP = 0.1
DRAWN_SCALES = 2


def drawn_scales(seed: int, count: int = DRAWN_SCALES) -> tuple[float, ...]:
    """``count`` scales a > 0 drawn from ``seed`` (log-uniform over :data:`SCALE_RANGE`, three
    significant digits), each at least :data:`SCALE_GAP` (in log10) from 1, from 4 and from
    each other: the other inputs a hidden test of ``check_scale_answers`` uses."""
    seed = check_int(seed, "seed", 0)
    count = check_int(count, "count", 1, 5)
    g = torch.Generator().manual_seed(seed)
    low, high = (math.log10(v) for v in SCALE_RANGE)
    out: list[float] = []
    while len(out) < count:
        a = float(f"{10 ** (low + (high - low) * float(torch.rand(1, generator=g))):.3g}")
        if all(abs(math.log10(a / b)) >= SCALE_GAP for b in (1.0, 4.0, *out)):
            out.append(a)
    return tuple(out)


def _measured_factors(a: float, seed: int) -> dict[str, float]:
    """The four factors of SCALE_QUANTITIES, measured on a random layer (eps = 0) chosen by
    ``seed`` when its weight W becomes a W."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left alone
        torch.manual_seed(seed + 1)
        layer = linear_bn_layer(6, 4, eps=0.0)
    u = torch.randn(32, 6, generator=g, dtype=torch.float64)
    upstream = torch.randn(32, 4, generator=g, dtype=torch.float64)
    base = scaled_weight_gradients(layer, u, upstream, 1.0)
    scaled = scaled_weight_gradients(layer, u, upstream, a)
    w = layer[0].weight.detach()
    # small, so that the angle a step turns a row is proportional to the rate (the scaled
    # rows turn 1 / a^2 times as far: smaller still for a < 1)
    lr = 1e-6 * min(a, 1.0) ** 2
    return {
        "output": float(scaled["out"].norm() / base["out"].norm()),
        "grad_input": float(scaled["grad_input"].norm() / base["grad_input"].norm()),
        "grad_weight": float(scaled["grad_weight"].norm() / base["grad_weight"].norm()),
        # the effective learning rate, measured: how far one SGD step turns each weight row
        "effective_lr": float((_turn(a * w, scaled["grad_weight"], lr)
                               / _turn(w, base["grad_weight"], lr)).mean()),
    }


@gradable
def check_scale_answers(answers: Mapping[str, float] | Callable[[float], Mapping[str, float]],
                        a: float | None = 4.0, rtol: float = 1e-6, verbose: bool = True,
                        seed: int = 500) -> Verdict:
    """Compare predicted factors with measured ones when the weight W before BN becomes a W.

    ``answers`` maps each of ``SCALE_QUANTITIES`` to a number: by what factor
    BN's output, the gradient with respect to the layer's input u, the
    gradient with respect to the weight (as a norm) and the effective learning
    rate ``lr / |w|^2`` change. Or it is a function of ``a`` that returns that
    dict, called with each scale tried. They are measured on a random layer with
    eps = 0, chosen by ``seed`` (the factors do not depend on it; another seed is
    another layer). ``a=None`` tries the scales :func:`drawn_scales` draws from
    ``seed`` instead of one given ``a`` (a function is needed then): the hidden
    tests' other inputs, which an answer written for ``a = 4`` alone fails.
    """
    name = "check_scale_answers"
    if a is None:
        if not callable(answers):
            return report(Verdict(name, False, "answers must be a function of a that returns "
                                   "the dict of factors: it is tried at scales other than 4"),
                          verbose)
        scales = drawn_scales(seed)
    else:
        scales = (check_positive(a, "a"),)
    for scale in scales:
        given = answers
        where = f"with a = {scale:g}"
        if callable(answers):
            given = call_learner(name, answers, scale, verbose=verbose,
                                 who="your function", note=f"({where})")
            if isinstance(given, Verdict):
                return given
        if not isinstance(given, Mapping):
            return report(Verdict(name, False, "answers must be a dict with keys "
                                   f"{', '.join(SCALE_QUANTITIES)}"
                                   + (f" (your function returned {type(given).__name__} "
                                      f"{where})" if callable(answers) else "")), verbose)
        missing = [k for k in SCALE_QUANTITIES if k not in given]
        if missing:
            return report(Verdict(name, False, f"answers has no {', '.join(missing)}"), verbose)
        measured = _measured_factors(scale, seed)
        for key in SCALE_QUANTITIES:
            value = given[key]
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                return report(Verdict(name, False, f"answers[{key!r}] must be a number, got "
                                       f"{type(value).__name__}"), verbose)
            if abs(value - measured[key]) > rtol * abs(measured[key]):
                reason = _scale_reason(key, value, measured[key], scale)
                return report(Verdict(name, False, f"{key}: not the factor measured {where}. "
                                       f"Hint: {reason}"), verbose)
    shown = " and ".join(f"{s:g}" for s in scales)
    return report(Verdict(name, True, f"all four factors match the ones measured with a = "
                           f"{shown} (relative tolerance {rtol:.0e})"), verbose)


_SCALE_REASONS = {
    "output": "BN subtracts the batch mean and divides by the batch standard deviation; what "
              "do both do to a positive factor on their input?",
    "grad_input": "the function of u is the same for every a > 0; so is its derivative",
    "grad_weight": "L(a W) = L(W) for every a > 0: differentiate both sides with respect to W "
                   "and compare the gradient at a W with the one at W",
    "effective_lr": "the direction of a row turns by about lr |g| / |w|; how do |g| and |w| "
                    "each change with a?",
}


def _scale_reason(key: str, value: float, measured: float, a: float) -> str:
    """A hint for a wrong scale factor that does not give the factor away."""
    reason = _SCALE_REASONS[key]
    if measured != 0 and abs(value * measured - 1) < 1e-6 and abs(measured - 1) > 1e-6:
        # the reciprocal of the factor: name the reasoning, not the direction, which with
        # the learner's own number would give the factor away
        return f"check how each piece scales with a, one at a time. {reason}"
    return reason


JACOBIAN_SIZES: tuple[int, ...] = (4, 9, 16)
JACOBIAN_TOL = 1e-10


def _jacobian_hint(got: torch.Tensor, x: torch.Tensor, gamma: float, eps: float) -> str:
    """Name the usual mistake when ``got`` equals a known wrong Jacobian."""
    m = len(x)
    var = x.var(unbiased=False)
    s = 1 / torch.sqrt(var + eps)
    xhat = (x - x.mean()) * s
    eye, ones = torch.eye(m, dtype=x.dtype), torch.ones(m, m, dtype=x.dtype) / m
    centred = x - x.mean()
    unbiased = x.var(unbiased=True) + eps
    wrong = {
        "the term -xhat xhat^T / m is missing: the variance depends on x too":
            gamma * s * (eye - ones),
        "the term -1 1^T / m is missing: the mean depends on x too":
            gamma * s * (eye - torch.outer(xhat, xhat) / m),
        "s must include eps: s = 1 / sqrt(var + eps)":
            gamma / torch.sqrt(var) * (eye - ones - torch.outer(centred, centred) / var / m),
        "use the biased batch variance (divide by m), as Algorithm 1 does":
            gamma / torch.sqrt(unbiased) * (eye - ones - torch.outer(centred, centred)
                                            / unbiased / m),
        "the factor gamma is missing: y = gamma * xhat + beta, so every entry of dy/dx carries "
        "gamma": s * (eye - ones - torch.outer(xhat, xhat) / m),
        "the factor s = 1 / sqrt(var + eps) is missing: xhat = s (x - mu), so every entry of "
        "dxhat/dx carries s": gamma * (eye - ones - torch.outer(xhat, xhat) / m),
        "the factor gamma * s is missing: the bracket alone is dxhat/dx divided by s, and y "
        "scales xhat by gamma": eye - ones - torch.outer(xhat, xhat) / m,
    }
    for hint, matrix in wrong.items():
        if gradcheck.relative_error(got, matrix) < 1e-8:
            return f"; hint: {hint}"
    return ""


@gradable
def check_bn_jacobian(fn: Callable, sizes: Sequence[int] = JACOBIAN_SIZES,
                      tol: float = JACOBIAN_TOL, verbose: bool = True, seed: int = 600) -> Verdict:
    """Check ``fn(x, gamma, eps)``, BN's Jacobian ``dy/dx`` over one feature.

    ``x`` is a float64 batch column of ``m`` values (one case per entry of
    ``sizes``, cycling through eps = 0 and eps > 0 and values of gamma other
    than 1); the answer must be the ``(m, m)`` matrix that
    ``torch.func.jacrev`` gives through ``reference.forward``, to relative
    error ``tol`` (against the largest entry, since many entries are small).
    """
    name = "check_bn_jacobian"
    cases = ((1.0, 0.0), (-0.7, 0.5), (2.5, 1e-5))
    for i, m in enumerate(sizes):
        if isinstance(m, bool) or not isinstance(m, int) or m < 3:
            raise ValueError(f"sizes must be ints >= 3, got {m!r}")
        gamma, eps = cases[i % len(cases)]
        g = torch.Generator().manual_seed(seed + i)
        x = torch.randn(m, generator=g, dtype=torch.float64) * 2 + 1
        note = f"(m = {m}, gamma = {gamma}, eps = {eps})"
        want = bn_jacobian.autograd_bn_jacobian(x, gamma, eps)
        got = call_learner(name, fn, x.clone(), gamma, eps, verbose=verbose, note=note)
        if isinstance(got, Verdict):
            return got
        if not isinstance(got, torch.Tensor):
            return report(Verdict(name, False, f"the Jacobian should be a torch.Tensor, got "
                                   f"{type(got).__name__} {note}"), verbose)
        if got.shape != (m, m):
            return report(Verdict(name, False, f"the Jacobian has shape {tuple(got.shape)}, "
                                   f"expected {(m, m)} {note}"), verbose)
        if got.dtype != torch.float64:
            return report(Verdict(name, False, f"the Jacobian has dtype {got.dtype}, expected "
                                   f"torch.float64 (keep x's dtype) {note}"), verbose)
        err = gradcheck.relative_error(got, want)
        if not err <= tol:
            return report(Verdict(name, False, f"off by relative error {err:.2e} (threshold "
                                   f"{tol:.0e}) {note}" + _jacobian_hint(got, x, gamma, eps)),
                          verbose)
    return report(Verdict(name, True, f"matches autograd's Jacobian to relative error {tol:.0e} "
                           f"for m = {', '.join(map(str, sizes))}, with and without eps"),
                  verbose)


def _update_ratio_case(seed: int) -> tuple[nn.Module, nn.Module, dict[str, float]]:
    """Two copies of a small MLP whose Linear weights differ by known amounts."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # nn.Linear's own init draws from the global RNG
        before = nn.Sequential(nn.Linear(6, 5), nn.BatchNorm1d(5), nn.ReLU(), nn.Linear(5, 4),
                               nn.ReLU(), nn.Linear(4, 3)).double()
    with torch.no_grad():
        for module in before:
            if isinstance(module, nn.Linear):
                module.weight.copy_(torch.randn(module.weight.shape, generator=g,
                                                dtype=torch.float64))
                module.bias.copy_(torch.randn(module.bias.shape, generator=g, dtype=torch.float64))
    after = copy.deepcopy(before)
    want = {}
    linears = [name for name, module in after.named_modules() if isinstance(module, nn.Linear)]
    with torch.no_grad():
        for name, module in after.named_modules():
            if isinstance(module, nn.Linear):
                # a known relative change per layer, a different one for each
                factor = 10.0 ** -(linears.index(name) + 1)
                step = torch.randn(module.weight.shape, generator=g, dtype=torch.float64)
                step *= factor * module.weight.norm() / step.norm()
                module.weight.add_(step)
                module.bias.add_(1.0)  # biases are not part of the ratio
                want[name] = factor
        after[1].running_mean.add_(5.0)  # nor are buffers
    return before, after, want


def _update_ratio_hint(number: float, old: nn.Linear, new: nn.Linear,
                       want: Mapping[str, float], got: Mapping[str, object],
                       layer: str) -> str:
    """Name the near miss: another norm, the wrong denominator, biases, swapped layers."""
    w0, w1 = old.weight.detach(), new.weight.detach()
    step = w1 - w0
    rows = (step.norm(dim=1) / w0.norm(dim=1))
    near = {
        "the biases were included: the ratio is over the weight matrix alone":
            float(torch.cat([step.flatten(), (new.bias - old.bias).detach()]).norm()
                  / torch.cat([w0.flatten(), old.bias.detach()]).norm()),
        "divide by the weights before the step, |W_before|, not after":
            float(step.norm() / w1.norm()),
        "a ratio of standard deviations is not a ratio of norms: the weights' mean counts "
        "too (use the Frobenius norm, .norm())": float(step.std() / w0.std()),
        "this is a mean over rows; the ratio is one number per matrix, the Frobenius norm of "
        "the change over that of the weights": float(rows.mean()),
        "this is a root mean square over rows; the ratio is one number per matrix, the "
        "Frobenius norm of the change over that of the weights": float(rows.pow(2).mean().sqrt()),
    }
    for reason, value in near.items():
        if abs(number - value) <= 1e-6 * abs(value):
            return f". Hint: {reason}"
    for other, value in want.items():
        if other != layer and abs(number - value) <= 1e-6 * value:
            return ". Hint: this is another layer's ratio: key each ratio by its own layer's name"
    return ""


@gradable
def check_update_ratio(fn: Callable, tol: float = 1e-9, verbose: bool = True,
                       seed: int = 700) -> Verdict:
    """Check ``fn(before, after)``: for every ``nn.Linear`` of two copies of a model,
    ``|W_after - W_before|_F / |W_before|_F``, keyed by the name from ``named_modules()``.

    The copies differ by known relative amounts in each weight, and also in
    biases and BN buffers, which must not count; the models must be left
    unchanged.
    """
    name = "check_update_ratio"
    before, after, want = _update_ratio_case(seed)
    snapshot = {k: v.clone() for k, v in before.state_dict().items()}
    got = call_learner(name, fn, before, after, verbose=verbose)
    if isinstance(got, Verdict):
        return got
    if not isinstance(got, Mapping):
        return report(Verdict(name, False, f"return a dict of layer name -> ratio, got "
                               f"{type(got).__name__}"), verbose)
    if set(got) != set(want):
        return report(Verdict(name, False, f"expected one entry per nn.Linear, named as in "
                               f"named_modules(): {sorted(want)}; got {sorted(got)}"), verbose)
    if any(not torch.equal(snapshot[k], v) for k, v in before.state_dict().items()):
        return report(Verdict(name, False, "your function changed the model passed as before"),
                      verbose)
    for layer, value in want.items():
        try:
            number = float(got[layer])
        except (TypeError, ValueError):
            return report(Verdict(name, False, f"the ratio for {layer!r} should be a number, got "
                                   f"{type(got[layer]).__name__}"), verbose)
        if not abs(number - value) <= tol * value:
            hint = _update_ratio_hint(number, before.get_submodule(layer),
                                      after.get_submodule(layer), want, got, layer)
            return report(Verdict(name, False, f"layer {layer!r}: not the relative change of its "
                                   f"weight{hint}"), verbose)
    return report(Verdict(name, True, f"all {len(want)} ratios match to relative error {tol:.0e}; "
                           "biases and buffers left out"), verbose)
