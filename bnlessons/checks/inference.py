"""Checks for the inference-statistics exercises: running-statistics updates in
two conventions, precise-BN recalibration, folding BN into a Linear layer, and
an evaluation loop that leaves batch norm alone."""
from __future__ import annotations

import copy
from typing import Callable, Optional

import torch
from torch import nn

from bnlessons import running_stats
from bnlessons._validate import reduce_dims, values_per_channel
from bnlessons.checks.common import Verdict, call_learner, compare, gradable, not_a_number, report
from bnlessons.inference.bn_modes import bn_buffers, buffers_changed
from bnlessons.inference.deploy import fold_linear_bn
from bnlessons.inference.precise_bn import recompute_bn_stats

UPDATE_TOL = 1e-10
PRECISE_TOL = 1e-8
FOLD_TOL = 1e-10
UPDATE_SHAPES: tuple[tuple[int, ...], ...] = ((8, 3), (2, 5), (4, 3, 5, 5))


def _running_inputs(shape: tuple[int, ...], seed: int) -> tuple[torch.Tensor, ...]:
    g = torch.Generator().manual_seed(seed)
    c = shape[1]
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 2.0 + 0.7
    running_mean = torch.randn(c, generator=g, dtype=torch.float64)
    running_var = torch.rand(c, generator=g, dtype=torch.float64) + 0.5
    return x, running_mean, running_var


def _pair(result: object, n: int) -> Optional[tuple]:
    return result if isinstance(result, tuple) and len(result) == n else None


def _changed_in_place(inputs: dict[str, torch.Tensor],
                      snapshot: dict[str, torch.Tensor]) -> str:
    """The names of the arguments whose values the learner's code changed, or ""."""
    return ", ".join(k for k, v in inputs.items() if not torch.equal(v, snapshot[k]))


def _modes(model: nn.Module) -> dict[str, bool]:
    """Every submodule's ``training`` flag, by name ("" is the model itself)."""
    return {n: m.training for n, m in model.named_modules()}


def _mode_problem(before: dict[str, bool], after: dict[str, bool], note: str) -> str:
    """Which submodules left in another mode than they came in, or ""."""
    moved = [n or "the model" for n in before if after.get(n) != before[n]]
    if not moved:
        return ""
    came = "training" if before[""] else "eval"
    return (f"{', '.join(moved[:3])}{' and others' if len(moved) > 3 else ''} came in "
            f"{came} mode and left in the other; save each module's mode (model.training "
            f"is only the top one; model.train(mode) sets them all) and restore it {note}")


def _same(got: object, wrong: torch.Tensor) -> bool:
    """Whether ``got`` is the tensor a known mistake gives."""
    return isinstance(got, torch.Tensor) and got.shape == wrong.shape and \
        torch.allclose(got.double(), wrong.double(), rtol=1e-9, atol=1e-12)


def _pytorch_hint(label: str, got: object, rm: torch.Tensor, rv: torch.Tensor, count: int,
                  x: torch.Tensor, momentum: float | None) -> str:
    """Why a running statistic from ``check_pytorch_update`` is wrong: the usual mistakes,
    named by the reasoning that broke (never by the expected value)."""
    dims, m = reduce_dims(x), values_per_channel(x)
    weight = 1.0 / (count + 1) if momentum is None else momentum
    stat = x.mean(dim=dims) if label == "running_mean" else x.var(dim=dims, unbiased=True)
    old = rm if label == "running_mean" else rv
    if label == "running_var" and _same(got, (1 - weight) * rv + weight * x.var(
            dim=dims, unbiased=False)):
        return f"; this is the biased variance: PyTorch feeds m/(m-1) times it (m = {m})"
    if momentum is not None and _same(got, momentum * old + (1 - momentum) * stat):
        return ("; in PyTorch momentum is the weight of the NEW batch (the running value "
                "keeps 1 - momentum)")
    if momentum is None:
        return ("; momentum=None is a cumulative average: after this batch "
                "k = num_batches_tracked + 1 batches have been seen, each weighing 1/k")
    return ""


