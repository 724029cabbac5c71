"""Checks for chapter 4, placement: the dropout variance ratio, a bias removed from
before BN, a pre-activation block and a causal-safe normalisation."""
from __future__ import annotations

import copy
from typing import Any, Callable, Sequence

import torch

from bnlessons.bn_math import gradcheck
from bnlessons.checks.common import Verdict, call_learner, compare, gradable, report
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
        if isinstance(got, torch.Tensor) and got.numel() == 1:
            got = float(got)
        if isinstance(got, bool) or not isinstance(got, (int, float)):
            return report(Verdict(name, False, f"return a number, got {type(got).__name__}"),
                          verbose)
        if abs(got - want) > tol * max(1.0, abs(want)):
            hint = ""
            if abs(got - 1 / p) < 1e-9 * max(1.0, 1 / p) and c != 0:
                hint = ": 1/p is right only for an input of mean 0; the mean adds c**2 (1/p - 1)"
            return report(Verdict(name, False, f"for c={c}, v={v}, p={p} you gave {got:.6g}, "
                                   f"the ratio is {want:.6g}{hint}"), verbose)
    return report(Verdict(name, True, f"all {len(cases)} cases match "
                           "((c^2 + v)/p - c^2)/v"), verbose)


def _run_causal_norm(layer: torch.nn.Module, x: torch.Tensor, z: torch.Tensor,
                     scales: torch.Tensor) -> tuple[Any, Any, dict[str, float]]:
    """The learner's layer in float64 training mode on ``z`` and on ``z * scales``, and
    how much a causal model built with it leaks on ``x``."""
    from bnlessons.placement.sequences import causal_model, leakage

    layer = layer.double().train()
    with torch.no_grad():
        out = layer(z)
        rescaled = layer(z * scales)
    model = causal_model(make_norm=lambda c: copy.deepcopy(layer)).train()
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
    result = call_learner(name, _run_causal_norm, layer, x, z, scales, verbose=verbose, who=who)
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
                      norms: list[torch.nn.BatchNorm1d], x: torch.Tensor) -> tuple[Any, list[str]]:
    """The learner's block in training mode on ``x`` with its last linear layer at zero, the
    order in which its layers first ran, and then (that layer restored) one backward pass."""
    block.train()
    order: list[str] = []
    hooks = [m.register_forward_pre_hook(lambda mod, inp, kind=kind: order.append(kind))
             for kind, group in (("bn", norms), ("linear", linears)) for m in group]
    try:
        with torch.no_grad():
            saved = [p.detach().clone() for p in linears[-1].parameters()]
            for p in linears[-1].parameters():
                p.zero_()
            out = block(x)
            for p, s in zip(linears[-1].parameters(), saved):
                p.copy_(s)
    finally:
        for h in hooks:
            h.remove()
    block.zero_grad(set_to_none=True)
    block(x).pow(2).sum().backward()
    return out, order


@gradable
def check_preact_block(block_class: Callable, verbose: bool = True, seed: int = 41,
                       width: int = 6) -> Verdict:
    """Check ``block_class(width)``: a pre-activation residual block x + f(x), with
    f = BN, ReLU, linear, BN, ReLU, linear.

    With the last linear layer's weights (and bias) set to zero the block must
    return its input exactly, negative values included (nothing on the skip
    path); it must keep the shape; its first operation on the input must be a
    BN layer (the pre-activation order); and every parameter must get a
    gradient once the last layer is not zero. ``seed`` chooses the random
    input, ``width`` the block's width.
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
    out, order = result
    if not isinstance(out, torch.Tensor):
        return report(Verdict(name, False, f"the block should return a torch.Tensor, got "
                               f"{type(out).__name__}"), verbose)
    if out.shape != x.shape:
        return report(Verdict(name, False, f"the output has shape {tuple(out.shape)}, "
                               f"expected {tuple(x.shape)}"), verbose)
    if not torch.equal(out, x):
        off = float((out - x).abs().max())
        return report(Verdict(name, False, f"with the last layer at zero the block should return "
                               f"its input exactly, but it is off by up to {off:.3g}: is there "
                               "something (a ReLU?) on the skip path?"), verbose)
    if order[:1] != ["bn"]:
        return report(Verdict(name, False, "the branch starts with a linear layer: in a "
                               "pre-activation block BN (then ReLU) comes first"), verbose)
    silent = [n for n, p in block.named_parameters() if p.grad is None or not p.grad.abs().sum()]
    if silent:
        return report(Verdict(name, False, f"no gradient reaches {', '.join(silent)}"), verbose)
    return report(Verdict(name, True, "identity skip path, BN first in the branch, shapes kept, "
                           "every parameter learns"), verbose)


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
