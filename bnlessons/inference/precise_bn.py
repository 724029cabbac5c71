"""Moving averages versus population statistics recomputed with the final weights.

A BN layer's running statistics are an exponential moving average (EMA) of
batch statistics collected while the weights were changing, so they describe
an average of *past* networks. When the weights move fast, or the EMA decays
slowly, they lag behind the network that is evaluated. Recomputing the
statistics with the final weights on a few thousand training examples
("precise BN", Wu & Johnson 2021) removes the lag.

* ``recompute_bn_stats``: precise BN in place: resets every BN layer and
  feeds fixed-size batches through it in training mode with
  ``momentum=None``, so the running statistics become the plain average of
  batch means and of unbiased batch variances: Algorithm 2 of Ioffe &
  Szegedy, with the current weights. Dropout stays off meanwhile.
* ``EMATracker``: extra running averages, with another momentum, kept by
  forward hooks during training. The training trajectory does not depend on
  BN's momentum (training mode normalises with batch statistics), so one
  training run can be evaluated with several EMAs.
* ``ema_vs_precise``: the experiment of the lesson, one seed: train an MLP
  with BN, and after every epoch measure test accuracy with each EMA and with
  precise BN.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Sequence

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlessons import running_stats
from bnlessons._own_work import answers
from bnlessons._validate import (
    check_batch_size,
    check_bool,
    check_fraction,
    check_int,
    check_module,
    check_tensor,
)
from bnlessons.data import Dataset
from bnlessons.models import bn_layers
from bnlessons.train import eval_mode, evaluate, train


@torch.no_grad()
@answers("check_precise_bn")
def recompute_bn_stats(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> int:
    """Replace every BN layer's running statistics by population statistics (in place).

    ``x`` (e.g. a few thousand training inputs, no labels needed) is cut into
    ``len(x) // batch_size`` full batches; a last partial batch is dropped so
    that every batch has the same weight. Each BN layer is reset and run in
    training mode with ``momentum=None`` (a cumulative average), the rest of
    the model in eval mode (no dropout). Momenta and modes are restored.
    Returns the number of batches used.
    """
    check_module(model, "model")
    check_tensor(x, "x")
    batch_size = check_batch_size(batch_size, len(x), minimum=2)
    layers = [m for _, m in bn_layers(model)]
    if not layers:
        raise ValueError("model has no batch-norm layer to recalibrate")
    if any(m.running_mean is None for m in layers):
        raise ValueError("every BN layer needs track_running_stats=True to hold statistics")
    momenta = [m.momentum for m in layers]
    with eval_mode(model):  # dropout and the rest stay in eval mode
        try:
            for m in layers:
                m.reset_running_stats()
                m.momentum = None
                m.train()
            n_batches = len(x) // batch_size
            for i in range(n_batches):
                model(x[i * batch_size:(i + 1) * batch_size])
        finally:
            for m, momentum in zip(layers, momenta):
                m.momentum = momentum
    return n_batches


@answers("check_precise_bn")
def precise_copy(model: nn.Module, x: torch.Tensor, batch_size: int = 500) -> nn.Module:
    """A deep copy of ``model`` with recomputed statistics; ``model`` is untouched."""
    out = copy.deepcopy(model)
    recompute_bn_stats(out, x, batch_size)
    return out


class EMATracker:
    """Running statistics of every BN layer of ``model``, kept with another ``momentum``.

    A forward pre-hook on each BN layer (of this very model, not of copies)
    updates this tracker's own mean and variance in PyTorch's convention
    whenever that layer runs in training mode, starting, like PyTorch, from
    mean 0 and variance 1. ``copy_with_stats(model)`` returns a copy of the
    model that uses them. With ``bias_correction=True`` the copy gets them
    with the starting values taken out: after t updates with decay
    rho = 1 - momentum, the start still weighs rho**t, so the mean is divided
    by 1 - rho**t and the variance becomes (var - rho**t) / (1 - rho**t), a
    weighted average of batch statistics only (as Adam corrects its moments).
    Call ``remove()`` when done.
    """

    def __init__(self, model: nn.Module, momentum: float, bias_correction: bool = False) -> None:
        self.momentum = check_fraction(momentum, "momentum", zero=False)
        self.bias_correction = check_bool(bias_correction, "bias_correction")
        self.layers = dict(bn_layers(model))
        if not self.layers:
            raise ValueError("model has no batch-norm layer to track")
        self.mean = {n: torch.zeros_like(m.running_mean) for n, m in self.layers.items()}
        self.var = {n: torch.ones_like(m.running_var) for n, m in self.layers.items()}
        self.updates = {n: 0 for n in self.layers}
        self._handles = [m.register_forward_pre_hook(self._hook(n))
                         for n, m in self.layers.items()]

    def _hook(self, name: str):
        def hook(module: _BatchNorm, inputs: tuple) -> None:
            if not module.training or module is not self.layers[name]:
                return
            with torch.no_grad():
                self.mean[name], self.var[name] = running_stats.ema_update(
                    self.mean[name], self.var[name], inputs[0], 1.0 - self.momentum,
                    unbiased_var=True)
                self.updates[name] += 1
        return hook

    def statistics(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """The mean and variance this tracker gives layer ``name`` (bias-corrected if asked)."""
        mean, var = self.mean[name], self.var[name]
        if not self.bias_correction or self.updates[name] == 0:
            return mean, var
        start = running_stats.ema_weight_of_start(1.0 - self.momentum, self.updates[name])
        return mean / (1 - start), (var - start * 1.0) / (1 - start)

    def copy_with_stats(self, model: nn.Module) -> nn.Module:
        """A deep copy of ``model`` whose BN layers hold this tracker's statistics."""
        out = copy.deepcopy(model)
        copies = dict(bn_layers(out))
        if set(copies) != set(self.layers):
            raise ValueError("model does not have the BN layers this tracker was built on")
        for name, layer in copies.items():
            mean, var = self.statistics(name)
            layer.running_mean.copy_(mean)
            layer.running_var.copy_(var)
        return out

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []


