"""Training mode, eval mode, and the buffers in between.

In training mode a BN layer normalises with the statistics of the batch in
front of it (so an example's output depends on its batch-mates) and updates
its running statistics; in eval mode it applies a fixed affine map built from
those running statistics. ``torch.no_grad()`` changes neither behaviour. The
helpers here make the difference measurable without disturbing the model:

* ``bn_layers`` (from ``bnlessons.models``) / ``bn_buffers``: find every BN
  layer, snapshot its buffers.
* ``logits_with_batch_stats`` / ``accuracy_with_batch_stats``: what a model
  predicts if it is (wrongly) run in training mode in batches of a given size,
  computed on a copy so the caller's running statistics stay untouched.
* ``replace_batchnorm`` / ``freeze_batchnorm``: swap BN layers for other
  modules, e.g. ``torchvision.ops.FrozenBatchNorm2d``, whose statistics and
  affine parameters are buffers that training cannot change.
"""
from __future__ import annotations

import copy
from typing import Callable

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlessons._validate import check_batch_size, check_module, check_tensor
from bnlessons.models import bn_layers
from bnlessons.train import eval_mode

BN_BUFFERS = ("running_mean", "running_var", "num_batches_tracked")


def bn_buffers(model: nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of every BN layer's running statistics and update count.

    Keys are ``"<layer name>.<buffer>"``. Compare two snapshots with
    ``buffers_changed`` to see whether something updated them.
    """
    out: dict[str, torch.Tensor] = {}
    for name, layer in bn_layers(model):
        for buf in BN_BUFFERS:
            value = getattr(layer, buf, None)
            if value is not None:
                out[f"{name}.{buf}"] = value.detach().clone()
    return out


def buffers_changed(before: dict[str, torch.Tensor], after: dict[str, torch.Tensor]) -> list[str]:
    """Names of the buffers that differ between two ``bn_buffers`` snapshots."""
    if set(before) != set(after):
        raise ValueError("the two snapshots come from models with different BN layers")
    return [k for k in before if not torch.equal(before[k], after[k])]


@torch.no_grad()
def logits_with_batch_stats(model: nn.Module, x: torch.Tensor, batch_size: int) -> torch.Tensor:
    """Logits of ``model`` run in **training mode** on consecutive batches of ``x``.

    Each BN layer then normalises with the statistics of the batch at hand,
    as happens when ``model.eval()`` is forgotten. Runs on a deep copy, so the
    caller's running statistics and mode are untouched. Only full batches are
    used: the output covers the first ``len(x) // batch_size * batch_size``
    examples.
    """
    check_module(model)
    check_tensor(x, "x")
    batch_size = check_batch_size(batch_size, len(x), minimum=1)
    work = copy.deepcopy(model).train()
    usable = len(x) // batch_size * batch_size
    return torch.cat([work(x[s:s + batch_size]) for s in range(0, usable, batch_size)])


def accuracy_with_batch_stats(model: nn.Module, x: torch.Tensor, y: torch.Tensor,
                              batch_size: int) -> float:
    """Accuracy of ``model`` in training mode on batches of ``batch_size`` (see above)."""
    logits = logits_with_batch_stats(model, x, batch_size)
    return float((logits.argmax(dim=1) == y[:len(logits)]).float().mean())


@torch.no_grad()
def eval_logits(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Logits in eval mode; the model's mode is restored afterwards."""
    check_module(model)
    with eval_mode(model):
        return model(x)


def replace_batchnorm(model: nn.Module, factory: Callable[[_BatchNorm], nn.Module],
                      kinds: tuple[type, ...] = (nn.BatchNorm1d, nn.BatchNorm2d)) -> int:
    """Replace, in place, every submodule of a type in ``kinds`` by ``factory(old)``.

    ``factory`` receives the old layer (to copy its parameters and buffers)
    and returns the new module. Returns how many layers were replaced.
    """
    check_module(model)
    if not callable(factory):
        raise TypeError(f"factory must be callable, got {type(factory).__name__}")
    replaced = 0
    for parent in list(model.modules()):
        for child_name, child in list(parent.named_children()):
            if isinstance(child, kinds):
                new = factory(child)
                check_module(new, "the module factory returned")
                setattr(parent, child_name, new)
                replaced += 1
    return replaced


def freeze_batchnorm(model: nn.Module) -> nn.Module:
    """A copy of ``model`` with every ``nn.BatchNorm2d`` made a ``FrozenBatchNorm2d``.

    ``torchvision.ops.FrozenBatchNorm2d`` holds gamma, beta and the running
    statistics as buffers and always applies the eval-mode affine map, so
    training mode and optimisers leave it alone. Raises if the model has no
    BatchNorm2d layer (FrozenBatchNorm2d is for (N, C, H, W) input only).
    """
    from torchvision.ops import FrozenBatchNorm2d

    frozen = copy.deepcopy(check_module(model))

    def factory(bn: _BatchNorm) -> nn.Module:
        if bn.running_mean is None:
            raise ValueError("a BatchNorm2d without running statistics cannot be frozen")
        new = FrozenBatchNorm2d(bn.num_features, eps=bn.eps)
        new.running_mean.copy_(bn.running_mean)
        new.running_var.copy_(bn.running_var)
        if bn.affine:
            new.weight.copy_(bn.weight.detach())
            new.bias.copy_(bn.bias.detach())
        return new

    if replace_batchnorm(frozen, factory, kinds=(nn.BatchNorm2d,)) == 0:
        raise ValueError("model has no nn.BatchNorm2d layer to freeze")
    return frozen
