"""Checks for chapter 4, placement: the dropout variance ratio (of one value and of a
weighted sum), a bias removed from before BN, a pre-activation block and a
causal-safe normalisation."""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch

from bnlessons.bn_math import gradcheck
from bnlessons.checks.common import Verdict, call_learner, compare, gradable, not_a_number, report
from bnlessons.placement.dropout import variance_ratio

RATIO_CASES: tuple[tuple[float, float, float], ...] = (
    (0.0, 1.0, 0.5), (0.3989, 0.3408, 0.5), (2.0, 0.5, 0.8), (-1.0, 4.0, 0.9), (0.5, 0.25, 1.0))


@gradable
def check_dropout_variance_ratio(fn: Callable, tol: float = 1e-9, verbose: bool = True,
                                 cases: Sequence[tuple[float, float, float]] = RATIO_CASES
                                 ) -> Verdict:
    """Check ``fn(c, v, p)``: Var_train / Var_test of inverted dropout (keep probability
    ``p``) on an input of mean ``c`` and variance ``v``, against the closed form on
    cases with and without a mean, and with nothing dropped (p = 1); ``cases`` holds
    the ``(c, v, p)`` triples tried."""
    name = "check_dropout_variance_ratio"
    for c, v, p in cases:
        got = call_learner(name, fn, c, v, p, verbose=verbose, note=f"(c={c}, v={v}, p={p})")
        if isinstance(got, Verdict):
            return got
        want = variance_ratio(c, v, p)
        what = not_a_number(got)
        if what is not None:
            return report(Verdict(name, False, f"return a number, got {what}"), verbose)
        got = float(got)
        if abs(got - want) > tol * max(1.0, abs(want)):
            hint = ""
            if abs(got - 1 / p) < 1e-9 * max(1.0, 1 / p) and c != 0:
                hint = ": 1/p is right only for an input of mean 0; the mean adds c**2 (1/p - 1)"
            return report(Verdict(name, False, f"for c={c}, v={v}, p={p} you gave {got:.6g}, "
                                   f"the ratio is {want:.6g}{hint}"), verbose)
    return report(Verdict(name, True, f"all {len(cases)} cases match "
                           "((c^2 + v)/p - c^2)/v"), verbose)


def _run_causal_norm(layer: torch.nn.Module, x: torch.Tensor, z: torch.Tensor,
                     scales: torch.Tensor, seed: int) -> tuple[Any, Any, dict[str, float]]:
    """The learner's layer in float64 training mode on ``z`` and on ``z * scales``, and
    how much a causal model built with it leaks on ``x``."""
    from bnlessons.placement.sequences import causal_model, leakage

    layer = layer.double().train()
    with torch.no_grad():
        out = layer(z)
        rescaled = layer(z * scales)
    model = causal_model(in_channels=4, channels=16, out_channels=3, norm=None, seed=seed,
                         make_norm=lambda c: copy.deepcopy(layer)).train()
    return out, rescaled, leakage(model, x, step=6)


