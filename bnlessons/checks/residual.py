"""Checks for the residual chapter: variance predictions, SkipInit blocks, stable learning rates."""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import torch
from torch import nn

from bnlessons._own_work import answers
from bnlessons._validate import check_int
from bnlessons.checks.common import Verdict, call_learner, compare, gradable, not_a_number, report
from bnlessons.train import History

PREDICTION_TOL = 1e-8
PREDICTION_CASES: tuple[tuple[str, int, float], ...] = (
    ("linear", 10, 1.0), ("linear", 100, 0.1), ("linear", 5, 0.5),
    ("bn-linear", 10, 1.0), ("bn-linear", 100, 0.1), ("bn-linear", 7, 2.0),
)


@answers("check_variance_prediction")
def predicted_variance(design: str, depth: int, alpha: float) -> torch.Tensor:
    """Var(x_l) for l = 0..depth when Var(x_0) = 1, at initialisation.

    ``linear``: Var(x_l) = (1 + alpha^2) Var(x_{l-1}); ``bn-linear``: the
    branch reads BN(x), of variance 1, so Var(x_l) = Var(x_{l-1}) + alpha^2.
    """
    l = torch.arange(depth + 1, dtype=torch.float64)
    if design == "linear":
        return (1.0 + alpha**2) ** l
    if design == "bn-linear":
        return 1.0 + alpha**2 * l
    raise ValueError(f"design must be 'linear' or 'bn-linear', got {design!r}")


def _variance_hint(got: torch.Tensor, design: str, depth: int, alpha: float,
                   tol: float) -> str:
    """The reasoning behind a wrong variance prediction, from the slips that give it."""
    l = torch.arange(depth + 1, dtype=torch.float64)
    slips = {
        "a scalar alpha scales a variance by alpha**2, not alpha":
            (1 + abs(alpha)) ** l if design == "linear" else 1 + abs(alpha) * l,
        "without normalisation the branch reads x_{l-1} itself, so its variance is "
        "Var(x_{l-1}) times alpha**2: each block multiplies the variance, it does not add "
        "a constant": 1 + alpha**2 * l,
        "with BN first the branch reads BN(x_{l-1}), of variance 1 whatever Var(x_{l-1}) is: "
        "each block adds alpha**2, it does not multiply": (1 + alpha**2) ** l,
        "Var(x_0) = 1 is the first entry: count the blocks from l = 1":
            predicted_variance(design, depth + 1, alpha)[1:],
        "the skip path keeps x_{l-1}: Var(x_l) = Var(x_{l-1}) + Var(alpha f_l), not the "
        "branch's variance alone": alpha**2 * torch.ones_like(l),
    }
    for hint, wrong in slips.items():
        if torch.allclose(got, wrong, rtol=tol, atol=0):
            return f": {hint}"
    return ""


@gradable
def check_variance_prediction(fn: Callable, cases: Sequence[tuple[str, int, float]] =
                              PREDICTION_CASES, tol: float = PREDICTION_TOL,
                              verbose: bool = True) -> Verdict:
    """Check ``fn(design, depth, alpha)`` -> [Var(x_0), ..., Var(x_depth)] (float64).

    ``design`` is ``"linear"`` (a variance-preserving linear branch, no
    normalisation) or ``"bn-linear"`` (the branch normalises its input with
    BN first); every branch is multiplied by ``alpha``, and Var(x_0) = 1.
    Passes if every case matches the derivation to relative error ``tol``; a
    wrong answer gets the step of the reasoning it skipped, never the expected
    values.
    """
    name = "check_variance_prediction"
    for design, depth, alpha in cases:
        note = f"(design={design!r}, depth={depth}, alpha={alpha:g})"
        want = predicted_variance(design, depth, alpha)
        got = call_learner(name, fn, design, depth, alpha, verbose=verbose, note=note)
        if isinstance(got, Verdict):
            return got
        if isinstance(got, torch.Tensor) and got.is_floating_point() and got.dtype != want.dtype:
            got = got.double()
        problem = compare("Var(x_l)", got, want, tol, note, show_expected=False)
        if problem:
            if isinstance(got, torch.Tensor) and got.shape == want.shape:
                bad = int(((got.double() - want).abs() > tol * want.abs()).nonzero()[0])
                problem += f"; first wrong at l = {bad}"
                problem += _variance_hint(got.double(), design, depth, alpha, tol)
            elif isinstance(got, torch.Tensor) and got.shape == (depth,):
                problem += ("; the list starts at l = 0 with Var(x_0) = 1: depth + 1 values")
            return report(Verdict(name, False, problem), verbose)
    return report(Verdict(name, True, f"all {len(cases)} predictions match the derivation "
                           f"(relative error {tol:.0e})"), verbose)