@gradable
def check_pytorch_update(fn: Callable, tol: float = UPDATE_TOL, verbose: bool = True,
                         seed: int = 300) -> Verdict:
    """Check ``fn(running_mean, running_var, num_batches_tracked, x, momentum)``.

    It must return ``(running_mean, running_var, num_batches_tracked)`` after
    one training-mode update in PyTorch's convention (momentum = weight of the
    new batch, unbiased variance, ``momentum=None`` = cumulative average).
    Cases: momentum 0.1 and 0.3 and None, shapes (N, C) and (N, C, H, W);
    ``seed`` chooses the random inputs.
    """
    name = "check_pytorch_update"
    cases = [(shape, momentum, count) for shape in UPDATE_SHAPES
             for momentum, count in ((0.1, 0), (0.3, 5), (None, 0), (None, 3))]
    for i, (shape, momentum, count) in enumerate(cases):
        x, rm, rv = _running_inputs(shape, seed=seed + i)
        note = f"(x of shape {shape}, momentum={momentum}, num_batches_tracked={count})"
        want = running_stats.pytorch_update(rm, rv, count, x, momentum)
        inputs = {"running_mean": rm, "running_var": rv, "x": x}
        snapshot = {k: v.clone() for k, v in inputs.items()}
        result = call_learner(name, fn, rm, rv, count, x, momentum, verbose=verbose, note=note)
        if isinstance(result, Verdict):
            return result
        changed = _changed_in_place(inputs, snapshot)
        if changed:
            return report(Verdict(name, False, f"your function changed {changed} in place; "
                                   f"return new tensors and leave its arguments as they were "
                                   f"{note}"), verbose)
        got = _pair(result, 3)
        if got is None:
            return report(Verdict(name, False, "return (running_mean, running_var, "
                                   f"num_batches_tracked) {note}"), verbose)
        if int(got[2]) != want[2]:
            return report(Verdict(name, False, f"num_batches_tracked should become {want[2]}, "
                                   f"got {got[2]} {note}"), verbose)
        for label, g, w in (("running_mean", got[0], want[0]), ("running_var", got[1], want[1])):
            problem = compare(label, g, w, tol, note)
            if problem:
                hint = _pytorch_hint(label, g, rm, rv, count, x, momentum)
                return report(Verdict(name, False, problem + hint), verbose)
    return report(Verdict(name, True, f"matches nn.BatchNorm's update (momentum 0.1, 0.3, None; "
                           f"{len(UPDATE_SHAPES)} shapes) to elementwise relative error "
                           f"{tol:.0e}"), verbose)


@gradable
def check_cs231n_update(fn: Callable, tol: float = UPDATE_TOL, verbose: bool = True,
                        seed: int = 400) -> Verdict:
    """Check ``fn(running_mean, running_var, x, momentum)`` -> ``(running_mean, running_var)``.

    CS231n's convention: momentum is the weight of the old value (default 0.9)
    and the variance fed in is the biased batch variance. ``seed`` chooses the
    random inputs.
    """
    name = "check_cs231n_update"
    cases = [(shape, momentum) for shape in UPDATE_SHAPES for momentum in (0.9, 0.5)]
    for i, (shape, momentum) in enumerate(cases):
        x, rm, rv = _running_inputs(shape, seed=seed + i)
        note = f"(x of shape {shape}, momentum={momentum})"
        want = running_stats.cs231n_update(rm, rv, x, momentum)
        inputs = {"running_mean": rm, "running_var": rv, "x": x}
        snapshot = {k: v.clone() for k, v in inputs.items()}
        result = call_learner(name, fn, rm, rv, x, momentum, verbose=verbose, note=note)
        if isinstance(result, Verdict):
            return result
        changed = _changed_in_place(inputs, snapshot)
        if changed:
            return report(Verdict(name, False, f"your function changed {changed} in place; "
                                   f"return new tensors and leave its arguments as they were "
                                   f"{note}"), verbose)
        got = _pair(result, 2)
        if got is None:
            return report(Verdict(name, False, f"return (running_mean, running_var) {note}"),
                          verbose)
        for label, g, w in (("running_mean", got[0], want[0]), ("running_var", got[1], want[1])):
            problem = compare(label, g, w, tol, note)
            if problem:
                swapped = running_stats.cs231n_update(rm, rv, x, 1 - momentum)
                hint = ""
                idx = 0 if label == "running_mean" else 1
                if _same(g, swapped[idx]):
                    hint = "; momentum here is the weight of the OLD value, not of the new batch"
                elif label == "running_var" and _same(g, momentum * rv + (1 - momentum) * x.var(
                        dim=reduce_dims(x), unbiased=True)):
                    hint = ("; this is the unbiased variance: CS231n feeds the biased batch "
                            "variance, which divides by m")
                return report(Verdict(name, False, problem + hint), verbose)
    return report(Verdict(name, True, f"matches CS231n's update (decay 0.9 and 0.5, "
                           f"{len(UPDATE_SHAPES)} shapes) to elementwise relative error "
                           f"{tol:.0e}"), verbose)