@dataclass
class EmaVsPrecise:
    """Test accuracy after every epoch (index 0: before training) per way of getting statistics."""

    epochs: list[int] = field(default_factory=list)
    accuracy: dict[str, list[float]] = field(default_factory=dict)

    def mean_over_epochs(self, key: str, first: int = 1) -> float:
        """Average accuracy over epochs ``first``..end (epoch 0 is the untrained net)."""
        values = self.accuracy[key][first:]
        return sum(values) / len(values)

    def roughness(self, key: str, first: int = 1) -> float:
        """Mean absolute change of accuracy from one epoch to the next, from ``first`` on."""
        values = self.accuracy[key][first:]
        steps = [abs(b - a) for a, b in zip(values, values[1:])]
        return sum(steps) / len(steps)


def ema_key(momentum: float, bias_correction: bool = False) -> str:
    """The label of an EMA in ``EmaVsPrecise.accuracy``: its decay, ``1 - momentum``."""
    return f"EMA decay {1 - momentum:g}" + (", corrected" if bias_correction else "")


def ema_vs_precise(data: Dataset, seed: int, model: nn.Module, *, epochs: int,
                   batch_size: int, lr: float, sgd_momentum: float,
                   ema_momenta: Sequence[float], precise_samples: int, precise_batch: int,
                   corrected_momenta: Sequence[float] = (),
                   progress: bool = True) -> EmaVsPrecise:
    """Train ``model`` (its BN layers' own momentum is irrelevant) and evaluate every epoch.

    Every setting of the experiment is a keyword argument without a default:
    the lesson that runs it states them.

    After each epoch the test accuracy is measured with an EMA of each
    momentum in ``ema_momenta`` (PyTorch's convention: weight of the new batch),
    with a bias-corrected EMA of each momentum in ``corrected_momenta``,
    and with precise BN recomputed on the first ``precise_samples`` training
    inputs in batches of ``precise_batch``. ``epochs * len(train) //
    batch_size`` SGD steps in all.
    """
    n_train = len(data.y_train)
    check_int(epochs, "epochs")
    check_batch_size(batch_size, n_train)
    if n_train % batch_size:
        raise ValueError(f"batch_size={batch_size} must divide the {n_train} training "
                         "examples so that an epoch is a whole number of steps")
    check_int(precise_samples, "precise_samples", 1, n_train)
    steps_per_epoch = n_train // batch_size
    trackers = {ema_key(a): EMATracker(model, a) for a in ema_momenta}
    trackers.update({ema_key(a, True): EMATracker(model, a, bias_correction=True)
                     for a in corrected_momenta})
    x_stats = data.x_train[:precise_samples]
    result = EmaVsPrecise()

    def record(net: nn.Module, step: int) -> dict:
        result.epochs.append(step // steps_per_epoch)
        for key, tracker in trackers.items():
            _, acc = evaluate(tracker.copy_with_stats(net), data.x_test, data.y_test)
            result.accuracy.setdefault(key, []).append(acc)
        _, acc = evaluate(precise_copy(net, x_stats, precise_batch), data.x_test, data.y_test)
        result.accuracy.setdefault("precise BN", []).append(acc)
        return {}

    try:
        train(model, data, steps=epochs * steps_per_epoch, lr=lr, batch_size=batch_size,
              momentum=sgd_momentum, seed=seed, eval_every=steps_per_epoch, record=record,
              progress=progress, desc=f"seed {seed}")
    finally:
        for tracker in trackers.values():
            tracker.remove()
    return result
