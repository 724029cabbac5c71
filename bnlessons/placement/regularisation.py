"""Measuring regularisation, and BN without its batch noise.

* ``eval_logits``, ``fit_temperature``, ``nll``: the test loss of a network that fits its
  training set mixes two things, how often it is wrong and how confident it
  is when it is. Dividing the logits by one temperature T, fitted on a
  validation split (temperature scaling, Guo et al. 2017), fixes the
  confidence without changing a single prediction; the test loss at that T
  measures what is left.
* ``TrainingSetBatchNorm`` / ``use_training_set_statistics``: BN whose
  training-mode statistics are those of a fixed reference set (the whole
  training set), recomputed at every step with the current weights and
  differentiated like BN's: the same normalisation as BN, without the
  batch-to-batch noise of its statistics.
"""
from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from bnlessons import running_stats
from bnlessons._validate import (
    as_float_tensor,
    check_int,
    check_module,
    check_positive,
    check_tensor,
)
from bnlessons.inference.bn_modes import replace_batchnorm


def _check_logits(logits: object, y: object) -> tuple[torch.Tensor, torch.Tensor]:
    logits = as_float_tensor(logits, "logits")
    if check_tensor(y, "y").dim() != 1 or logits.dim() != 2 or y.shape != (logits.shape[0],):
        raise ValueError(f"logits must be (N, classes) and y (N,), got {tuple(logits.shape)} "
                         f"and {tuple(y.shape)}")
    return logits.double(), y


def nll(logits: torch.Tensor, y: torch.Tensor, temperature: float = 1.0) -> float:
    """Mean cross-entropy of ``logits / temperature`` against the labels ``y``."""
    logits, y = _check_logits(logits, y)
    temperature = check_positive(temperature, "temperature")
    return float(F.cross_entropy(logits / temperature, y))


def fit_temperature(logits: torch.Tensor, y: torch.Tensor, low: float = 0.05,
                    high: float = 20.0, tol: float = 1e-4) -> float:
    """The temperature in [``low``, ``high``] that minimises ``nll(logits, y, T)``.

    The loss is a convex function of 1/T, so a golden-section search over
    log T finds its minimum; a result at either end of the bracket means the
    bracket was too narrow.
    """
    logits, y = _check_logits(logits, y)
    if not 0 < low < high:
        raise ValueError(f"need 0 < low < high, got {low}, {high}")
    a, b = math.log(low), math.log(high)
    ratio = (math.sqrt(5) - 1) / 2

    def loss(log_t: float) -> float:
        return float(F.cross_entropy(logits / math.exp(log_t), y))

    c, d = b - ratio * (b - a), a + ratio * (b - a)
    fc, fd = loss(c), loss(d)
    while b - a > tol:
        if fc < fd:
            b, d, fd = d, c, fc
            c = b - ratio * (b - a)
            fc = loss(c)
        else:
            a, c, fc = c, d, fd
            d = a + ratio * (b - a)
            fd = loss(d)
    return math.exp((a + b) / 2)


class TrainingSetBatchNorm(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` whose training-mode statistics come from the first ``reference``
    rows of its input only, and normalise every row.

    ``use_training_set_statistics`` puts the whole training set in those rows
    at every step, so each minibatch is normalised with the training set's
    mean and (biased) variance under the current weights, and the gradient
    flows through them as it does through BN's batch statistics. The running
    statistics follow them with the usual ``momentum``. In eval mode it is
    ``nn.BatchNorm1d``.
    """

    reference: int = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        if not 2 <= self.reference <= x.shape[0]:
            raise ValueError(f"the input has {x.shape[0]} rows, not the {self.reference} "
                             "reference rows and more: call the model through "
                             "use_training_set_statistics")
        ref = x[:self.reference]
        mean = ref.mean(dim=0)
        var = ref.var(dim=0, unbiased=False)
        with torch.no_grad():
            running_stats.update_buffers(self, mean.detach(),
                                         running_stats.unbiased(var.detach(), self.reference))
        out = (x - mean) * torch.rsqrt(var + self.eps)
        return out * self.weight + self.bias if self.affine else out


class TrainingSetStatistics(nn.Module):
    """``model`` whose BN layers normalise every training batch with the statistics of
    ``x_reference``: in training mode the reference rows go through the network
    in front of the batch (their outputs are dropped); in eval mode it is
    ``model``."""

    def __init__(self, model: nn.Module, x_reference: torch.Tensor) -> None:
        super().__init__()
        self.model = model
        self.register_buffer("x_reference", as_float_tensor(x_reference, "x_reference"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return self.model(x)
        n = self.x_reference.shape[0]
        return self.model(torch.cat([self.x_reference, x]))[n:]


def use_training_set_statistics(model: nn.Module, x_reference: torch.Tensor) -> nn.Module:
    """Swap every ``nn.BatchNorm1d`` of ``model`` (in place, parameters and buffers
    kept) for a ``TrainingSetBatchNorm`` and return the model wrapped in
    ``TrainingSetStatistics``: train the wrapper. ``x_reference`` (N, ...) is
    usually the whole training set; N must be at least 2."""
    check_module(model)
    x_reference = as_float_tensor(x_reference, "x_reference")
    n = check_int(x_reference.shape[0], "len(x_reference)", 2)

    def factory(bn: nn.Module) -> nn.Module:
        new = TrainingSetBatchNorm(bn.num_features, eps=bn.eps, momentum=bn.momentum,
                                   affine=bn.affine)
        new.load_state_dict(bn.state_dict())
        new.reference = n
        return new

    if replace_batchnorm(model, factory, kinds=(nn.BatchNorm1d,)) == 0:
        raise ValueError("model has no nn.BatchNorm1d layer to replace")
    return TrainingSetStatistics(model, x_reference)


@torch.no_grad()
def eval_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 1000) -> torch.Tensor:
    """The model's logits on ``x`` in eval mode (its modes are restored afterwards)."""
    from bnlessons.train import eval_mode

    check_module(model)
    x = as_float_tensor(x, "x")
    check_int(batch_size, "batch_size")
    with eval_mode(model):
        return torch.cat([model(x[i:i + batch_size]) for i in range(0, len(x), batch_size)])
