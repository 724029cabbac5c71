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
from bnlessons._validate import per_channel, reduce_dims, values_per_channel
from bnlessons.bn_math import gradcheck
from bnlessons.bn_math import jacobian as bn_jacobian
from bnlessons.bn_math.scale_invariance import linear_bn_layer, scaled_weight_gradients
from bnlessons.checks.common import Verdict, call_learner, compare, gradable, report

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
    dims = reduce_dims(x)
    shift = per_channel(beta, x)
    g, w = got.double() - shift, want.double() - shift
    factor = (g * w).sum(dim=dims) / (w * w).sum(dim=dims)
    if gradcheck.relative_error(g, w * per_channel(factor, x)) > 1e-6:
        return ""  # not a pure rescaling
    common = float(factor.mean())
    if gradcheck.relative_error(factor, torch.full_like(factor, common)) > 1e-6:
        return ""  # a different factor for each feature
    m = values_per_channel(x)
    hint = f". Every feature of out - beta is the reference's times {common:.6f}"
    if abs(common - math.sqrt((m - 1) / m)) < 1e-4:
        hint += (f" = sqrt((m-1)/m) for m = {m}: you normalised with the unbiased variance "
                 "(x.std(0) and x.var(0) divide by m - 1); Algorithm 1 uses the biased one, "
                 "x.var(0, unbiased=False)")
    return hint


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
        problem = compare("out", got, want, tol, note)
        if problem:
            hint = _scale_hint(got, want, beta, x) if not problem.startswith(
                ("out should", "out has")) else ""
            return report(Verdict(name, False, problem + hint), verbose)
    shown = ", ".join(str(tuple(s)) for s in shapes)
    return report(Verdict(name, True, f"output matches the reference to elementwise relative error "
                           f"{tol:.0e} for shapes {shown}"), verbose)


@gradable
def check_backward(forward_fn: Callable, backward_fn: Callable,
                   shapes: Sequence[Sequence[int]] = SHAPES_2D, eps: float = 1e-5,
                   tol: float = BACKWARD_TOL, verbose: bool = True,
                   seed: int = 200) -> Verdict:
    """Check a ``forward(x, gamma, beta, eps) -> (out, cache)`` and
    ``backward(dout, cache) -> (dx, dgamma, dbeta)`` pair.

    The upstream gradient ``dout`` is random. Passes if all three gradients
    match the reference to elementwise relative error ``tol`` for every shape;
    ``seed`` chooses the random inputs.
    """
    name = "check_backward"
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
            problem = compare(label, g, w, tol, note)
            if problem:
                return report(Verdict(name, False, problem), verbose)
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
                          shapes: Sequence[Sequence[int]] = SHAPES_2D, eps: float = 1e-5,
                          tol: float = BACKWARD_TOL, verbose: bool = True,
                          seed: int = 300) -> Verdict:
    """Check a backward pass that returns the gradient at every node of the graph.

    ``forward_fn(x, gamma, beta, eps)`` returns ``(out, cache)`` and
    ``backward_fn(dout, cache)`` returns a dict with the keys ``STAGED_KEYS``.
    Each gradient is compared, in the order backpropagation computes them,
    with autograd's gradient at that node (``gradcheck.graph_gradients``); the
    first one that is off is named, with the chain-rule step that produces it.
    ``seed`` chooses the random inputs.
    """
    name = "check_staged_backward"
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
            problem = compare(key, got[key], want[_NODE[key]], tol, note)
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