@gradable
def check_causal_norm(make_norm: Callable, verbose: bool = True, seed: int = 31) -> Verdict:
    """Check ``make_norm(channels)``: a normalisation for (N, C, T) sequences that a causal
    model can use in training mode.

    Inside ``sequences.causal_model`` it must leak nothing (no output may move
    when later steps or other sequences change), and it must normalise: each
    position's output must not change when that position's channels are all
    multiplied by the same positive number. ``seed`` chooses the random inputs.
    """
    name = "check_causal_norm"
    who = "your normalisation"
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(6, 4, 12, generator=g, dtype=torch.float64) * 2 + 0.5
    with torch.random.fork_rng(devices=[]):
        layer = call_learner(name, make_norm, 16, verbose=verbose, who=who)
    if isinstance(layer, Verdict):
        return layer
    if not isinstance(layer, torch.nn.Module):
        return report(Verdict(name, False, f"make_norm must return an nn.Module, got "
                               f"{type(layer).__name__}"), verbose)
    z = torch.randn(6, 16, 12, generator=g, dtype=torch.float64) * 3 + 1
    scales = torch.rand(6, 1, 12, generator=g, dtype=torch.float64) * 4 + 0.25
    result = call_learner(name, _run_causal_norm, layer, x, z, scales, seed,
                          verbose=verbose, who=who)
    if isinstance(result, Verdict):
        return result
    out, rescaled, leak = result
    if not isinstance(out, torch.Tensor):
        return report(Verdict(name, False, f"the output should be a torch.Tensor, got "
                               f"{type(out).__name__}"), verbose)
    if out.shape != z.shape:
        return report(Verdict(name, False, f"the output has shape {tuple(out.shape)}, "
                               f"expected {tuple(z.shape)} (N, C, T)"), verbose)
    if leak["future"] > 1e-12:
        return report(Verdict(name, False, f"an output moved by {leak['future']:.2e} when only "
                               "later steps changed: the statistics mix time steps"), verbose)
    if leak["batch"] > 1e-12:
        return report(Verdict(name, False, f"a sequence's output moved by {leak['batch']:.2e} "
                               "when only other sequences changed: the statistics mix the "
                               "batch"), verbose)
    moved = gradcheck.relative_error(rescaled, out)
    if moved > 1e-3:  # an epsilon inside the normalisation may move it a little
        return report(Verdict(name, False, f"scaling one position's channels changed its "
                               f"output by {moved:.2e} (relative): it is not normalised over "
                               "the channels of each position"), verbose)
    return report(Verdict(name, True, "no leakage across steps or sequences, and each "
                           "position is normalised over its channels"), verbose)


def _run_preact_block(block: torch.nn.Module, linears: list[torch.nn.Linear],
                      norms: list[torch.nn.BatchNorm1d], x: torch.Tensor
                      ) -> tuple[Any, Any, list[tuple[str, torch.Tensor, torch.Tensor]]]:
    """The learner's block in training mode on ``x``: its output with the last linear layer
    at zero; then (that layer restored) its output and what each BN and linear layer saw
    and returned, in the order they ran; then one backward pass."""
    block.train()
    # The values are copied at once, before an in-place ReLU can change them.
    calls: list[tuple[str, torch.Tensor, torch.Tensor]] = []

    def record(kind: str) -> Callable:
        def hook(module: torch.nn.Module, inputs: tuple, output: torch.Tensor) -> None:
            calls.append((kind, inputs[0].detach().clone(), output.detach().clone()))
        return hook

    hooks = [m.register_forward_hook(record(kind))
             for kind, group in (("BN", norms), ("linear", linears)) for m in group]
    try:
        with torch.no_grad():
            saved = [p.detach().clone() for p in linears[-1].parameters()]
            for p in linears[-1].parameters():
                p.zero_()
            silenced = block(x)
            for p, s in zip(linears[-1].parameters(), saved):
                p.copy_(s)
            calls.clear()
            out = block(x)
    finally:
        for h in hooks:
            h.remove()
    block.zero_grad(set_to_none=True)
    block(x).pow(2).sum().backward()
    return silenced, out, calls