def _scalar_params(block: nn.Module) -> list[tuple[str, nn.Parameter]]:
    return [(n, p) for n, p in block.named_parameters() if p.numel() == 1]


@gradable
def check_skipinit_block(make_block: Callable[[int], nn.Module], width: int = 16,
                         verbose: bool = True, seed: int = 7) -> Verdict:
    """Check ``make_block(width)``: a residual block ``x + alpha * f(x)``, SkipInit style.

    Runs the block in float64 on a random (32, width) batch and checks that
    it has one learnable scalar alpha starting at 0, that it is then exactly
    the identity, that at that point the loss gradient reaches alpha but not
    the branch's weights, and that its output is ``x + alpha * f(x)`` for
    other values of alpha (linear in alpha, with a branch that is not zero);
    that the skip path carries x for any alpha (with every other parameter
    at zero and alpha = 1 the block returns x); and that the branch starts
    with the ReLU (an all-negative input, with the bias at zero, leaves it
    silent).
    ``seed`` chooses the random input and upstream gradient.
    """
    name = "check_skipinit_block"
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, width, generator=g, dtype=torch.float64)
    dout = torch.randn(32, width, generator=g, dtype=torch.float64)
    # The learner's layers draw their initial weights from the global
    # generator; fork it so that calling the check changes nothing.
    with torch.random.fork_rng(devices=[]):
        block = call_learner(name, make_block, width, verbose=verbose,
                             who=f"make_block({width})")
    if isinstance(block, Verdict):
        return block
    if not isinstance(block, nn.Module):
        return report(Verdict(name, False, "make_block must return an nn.Module, got "
                               f"{type(block).__name__}"), verbose)
    block = block.double().train()
    scalars = _scalar_params(block)
    zeros = [(n, p) for n, p in scalars if float(p.detach()) == 0.0]
    if not zeros:
        found = ", ".join(f"{n}={float(p.detach()):g}" for n, p in scalars) or "none"
        return report(Verdict(name, False, "no learnable scalar (a parameter with one element) "
                               f"starts at 0; scalar parameters found: {found}"), verbose)
    if len(zeros) > 1:
        return report(Verdict(name, False, "more than one scalar parameter starts at 0 ("
                               + ", ".join(n for n, _ in zeros) + "); use exactly one alpha"),
                      verbose)
    alpha_name, alpha = zeros[0]
    out = call_learner(name, block, x, verbose=verbose, who="the forward pass")
    if isinstance(out, Verdict):
        return out
    problem = compare("output at initialisation", out.detach(), x, 1e-12,
                      "(with alpha = 0 the block must return its input unchanged)")
    if problem:
        return report(Verdict(name, False, problem), verbose)
    block.zero_grad(set_to_none=True)
    (out * dout).sum().backward()
    if alpha.grad is None or float(alpha.grad.abs()) == 0.0:
        return report(Verdict(name, False, f"the gradient reaching {alpha_name} at "
                               "initialisation is zero or missing: alpha must multiply the "
                               "branch's output"), verbose)
    for n, p in block.named_parameters():
        if p is alpha or p.numel() == 1:
            continue
        if p.grad is not None and float(p.grad.abs().max()) > 0.0:
            return report(Verdict(name, False, f"{n} gets a non-zero gradient while alpha = 0: "
                                   "alpha should multiply the whole branch, after its last "
                                   "layer"), verbose)
    with torch.no_grad():
        deltas = []
        for value in (0.5, 1.0):
            alpha.fill_(value)
            deltas.append(block(x) - x)
        alpha.fill_(0.0)
    if float(deltas[1].abs().max()) == 0.0:
        return report(Verdict(name, False, "with alpha = 1 the block still returns its input: "
                               "the branch f(x) is identically zero"), verbose)
    problem = compare("output - x at alpha = 1", deltas[1], 2.0 * deltas[0], 1e-10,
                      "(compared with twice the change at alpha = 0.5: it must be alpha * f(x))")
    if problem:
        return report(Verdict(name, False, problem), verbose)
    probes = call_learner(name, _skip_and_relu_probes, block, alpha, x, verbose=verbose,
                          who="the forward pass")
    if isinstance(probes, Verdict):
        return probes
    silenced, negative, out_negative = probes
    if not torch.equal(silenced, x):
        return report(Verdict(name, False, "with every parameter but alpha at zero and "
                               "alpha = 1 the block should return x unchanged: the skip path "
                               "carries x whatever alpha is (x + alpha * f(x), not a mix such "
                               "as (1 - alpha) x + alpha f(x))"), verbose)
    if not torch.equal(out_negative, negative):
        return report(Verdict(name, False, "for an input whose values are all negative, with "
                               "the linear layer's bias at zero and alpha = 1, ReLU(x) is zero "
                               "and the block should return x: is the ReLU missing, or applied "
                               "after the linear layer instead of before it?"), verbose)
    return report(Verdict(name, True, f"{alpha_name} starts at 0, the block starts as the "
                           "identity, only alpha gets a gradient at first, and the output is "
                           "x + alpha * f(x)"), verbose)