def _small_bn_mlp(seed: int) -> nn.Sequential:
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # weights are overwritten from g below
        model = nn.Sequential(nn.Linear(6, 5, bias=False), nn.BatchNorm1d(5), nn.ReLU(),
                              nn.Linear(5, 4, bias=False), nn.BatchNorm1d(4), nn.ReLU(),
                              nn.Linear(4, 3)).double()
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
        for bn in (model[1], model[4]):
            bn.running_mean.copy_(torch.randn(bn.num_features, generator=g, dtype=torch.float64))
            bn.running_var.copy_(torch.rand(bn.num_features, generator=g, dtype=torch.float64) * 5)
            bn.num_batches_tracked.fill_(17)
    return model


@gradable
def check_precise_bn(fn: Callable, tol: float = PRECISE_TOL, verbose: bool = True,
                     seed: int = 500) -> Verdict:
    """Check ``fn(model, x, batch_size)``, which must recompute BN statistics in place.

    After the call every BN layer's running mean and variance must equal
    Algorithm 2 run with the current weights on the full batches of ``x``
    (average of batch means; average of unbiased batch variances), each BN
    layer's ``momentum`` must be what it was, and the model must be back in
    the mode it came in (tried in training and in eval mode). ``seed`` chooses
    the random models and inputs.
    """
    name = "check_precise_bn"
    cases = ((64, 16, True), (90, 30, True), (50, 20, False))
    for i, (n, batch_size, arrives_training) in enumerate(cases):
        model = _small_bn_mlp(seed=seed + i)
        x = torch.randn(n, 6, generator=torch.Generator().manual_seed(seed + 10 + i),
                        dtype=torch.float64) * 1.5 + 0.3
        mode = "training" if arrives_training else "eval"
        note = f"({n} inputs, batch_size={batch_size}, model in {mode} mode)"
        want = copy.deepcopy(model)
        recompute_bn_stats(want, x, batch_size)
        got = copy.deepcopy(model)
        got.train(arrives_training)
        modes = _modes(got)
        failed = call_learner(name, fn, got, x.clone(), batch_size, verbose=verbose, note=note)
        if isinstance(failed, Verdict):
            return failed
        for idx in (1, 4):
            for buf in ("running_mean", "running_var"):
                problem = compare(f"layer {idx} {buf}", getattr(got[idx], buf),
                                  getattr(want[idx], buf), tol, note)
                if problem:
                    return report(Verdict(name, False, problem), verbose)
            if got[idx].momentum != model[idx].momentum:
                return report(Verdict(name, False, f"layer {idx} momentum is "
                                       f"{got[idx].momentum} after your call; restore it to "
                                       f"{model[idx].momentum} {note}"), verbose)
        problem = _mode_problem(modes, _modes(got), note)
        if problem:
            return report(Verdict(name, False, problem), verbose)
    return report(Verdict(name, True, f"running statistics match Algorithm 2 with the current "
                           f"weights to elementwise relative error {tol:.0e}; momenta and mode "
                           f"restored (tried in training and in eval mode)"), verbose)


@gradable
def check_fold_linear(fn: Callable, tol: float = FOLD_TOL, verbose: bool = True,
                      seed: int = 600) -> Verdict:
    """Check ``fn(linear, bn)`` -> ``(weight, bias)``: one Linear equal to ``bn(linear(u))``.

    ``bn`` is in eval mode, so the pair is a fixed affine map.

    Cases: a Linear with and without bias, a BN with and without affine
    parameters, float64; ``seed`` chooses the random weights and statistics.
    """
    name = "check_fold_linear"
    for i, (n_in, n_out, bias, affine) in enumerate(((5, 3, True, True), (4, 6, False, True),
                                                      (3, 2, True, False))):
        g = torch.Generator().manual_seed(seed + i)
        with torch.random.fork_rng(devices=[]):  # weights are overwritten from g below
            linear = nn.Linear(n_in, n_out, bias=bias).double()
        bn = nn.BatchNorm1d(n_out, affine=affine).double().eval()
        with torch.no_grad():
            for p in list(linear.parameters()) + list(bn.parameters()):
                p.copy_(torch.randn(p.shape, generator=g, dtype=torch.float64))
            bn.running_mean.copy_(torch.randn(n_out, generator=g, dtype=torch.float64))
            bn.running_var.copy_(torch.rand(n_out, generator=g, dtype=torch.float64) * 3 + 0.1)
        note = f"(Linear({n_in}, {n_out}, bias={bias}), BatchNorm1d affine={affine})"
        want = fold_linear_bn(linear, bn)
        result = call_learner(name, fn, copy.deepcopy(linear), copy.deepcopy(bn),
                              verbose=verbose, note=note)
        if isinstance(result, Verdict):
            return result
        got = _pair(result, 2)
        if got is None:
            return report(Verdict(name, False, f"return (weight, bias) {note}"), verbose)
        for label, g_t, w_t in (("weight", got[0], want.weight.detach()),
                                ("bias", got[1], want.bias.detach())):
            if isinstance(g_t, torch.Tensor):
                g_t = g_t.detach()
            problem = compare(label, g_t, w_t, tol, note)
            if problem:
                return report(Verdict(name, False, problem), verbose)
    return report(Verdict(name, True, f"weight and bias match the folded layer to relative "
                           f"error {tol:.0e} (with and without Linear bias and BN affine)"),
                  verbose)