@gradable
def check_preact_block(block_class: Callable, verbose: bool = True, seed: int = 41,
                       width: int = 6) -> Verdict:
    """Check ``block_class(width)``: a pre-activation residual block x + f(x), with
    f = BN, ReLU, linear, BN, ReLU, linear.

    With the last linear layer's weights (and bias) set to zero the block must
    return its input exactly, negative values included (nothing on the skip
    path); it must keep the shape; its BN and linear layers must run in the
    order BN, linear, BN, linear; each must see exactly what the pre-activation
    order gives it (the first BN the block's input, each linear layer the ReLU
    of the BN before it, the second BN the first linear layer's output), and
    the block must return its input plus the last linear layer's output; and
    every parameter must get a gradient once the last layer is not zero.
    ``seed`` chooses the random input, ``width`` the block's width.
    """
    name = "check_preact_block"
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(32, width, generator=g) * 2 - 0.5
    with torch.random.fork_rng(devices=[]):
        block = call_learner(name, block_class, width, verbose=verbose, who="your block")
    if isinstance(block, Verdict):
        return block
    if not isinstance(block, torch.nn.Module):
        return report(Verdict(name, False, f"{getattr(block_class, '__name__', 'it')} must "
                               f"build an nn.Module, got {type(block).__name__}"), verbose)
    linears = [m for m in block.modules() if isinstance(m, torch.nn.Linear)]
    norms = [m for m in block.modules() if isinstance(m, torch.nn.BatchNorm1d)]
    if len(linears) < 2 or len(norms) < 2:
        return report(Verdict(name, False, f"expected two linear and two BatchNorm1d "
                               f"layers, found {len(linears)} and {len(norms)}"), verbose)
    result = call_learner(name, _run_preact_block, block, linears, norms, x, verbose=verbose,
                          who="your block")
    if isinstance(result, Verdict):
        return result
    silenced, out, calls = result
    if not isinstance(silenced, torch.Tensor) or not isinstance(out, torch.Tensor):
        return report(Verdict(name, False, f"the block should return a torch.Tensor, got "
                               f"{type(silenced).__name__}"), verbose)
    if silenced.shape != x.shape:
        return report(Verdict(name, False, f"the output has shape {tuple(silenced.shape)}, "
                               f"expected {tuple(x.shape)}"), verbose)
    if not torch.equal(silenced, x):
        off = float((silenced - x).abs().max())
        return report(Verdict(name, False, f"with the last layer at zero the block should return "
                               f"its input exactly, but it is off by up to {off:.3g}: is there "
                               "something (a ReLU?) on the skip path?"), verbose)
    problem = _preact_order_problem(calls, x, out)
    if problem:
        return report(Verdict(name, False, problem), verbose)
    silent = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    if silent:
        return report(Verdict(name, False, f"no gradient reaches {', '.join(silent)}"), verbose)
    return report(Verdict(name, True, "skip path and order right, "
                           "every parameter learns"), verbose)


def _same(a: torch.Tensor, b: torch.Tensor) -> bool:
    return a.shape == b.shape and torch.allclose(a, b, rtol=1e-5, atol=1e-6)


def _relu_problem(which: str, bn_out: torch.Tensor, lin_in: torch.Tensor) -> str:
    """Empty if the ``which`` linear layer saw ReLU of the BN output before it."""
    if _same(lin_in, torch.relu(bn_out)):
        return ""
    if _same(lin_in, bn_out):
        return (f"the {which} linear layer sees the BN output itself, negative values "
                "included: the ReLU between BN and the linear layer is missing (the "
                "pre-activation order is BN, ReLU, linear)")
    return (f"the {which} linear layer does not see ReLU of the BN before it: in the "
            "pre-activation order each linear layer follows a BN and a ReLU directly")


def _preact_order_problem(calls: list[tuple[str, torch.Tensor, torch.Tensor]],
                          x: torch.Tensor, out: torch.Tensor) -> str:
    """What is wrong with the order of a pre-activation branch, from what its BN and
    linear layers saw and returned in one forward pass; empty if nothing is."""
    kinds = [kind for kind, _, _ in calls]
    if kinds[:1] == ["linear"]:
        return "the branch starts with a linear layer: in a pre-activation block BN (then ReLU) "\
               "comes first"
    if kinds != ["BN", "linear", "BN", "linear"]:
        return (f"your block ran {', '.join(kinds) or 'no BN or linear layer'}; a pre-activation "
                "branch runs each of its two BN and two linear layers once, in the order BN, "
                "linear, BN, linear (with a ReLU after each BN)")
    (_, bn1_in, bn1_out), (_, lin1_in, lin1_out), (_, bn2_in, bn2_out), (_, lin2_in, lin2_out) \
        = calls
    if not _same(bn1_in, x):
        return "the first BN does not see the block's input x: the branch starts with BN(x)"
    missing = _relu_problem("first", bn1_out, lin1_in)
    if missing:
        return missing
    if not _same(bn2_in, lin1_out):
        if _same(bn2_in, torch.relu(lin1_out)):
            return ("a ReLU sits between the first linear layer and the second BN: in the "
                    "pre-activation order the ReLU comes after each BN, and the linear "
                    "layer's output goes straight into the next BN")
        return "the second BN does not see the first linear layer's output directly"
    missing = _relu_problem("second", bn2_out, lin2_in)
    if missing:
        return missing
    if not _same(out, x + lin2_out):
        return ("the block does not return x plus the last linear layer's output: nothing "
                "may follow the last linear layer or the addition")
    return ""


