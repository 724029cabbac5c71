"""Population statistics for inference, and the conventions for estimating them.

At test time batch normalization replaces the batch mean and variance by
estimates of the *population* mean and variance. Ioffe & Szegedy's
Algorithm 2 averages the means and variances of many training batches and
multiplies the averaged variance by m/(m-1), because the biased variance of a
batch of m values is, on average, (m-1)/m times the true variance.
Frameworks keep a running (exponential moving) average instead, and they
disagree on what "momentum" means, on where the running variance starts and
on whether the variance is corrected:

* PyTorch: ``momentum`` (default 0.1) is the weight of the *new* batch,
  ``running_var`` starts at ones and is fed the unbiased batch variance,
  ``momentum=None`` gives a cumulative average, ``num_batches_tracked``
  counts updates (``pytorch_update``).
* CS231n's assignment code: ``momentum`` (default 0.9) is the weight of the
  *old* value (a decay), both running statistics start at zeros and are fed
  the biased batch variance (``cs231n_update``).
* ``ema_update`` covers any decay-style convention (a decay, biased or
  unbiased variance).

Every function here is pure: it returns new tensors and leaves its inputs alone.
"""
from __future__ import annotations

from typing import Iterable, Optional

import torch

from bnlessons._own_work import answers
from bnlessons._validate import (
    check_bn_input,
    check_channel_param,
    check_fraction,
    check_int,
    check_positive,
    reduce_dims,
    values_per_channel,
)