def _dx_three_ways(forward_fn: Callable, backward_fn: Callable, x: torch.Tensor,
                   gamma: torch.Tensor, beta: torch.Tensor,
                   dout: torch.Tensor) -> tuple[object, object, object]:
    """The learner's dx for ``dout``, for ``dout`` with eps = 0, and for ``dout = ones``."""
    _, cache = forward_fn(x.clone(), gamma.clone(), beta.clone(), 1e-5)
    dx = backward_fn(dout.clone(), cache)[0]
    _, cache0 = forward_fn(x.clone(), gamma.clone(), beta.clone(), 0.0)
    dx0 = backward_fn(dout.clone(), cache0)[0]
    dx_ones = backward_fn(torch.ones_like(dout), cache)[0]
    return dx, dx0, dx_ones


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
    """Check three facts about BN's input gradient on a learner's backward pass.

    1. ``dx`` sums to zero over the batch, for each feature;
    2. with ``eps = 0``, ``dx`` is orthogonal to ``xhat``, feature by feature;
    3. for ``dout = ones`` (the loss ``sum(out)``) ``dx`` is zero everywhere.

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
        result = call_learner(name, _dx_three_ways, forward_fn, backward_fn, x, gamma, beta,
                              dout, verbose=verbose, who="your code", note=note)
        if isinstance(result, Verdict):
            return result
        dx, dx0, dx_ones = result
        for label, got in (("dx", dx), ("dx (eps = 0)", dx0), ("dx (dout = ones)", dx_ones)):
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
    return report(Verdict(name, True, "dx sums to zero over the batch, is orthogonal to xhat "
                           "when eps = 0, and vanishes for dout = ones (each to within "
                           f"{tol:.0e} of the terms that cancel)"), verbose)


@gradable
def check_scale_answers(answers: Mapping[str, float], a: float = 4.0, rtol: float = 1e-6,
                        verbose: bool = True, seed: int = 500) -> Verdict:
    """Compare predicted factors with measured ones when the weight W before BN becomes a W.

    ``answers`` maps each of ``SCALE_QUANTITIES`` to a number: by what factor
    BN's output, the gradient with respect to the layer's input u, the
    gradient with respect to the weight (as a norm) and the effective learning
    rate ``lr / |w|^2`` change. They are measured on a random layer with eps = 0,
    chosen by ``seed`` (the factors do not depend on it; another seed is another layer).
    """
    name = "check_scale_answers"
    if not isinstance(answers, Mapping):
        return report(Verdict(name, False, "answers must be a dict with keys "
                               f"{', '.join(SCALE_QUANTITIES)}"), verbose)
    missing = [k for k in SCALE_QUANTITIES if k not in answers]
    if missing:
        return report(Verdict(name, False, f"answers has no {', '.join(missing)}"), verbose)
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # the caller's random state is left alone
        torch.manual_seed(seed + 1)
        layer = linear_bn_layer(6, 4, eps=0.0)
    u = torch.randn(32, 6, generator=g, dtype=torch.float64)
    upstream = torch.randn(32, 4, generator=g, dtype=torch.float64)
    base = scaled_weight_gradients(layer, u, upstream, 1.0)
    scaled = scaled_weight_gradients(layer, u, upstream, a)
    w = layer[0].weight.detach()
    lr = 1e-6  # small, so that the angle a step turns a row is proportional to the rate
    measured = {
        "output": float(scaled["out"].norm() / base["out"].norm()),
        "grad_input": float(scaled["grad_input"].norm() / base["grad_input"].norm()),
        "grad_weight": float(scaled["grad_weight"].norm() / base["grad_weight"].norm()),
        # the effective learning rate, measured: how far one SGD step turns each weight row
        "effective_lr": float((_turn(a * w, scaled["grad_weight"], lr)
                               / _turn(w, base["grad_weight"], lr)).mean()),
    }
    for key in SCALE_QUANTITIES:
        value = answers[key]
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return report(Verdict(name, False, f"answers[{key!r}] must be a number, got "
                                   f"{type(value).__name__}"), verbose)
        if abs(value - measured[key]) > rtol * abs(measured[key]):
            return report(Verdict(name, False, f"{key}: you said {value:.6g}, but with a = {a:g} "
                                   f"the measured factor is {measured[key]:.6g}"), verbose)
    return report(Verdict(name, True, f"all four factors match the ones measured with a = {a:g} "
                           f"(relative tolerance {rtol:.0e})"), verbose)


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
    with torch.no_grad():
        for i, (name, module) in enumerate(after.named_modules()):
            if isinstance(module, nn.Linear):
                factor = 10.0 ** -(i % 3 + 1)  # a known relative change per layer
                step = torch.randn(module.weight.shape, generator=g, dtype=torch.float64)
                step *= factor * module.weight.norm() / step.norm()
                module.weight.add_(step)
                module.bias.add_(1.0)  # biases are not part of the ratio
                want[name] = factor
        after[1].running_mean.add_(5.0)  # nor are buffers
    return before, after, want


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
            hint = (" (the biases were included: use only .weight)"
                    if number > 2 * value else "")
            return report(Verdict(name, False, f"layer {layer!r}: got {number:.6g}, expected "
                                   f"{value:.6g}{hint}"), verbose)
    return report(Verdict(name, True, f"all {len(want)} ratios match to relative error {tol:.0e}; "
                           "biases and buffers left out"), verbose)