@gradable
def check_drop_bias(fn: Callable, verbose: bool = True, seed: int = 43) -> Verdict:
    """Check ``fn(linear, bn) -> (new_linear, new_bn)``: the same function without the bias.

    ``linear`` (an ``nn.Linear`` with a bias) feeds ``bn`` (an ``nn.BatchNorm1d``
    with running statistics). The pair returned must have no linear bias and
    compute the same outputs as the original pair in training mode (where the
    batch mean cancels the bias) and in eval mode (where only the running mean
    can), must not change the modules it was given, and after a training step
    its running mean must still be the original's minus the bias. ``seed``
    chooses the random layers and inputs.
    """
    name = "check_drop_bias"
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # every value is overwritten from g below
        linear = torch.nn.Linear(7, 5, dtype=torch.float64)
        bn = torch.nn.BatchNorm1d(5, dtype=torch.float64)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(5, 7, generator=g, dtype=torch.float64))
        linear.bias.copy_(3.0 * torch.randn(5, generator=g, dtype=torch.float64))
        bn.weight.copy_(torch.rand(5, generator=g, dtype=torch.float64) + 0.5)
        bn.bias.copy_(torch.randn(5, generator=g, dtype=torch.float64))
        bn.running_mean.copy_(torch.randn(5, generator=g, dtype=torch.float64))
        bn.running_var.copy_(torch.rand(5, generator=g, dtype=torch.float64) + 0.5)
    x = torch.randn(16, 7, generator=g, dtype=torch.float64)
    original = [t.detach().clone() for t in (*linear.state_dict().values(),
                                             *bn.state_dict().values())]
    reference_linear, reference_bn = copy.deepcopy(linear), copy.deepcopy(bn)
    with torch.random.fork_rng(devices=[]):  # a new layer draws from the global generator
        result = call_learner(name, fn, linear, bn, verbose=verbose)
    if isinstance(result, Verdict):
        return result
    if not (isinstance(result, (tuple, list)) and len(result) == 2):
        return report(Verdict(name, False, "return a pair (nn.Linear, nn.BatchNorm1d), got "
                               f"{type(result).__name__}"), verbose)
    new_linear, new_bn = result
    after = [t.detach() for t in (*linear.state_dict().values(), *bn.state_dict().values())]
    if any(not torch.equal(a, b) for a, b in zip(original, after)):
        return report(Verdict(name, False, "the modules passed in were changed: build new ones "
                               "(copy.deepcopy) and change those"), verbose)
    if not isinstance(new_linear, torch.nn.Linear) or not isinstance(new_bn,
                                                                     torch.nn.BatchNorm1d):
        return report(Verdict(name, False, "return (nn.Linear, nn.BatchNorm1d), got ("
                               f"{type(new_linear).__name__}, {type(new_bn).__name__})"), verbose)
    if new_linear.bias is not None:
        return report(Verdict(name, False, "the new linear layer still has a bias: build it "
                               "with bias=False"), verbose)
    with torch.no_grad():
        for mode in ("eval", "train"):
            for module in (reference_linear, reference_bn, new_linear, new_bn):
                module.train(mode == "train")
            want = reference_bn(reference_linear(x))
            got = new_bn(new_linear(x))
            problem = compare(f"the output in {mode} mode", got, want, 1e-10, "")
            if problem:
                hint = (" (in eval mode BN subtracts running_mean, not the batch mean: the bias "
                        "has to go into running_mean)") if mode == "eval" else ""
                return report(Verdict(name, False, problem + hint), verbose)
        # After a training step both running means have moved towards their batch
        # means, which differ by the bias: the new one must stay the old one minus b.
        for what, got, want in (
                ("running_mean + bias after a training step",
                 new_bn.running_mean + linear.bias.detach(), reference_bn.running_mean),
                ("running_var after a training step", new_bn.running_var,
                 reference_bn.running_var)):
            problem = compare(what, got, want, 1e-10, "")
            if problem:
                return report(Verdict(name, False, problem), verbose)
    return report(Verdict(name, True, "no bias, the same outputs in training and eval mode, "
                           "the originals untouched"), verbose)