def _skip_and_relu_probes(block: nn.Module, alpha: nn.Parameter,
                          x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """The block at alpha = 1 (a) with every other parameter at zero, on ``x``; (b) with
    its vector parameters (biases) at zero, on ``-|x|``. Parameters are restored."""
    saved = [p.detach().clone() for p in block.parameters()]
    try:
        with torch.no_grad():
            for p in block.parameters():
                p.zero_()
            alpha.fill_(1.0)
            silenced = block(x)
            for p, s in zip(block.parameters(), saved):
                p.copy_(s)
                if p.dim() == 1 and p is not alpha:
                    p.zero_()
            alpha.fill_(1.0)
            negative = -x.abs()
            out_negative = block(negative)
    finally:
        with torch.no_grad():
            for p, s in zip(block.parameters(), saved):
                p.copy_(s)
    return silenced, negative, out_negative


def _fake_history(diverged_at: Optional[int], acc: float) -> History:
    h = History()
    h.steps, h.test_acc, h.test_loss = [0, 100], [0.1, acc], [2.3, 0.5]
    if diverged_at is not None:
        h.steps, h.test_acc, h.test_loss = [0], [0.1], [2.3]
        h.diverged_at = diverged_at
    return h


STABLE_LR_CASES: tuple[tuple[tuple[float, ...], float, float], ...] = (
    # (learning rates to try, largest lr that trains, lr from which training diverges)
    ((0.01, 0.03, 0.1, 0.3, 1.0), 0.1, 0.3),
    ((1.0, 0.1, 0.01, 0.3, 0.03), 0.1, 0.3),  # not sorted
    ((0.05, 0.1, 0.2, 0.5, 1.0, 2.0), 1.0, 4.0),  # 2.0 stays finite but does not learn
    ((0.1, 0.2), 0.05, 0.1),  # nothing trains
    ((0.5,), 1.0, 2.0),  # a single rate that trains
)


@gradable
def check_largest_stable_lr(fn: Callable, min_accuracy: float = 0.5, verbose: bool = True,
                            cases: Sequence[tuple[tuple[float, ...], float, float]] =
                            STABLE_LR_CASES) -> Verdict:
    """Check ``fn(train_at, lrs, min_accuracy)`` -> the largest lr in ``lrs`` that trains.

    ``train_at(lr)`` returns a ``train.History``; a run trained if it never
    went non-finite and ended with test accuracy >= ``min_accuracy``. ``fn``
    must return ``None`` when no learning rate trains. The check feeds
    simulated runs (instant, no real training), including unsorted rates and
    a rate whose loss stays finite but which learns nothing. ``cases`` holds
    ``(rates to try, largest rate that trains, rate from which runs diverge)``.
    """
    name = "check_largest_stable_lr"
    for lrs, good_up_to, diverges_from in cases:
        def train_at(lr: float, good=good_up_to, bad=diverges_from) -> History:
            if lr >= bad:
                return _fake_history(diverged_at=3, acc=0.1)
            return _fake_history(None, 0.9 if lr <= good else 0.2)

        trainable = [lr for lr in lrs if lr <= good_up_to]
        want = max(trainable) if trainable else None
        note = f"(lrs={list(lrs)}, runs train up to lr={good_up_to:g})"
        got = call_learner(name, fn, train_at, list(lrs), min_accuracy, verbose=verbose,
                           note=note)
        if isinstance(got, Verdict):
            return got
        if want is None and got is not None:
            return report(Verdict(name, False, f"no rate trains, so the answer is None; got "
                                   f"{got!r} {note}"), verbose)
        if want is not None and (got is None or isinstance(got, bool)
                                 or not isinstance(got, (int, float)) or got != want):
            hint = ""
            if isinstance(got, (int, float)) and got > good_up_to:
                hint = ("; that run stays finite but does not reach min_accuracy"
                        if got < diverges_from else "; that run diverges")
            return report(Verdict(name, False, f"expected {want:g}, got {got!r} {note}{hint}"),
                          verbose)
    return report(Verdict(name, True, f"right answer on all {len(cases)} simulated "
                           "sweeps (unsorted rates, finite-but-useless runs, nothing stable)"),
                  verbose)


FIXUP_DEPTHS: tuple[int, ...] = (2, 3, 4, 6)


@gradable
def check_fixup_exponent(fn: Callable, depths: Sequence[int] = FIXUP_DEPTHS,
                         verbose: bool = True) -> Verdict:
    """Check ``fn(k)`` -> p, the exponent in Fixup's rescaling c = D**(-p) of the k - 1
    layers before a branch's zero-initialised last layer, for branches of k layers.

    The right answer is 1 / (2k - 2) (Zhang et al. 2019): the last layer's first
    update is proportional to its input, of size c**(k-1), and that update acts on
    the same input, so a branch's output moves by c**(2k-2); D branches move it by
    D c**(2k-2), which stays independent of D for c = D**(-1/(2k-2)). Plausible
    wrong answers get the step of this argument they skipped, never the value.
    ``depths`` are the values of k tried (each at least 2).
    """
    name = "check_fixup_exponent"
    depths = [check_int(k, f"depths[{i}]", 2) for i, k in enumerate(depths)]
    for k in depths:
        note = f"(k = {k})"
        got = call_learner(name, fn, k, verbose=verbose, note=note)
        if isinstance(got, Verdict):
            return got
        what = not_a_number(got)
        if what is not None:
            return report(Verdict(name, False, f"return one number, the exponent p in "
                                   f"c = D**(-p), got {what} {note}"), verbose)
        got = float(got)
        if abs(got - 1 / (2 * k - 2)) <= 1e-12:
            continue
        slips = {
            1 / (k - 1): "the last layer's update is proportional to its input, c**(k-1); "
                         "the change in the branch's output is that update applied to the "
                         "same input, so c**(k-1) enters twice",
            1 / (2 * k): "only the k - 1 layers before the last one carry c: the last layer "
                         "starts at zero and is not rescaled",
            0.5: "that is 1/sqrt(D) for every k: the power of c in a branch's change "
                 "grows with the number of rescaled layers",
            -1 / (2 * k - 2): "c = D**(-p) shrinks with depth for p > 0: check the sign",
        }
        hint = next((h for v, h in slips.items() if abs(got - v) <= 1e-12),
                    "write the change of one branch's output after one step as a power of "
                    "c, sum it over D branches, and ask which c keeps the sum independent "
                    "of D")
        return report(Verdict(name, False, f"{got:.6g} is not the exponent {note}: {hint}"),
                      verbose)
    return report(Verdict(name, True, f"the exponent is right for k = "
                           f"{', '.join(map(str, depths))}"), verbose)