def _labelled_model(seed: int, n: int) -> tuple[nn.Sequential, torch.Tensor, torch.Tensor]:
    """A BN model whose batch statistics are far from its running statistics, and ``n``
    inputs labelled with its eval-mode predictions except every fourth one."""
    g = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):  # weights are overwritten from g below
        model = nn.Sequential(nn.Linear(8, 16, bias=False), nn.BatchNorm1d(16), nn.ReLU(),
                              nn.Linear(16, 4))
    with torch.no_grad():
        for p in model.parameters():
            p.copy_(torch.randn(p.shape, generator=g))
        model[1].running_mean.copy_(torch.randn(16, generator=g) * 2)
        model[1].running_var.copy_(torch.rand(16, generator=g) * 4 + 0.5)
    x = torch.randn(n, 8, generator=g) * 3 + 1
    with torch.no_grad():
        y = model.eval()(x).argmax(dim=1)
    y[::4] = (y[::4] + 1) % 4  # every fourth wrong
    model.train()
    return model, x, y


@gradable
def check_evaluate(fn: Callable, verbose: bool = True, seed: int = 700) -> Verdict:
    """Check ``fn(model, x, y, batch_size)`` -> accuracy, an evaluation loop.

    The model arrives in training mode, then (a second time) in eval mode.
    The accuracy must be the eval-mode one, no BN buffer may change, and the
    model must leave in the mode it came in: a loop that ends with an
    unconditional ``model.train()`` fails the second case. ``seed`` chooses the
    random models and data.
    """
    name = "check_evaluate"
    n = 50  # divisible by neither batch size: the last batch is partial
    for batch_size, arrives_training in ((4, True), (16, True), (16, False)):
        model, x, y = _labelled_model(seed=seed + batch_size, n=n)
        model.train(arrives_training)
        mode = "training" if arrives_training else "eval"
        note = f"({n} examples, batch_size={batch_size}, model in {mode} mode)"
        correct = torch.ones(n, dtype=torch.bool)
        correct[::4] = False
        want = float(correct.double().mean())
        before, modes = bn_buffers(model), _modes(model)
        got = call_learner(name, fn, model, x.clone(), y.clone(), batch_size, verbose=verbose,
                           note=note)
        if isinstance(got, Verdict):
            return got
        changed = buffers_changed(before, bn_buffers(model))
        if changed:
            return report(Verdict(name, False, f"your loop changed {', '.join(changed)}: the "
                                   f"model ran in training mode, so BN used batch statistics "
                                   f"and updated its running ones {note}"), verbose)
        what = not_a_number(got)
        if what is not None:
            return report(Verdict(name, False, f"return the accuracy as a float, got "
                                   f"{what} {note}"), verbose)
        got = float(got)
        if abs(got - want) > 1e-6:  # a float32 mean is exact to about 1e-7
            chunks = correct.split(batch_size)
            full = n - n % batch_size
            slips = {
                "that is the mean of the per-batch accuracies: the last batch is smaller, so "
                "count correct predictions over all examples and divide once":
                    float(torch.stack([c.double().mean() for c in chunks]).mean()),
                "the last, partial batch was left out: every example counts":
                    float(correct[:full].double().mean()),
                "that is the error rate, not the accuracy": 1 - want,
            }
            hint = next((h for h, v in slips.items() if abs(got - v) <= 1e-6),
                        "count the examples whose predicted class (argmax of the logits) is "
                        "the label, over every batch, and divide by the number of examples")
            return report(Verdict(name, False, f"accuracy {got:.4f} is wrong {note}: "
                                   f"{hint}"), verbose)
        problem = _mode_problem(modes, _modes(model), note)
        if problem:
            return report(Verdict(name, False, problem), verbose)
    return report(Verdict(name, True, "eval-mode accuracy, BN buffers untouched, the model's "
                           "mode restored (tried in training and in eval mode)"), verbose)