def _weighted_cases(seed: int) -> list[tuple[torch.Tensor, torch.Tensor, torch.Tensor, float]]:
    """(w, mean, cov, p): one unit; independent units; correlated units weighted with
    and against their correlation; a random case; nothing dropped."""
    def t(values: object) -> torch.Tensor:
        return torch.tensor(values, dtype=torch.float64)

    g = torch.Generator().manual_seed(seed)
    a = torch.randn(6, 6, generator=g, dtype=torch.float64)
    cov = a @ a.T / 6 + 0.1 * torch.eye(6, dtype=torch.float64)
    mean = torch.rand(6, generator=g, dtype=torch.float64) * 2
    w = torch.randn(6, generator=g, dtype=torch.float64)
    correlated = t([[1.0, 0.9], [0.9, 1.0]])
    return [(t([2.0]), t([0.4]), t([[0.34]]), 0.5),
            (t([1.0, 1.0]), t([1.0, 1.0]), torch.eye(2, dtype=torch.float64), 0.5),
            (t([1.0, 1.0]), t([1.0, 0.5]), correlated, 0.8),
            (t([1.0, -1.0]), t([1.0, 0.5]), correlated, 0.5),
            (w, mean, cov, 0.7),
            (w, mean, cov, 1.0)]


@gradable
def check_weighted_dropout_ratio(fn: Callable, verbose: bool = True, seed: int = 47) -> Verdict:
    """Check ``fn(w, mean, cov, p)``: Var_train / Var_test of ``y = w . (h * b / p)``
    for units ``h`` of mean ``mean`` (J,) and covariance ``cov`` (J, J), weights ``w``
    (J,) and independent masks ``b_j ~ Bernoulli(p)``, against
    ``1 + (1/p - 1) sum_j w_j**2 (mean_j**2 + cov_jj) / (w^T cov w)`` on six cases
    (one unit; independent units; correlated units weighted with and against their
    correlation; a random case, with p < 1 and p = 1). A wrong answer gets the
    step of the derivation it skipped, never the expected value. ``seed`` chooses
    the random case.
    """
    from bnlessons.placement.dropout import weighted_sum_variance_ratio

    name = "check_weighted_dropout_ratio"
    for k, (w, mean, cov, p) in enumerate(_weighted_cases(seed), start=1):
        where = f"case {k} (J = {len(w)} units, p = {p})"
        got = call_learner(name, fn, w.clone(), mean.clone(), cov.clone(), p, verbose=verbose,
                           note=f"in {where}")
        if isinstance(got, Verdict):
            return got
        what = not_a_number(got)
        if what is not None:
            return report(Verdict(name, False, f"return one number, got {what}"), verbose)
        got = float(got)
        want = float(weighted_sum_variance_ratio(w, mean, cov, p))
        if abs(got - want) <= 1e-6 * abs(want):
            continue
        noise = (1 / p - 1) * float((w**2 * (mean**2 + cov.diagonal())).sum())
        test = float(w @ cov @ w)
        wrong = {
            "the variance at test time is that of the weighted sum, w^T cov w, which "
            "counts the covariances; the sum of the w_j^2 Var(h_j) treats the units as "
            "independent": 1 + noise / float((w**2 * cov.diagonal()).sum()),
            "a dropped unit loses its mean as well as its spread: the noise of unit j is "
            "w_j^2 E[h_j^2] = w_j^2 (mean_j^2 + Var(h_j)), not w_j^2 Var(h_j)":
                1 + (1 / p - 1) * float((w**2 * cov.diagonal()).sum()) / test,
            "the weights enter the noise squared: unit j's dropout noise is scaled by "
            "w_j, its variance by w_j^2": 1 + (1 / p - 1) * float(
                (w * (mean**2 + cov.diagonal())).sum()) / test,
            "that is Var_test / Var_train, the way Li et al. write it; the exercise asks "
            "for Var_train / Var_test": 1 / want,
            "1/p is the ratio of one centred unit only; a weighted sum of units with "
            "means and correlations has its own": 1 / p,
        }
        hint = next((h for h, v in wrong.items() if abs(got - v) <= 1e-6 * max(1.0, abs(v))),
                    "start from Var_train(y) = Var(w . h) + E[Var(y | h)] and the variance "
                    "of one mask, Var(b_j / p) = 1/p - 1")
        return report(Verdict(name, False, f"{where}: {got:.6g} is not the ratio: {hint}"),
                      verbose)
    return report(Verdict(name, True, "all 6 cases agree with the formula"),
                  verbose)