def batch_moments(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Per-channel batch mean, **biased** batch variance and the count m.

    ``x`` has shape (N, C), (N, C, L) or (N, C, H, W); statistics are taken over
    every dimension but 1, so m = N, N*L or N*H*W.
    """
    x = check_bn_input(x, "x")
    dims = reduce_dims(x)
    mean = x.mean(dim=dims)
    var = x.var(dim=dims, unbiased=False)
    return mean, var, values_per_channel(x)


def unbiased(var: torch.Tensor, m: int) -> torch.Tensor:
    """Bessel's correction: m/(m-1) times a biased variance of m values."""
    check_int(m, "m", 2)
    return var * (m / (m - 1))


def _check_running(running_mean: object, running_var: object,
                   x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    channels = x.shape[1]
    return (check_channel_param(running_mean, "running_mean", channels, x),
            check_channel_param(running_var, "running_var", channels, x))


def blend(running: torch.Tensor, batch: torch.Tensor, weight: float) -> torch.Tensor:
    """The one running-average step of the course: ``(1 - weight) * running + weight * batch``.

    ``weight`` is the weight of the new batch (PyTorch's ``momentum``; one
    minus a decay). Every update rule below, the reference ``BatchNorm`` and
    ghost BN go through it.
    """
    return (1.0 - weight) * running + weight * batch


def new_batch_weight(momentum: Optional[float], num_batches_tracked: int) -> float:
    """PyTorch's weight of a new batch: ``momentum``, or ``1 / num_batches_tracked``
    (counting this batch) when ``momentum is None``, which gives a plain average."""
    if momentum is None:
        check_int(num_batches_tracked, "num_batches_tracked (this batch included)", 1)
        return 1.0 / num_batches_tracked
    return check_fraction(momentum, "momentum")


@torch.no_grad()
def update_buffers(layer: torch.nn.Module, mean: torch.Tensor, unbiased_var: torch.Tensor) -> None:
    """PyTorch's training-mode update, in place, on a BN layer's buffers.

    Counts the batch in ``layer.num_batches_tracked``, then blends
    ``running_mean`` with the batch ``mean`` and ``running_var`` with the
    batch's ``unbiased_var``, each with weight
    ``new_batch_weight(layer.momentum, num_batches_tracked)``. The course's
    reference ``BatchNorm`` and ghost BN both update their buffers here; the
    caller computes the batch statistics (and has checked its input).
    """
    layer.num_batches_tracked += 1
    weight = new_batch_weight(layer.momentum, int(layer.num_batches_tracked))
    layer.running_mean.copy_(blend(layer.running_mean, mean, weight))
    layer.running_var.copy_(blend(layer.running_var, unbiased_var, weight))


@answers("check_pytorch_update")
def pytorch_update(running_mean: torch.Tensor, running_var: torch.Tensor,
                   num_batches_tracked: int, x: torch.Tensor,
                   momentum: Optional[float] = 0.1) -> tuple[torch.Tensor, torch.Tensor, int]:
    """One training-mode update of the running statistics, as ``nn.BatchNorm*d`` does it.

    ``momentum`` is the weight of the new batch:
    ``running = (1 - momentum) * running + momentum * batch``; with
    ``momentum=None`` the weight is ``1 / num_batches_tracked`` (after the
    increment), which makes the running values the plain average of every
    batch seen so far. The mean is the batch mean; the variance fed in is the
    **unbiased** batch variance (the normalisation itself uses the biased one).
    Returns ``(running_mean, running_var, num_batches_tracked)``.
    """
    x = check_bn_input(x, "x")
    running_mean, running_var = _check_running(running_mean, running_var, x)
    check_int(num_batches_tracked, "num_batches_tracked", 0)
    count = num_batches_tracked + 1
    weight = new_batch_weight(momentum, count)
    mean, var, m = batch_moments(x)
    return blend(running_mean, mean, weight), blend(running_var, unbiased(var, m), weight), count


@answers("check_cs231n_update")
def cs231n_update(running_mean: torch.Tensor, running_var: torch.Tensor, x: torch.Tensor,
                  momentum: float = 0.9) -> tuple[torch.Tensor, torch.Tensor]:
    """One update in CS231n's convention: ``momentum`` is the weight of the **old** value.

    ``running = momentum * running + (1 - momentum) * batch`` with the **biased**
    batch variance; that code starts both running statistics at zeros.
    Returns ``(running_mean, running_var)``.
    """
    x = check_bn_input(x, "x")
    running_mean, running_var = _check_running(running_mean, running_var, x)
    weight = 1.0 - check_fraction(momentum, "momentum")
    mean, var, _ = batch_moments(x)
    return blend(running_mean, mean, weight), blend(running_var, var, weight)


@answers("check_pytorch_update", "check_cs231n_update")
def ema_update(running_mean: torch.Tensor, running_var: torch.Tensor, x: torch.Tensor,
               decay: float, unbiased_var: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """A decay-style update, ``running = decay * running + (1 - decay) * batch``.

    ``unbiased_var`` chooses the variance fed in: m/(m-1) times the biased one,
    or the biased one itself. ``decay = 1 - momentum`` gives PyTorch's update.
    """
    x = check_bn_input(x, "x")
    running_mean, running_var = _check_running(running_mean, running_var, x)
    weight = 1.0 - check_fraction(decay, "decay")
    mean, var, m = batch_moments(x)
    if unbiased_var:
        var = unbiased(var, m)
    return blend(running_mean, mean, weight), blend(running_var, var, weight)


def algorithm2(batches: Iterable[torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
    """Population statistics from training batches (Ioffe & Szegedy, Algorithm 2).

    The population mean is the average of the batch means; the population
    variance is m/(m-1) times the average of the (biased) batch variances.
    Every batch must hold the same number m of values per channel.
    Returns ``(mean, var)``.
    """
    means, variances, sizes = [], [], set()
    for i, xb in enumerate(batches):
        mean, var, m = batch_moments(check_bn_input(xb, f"batches[{i}]"))
        means.append(mean)
        variances.append(var)
        sizes.add(m)
    if not means:
        raise ValueError("batches is empty: Algorithm 2 needs at least one batch")
    if len(sizes) > 1:
        raise ValueError(f"every batch must have the same m (values per channel), got "
                         f"{sorted(sizes)}")
    m = sizes.pop()
    return torch.stack(means).mean(dim=0), unbiased(torch.stack(variances).mean(dim=0), m)


def ema_weight_of_start(decay: float, steps: int) -> float:
    """How much of the initial value is left after ``steps`` decay-style updates: decay**steps.

    A running average that starts at v0 and is then fed a constant value v
    reads ``decay**steps * v0 + (1 - decay**steps) * v``.
    """
    decay = check_fraction(decay, "decay")
    check_int(steps, "steps", 0)
    return decay ** steps


def ema_variance_standard_error(decay: float, steps: int, true_var: float, m: int,
                                use_unbiased: bool, features: int = 1) -> float:
    """Standard error of a decay-style running variance, for normal data.

    After ``steps`` updates with decay rho, the running variance is
    ``rho**steps * v0 + (1 - rho) * sum_j rho**(steps - j) * s_j``, where each
    batch variance s_j of m normal values has variance ``2 * true_var**2 / (m - 1)``
    (unbiased) or ``(m - 1)/m`` squared times that (biased). The batches are
    independent, so the variance of the running value is
    ``(1 - rho)**2 * Var(s) * (1 - rho**(2 * steps)) / (1 - rho**2)``; averaging
    over ``features`` independent features divides it by ``features``.
    Monte Carlo checks of :func:`ema_update` use it to set their tolerance.
    """
    decay = check_fraction(decay, "decay")
    check_int(steps, "steps", 0)
    check_int(m, "m", 2)
    check_int(features, "features", 1)
    check_positive(true_var, "true_var")
    var_s = 2 * true_var ** 2 / (m - 1) * (1.0 if use_unbiased else ((m - 1) / m) ** 2)
    if decay == 1.0:
        return 0.0
    geometric = (1 - decay ** (2 * steps)) / (1 - decay ** 2)
    return ((1 - decay) ** 2 * var_s * geometric / features) ** 0.5
