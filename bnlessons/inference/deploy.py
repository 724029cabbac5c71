"""Batch normalization after training: folding it away, and adapting it to new data.

In eval mode a BN layer is a fixed affine map per channel,
``y = s * (z - running_mean) + beta`` with ``s = gamma / sqrt(running_var + eps)``.
If the layer before it is affine too (``z = W u + b``), the two collapse into
one layer with weight ``s[:, None] * W`` and bias ``s * (b - running_mean) + beta``:

* ``fold_linear_bn`` / ``fold_conv_bn``: one Linear (Conv2d) + BN pair.
* ``fold_batchnorm``: a copy of a whole model with every foldable pair folded
  (consecutive pairs in an ``nn.Sequential``, and the ``.linear`` / ``.norm``
  pair of ``bnlessons.models.HiddenBlock`` with BN before the activation).

Under test-time covariate shift the running statistics describe the wrong
inputs. AdaBN (Li et al. 2016) re-estimates them on unlabelled data from the
new distribution, leaving every weight alone:

* ``shift_images``: a few simple, deterministic shifts of images in [0, 1].
* ``adapt_bn``: a copy of a model with its BN statistics recomputed on the
  unlabelled shifted inputs (precise BN on the new data).

What folding saves: ``operation_counts`` (multiply-adds against the elements
BN touches), ``bn_time`` (the BN layers timed alone), ``forward_time`` and
``paired_time_ratios`` (interleaved rounds of two models, one ratio per
round, so that the spread shows the noise).
"""
from __future__ import annotations

import copy

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlessons._own_work import answers
from bnlessons._validate import as_float_tensor, check_int, check_module, check_number
from bnlessons.inference.precise_bn import recompute_bn_stats
from bnlessons.measure import median_time
from bnlessons.train import eval_mode


def _check_bn(bn: object, kind: type, out_features: int, name: str) -> _BatchNorm:
    if not isinstance(bn, kind):
        raise TypeError(f"bn must be an {kind.__name__} to follow a {name}, got "
                        f"{type(bn).__name__}")
    if bn.running_mean is None or bn.running_var is None:
        raise ValueError("bn has no running statistics (track_running_stats=False): in eval "
                         "mode it still uses batch statistics and cannot be folded")
    if bn.num_features != out_features:
        raise ValueError(f"bn has {bn.num_features} features but the {name} produces "
                         f"{out_features}")
    return bn


@torch.no_grad()
def _folded_weight_bias(weight: torch.Tensor, bias: torch.Tensor | None,
                        bn: _BatchNorm) -> tuple[torch.Tensor, torch.Tensor]:
    scale = torch.rsqrt(bn.running_var + bn.eps)
    if bn.affine:
        scale = bn.weight * scale
    shift = bn.bias if bn.affine else torch.zeros_like(scale)
    b = bias if bias is not None else torch.zeros_like(scale)
    new_weight = weight * scale.reshape((-1,) + (1,) * (weight.dim() - 1))
    new_bias = scale * (b - bn.running_mean) + shift
    return new_weight, new_bias


@answers("check_fold_linear")
def fold_linear_bn(linear: nn.Linear, bn: nn.BatchNorm1d) -> nn.Linear:
    """One ``nn.Linear`` (with bias) equal to ``bn(linear(u))`` with ``bn`` in eval mode."""
    if not isinstance(linear, nn.Linear):
        raise TypeError(f"linear must be an nn.Linear, got {type(linear).__name__}")
    bn = _check_bn(bn, nn.BatchNorm1d, linear.out_features, "Linear")
    weight, bias = _folded_weight_bias(linear.weight, linear.bias, bn)
    with torch.random.fork_rng(devices=[]):  # its random init is overwritten below
        out = nn.Linear(linear.in_features, linear.out_features, bias=True,
                        dtype=linear.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out


def fold_conv_bn(conv: nn.Conv2d, bn: nn.BatchNorm2d) -> nn.Conv2d:
    """One ``nn.Conv2d`` (with bias) equal to ``bn(conv(u))`` with ``bn`` in eval mode."""
    if not isinstance(conv, nn.Conv2d):
        raise TypeError(f"conv must be an nn.Conv2d, got {type(conv).__name__}")
    bn = _check_bn(bn, nn.BatchNorm2d, conv.out_channels, "Conv2d")
    weight, bias = _folded_weight_bias(conv.weight, conv.bias, bn)
    with torch.random.fork_rng(devices=[]):  # its random init is overwritten below
        out = nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size,
                        stride=conv.stride, padding=conv.padding, dilation=conv.dilation,
                        groups=conv.groups, bias=True, padding_mode=conv.padding_mode,
                        dtype=conv.weight.dtype)
    with torch.no_grad():
        out.weight.copy_(weight)
        out.bias.copy_(bias)
    return out


def _fold_pair(layer: nn.Module, bn: nn.Module) -> nn.Module | None:
    if isinstance(layer, nn.Linear) and type(bn) is nn.BatchNorm1d \
            and bn.running_mean is not None:
        return fold_linear_bn(layer, bn)
    if isinstance(layer, nn.Conv2d) and type(bn) is nn.BatchNorm2d \
            and bn.running_mean is not None:
        return fold_conv_bn(layer, bn)
    return None


@answers("check_fold_linear")
def fold_batchnorm(model: nn.Module) -> tuple[nn.Module, int]:
    """A copy of ``model`` for inference with every foldable BN folded; returns (copy, count).

    Folds a Linear/Conv2d immediately followed by a BatchNorm1d/2d inside an
    ``nn.Sequential``, and a ``HiddenBlock`` whose BN comes right after its
    linear layer. Each folded BN becomes ``nn.Identity``. The copy is in eval
    mode and equals the original in eval mode up to float rounding.
    """
    from bnlessons.models import HiddenBlock

    check_module(model, "model")
    folded = copy.deepcopy(model).eval()
    count = 0
    for module in list(folded.modules()):
        if isinstance(module, HiddenBlock) and module.norm_position == "before":
            new = _fold_pair(module.linear, module.norm)
            if new is not None:
                module.linear, module.norm = new, nn.Identity()
                count += 1
        elif isinstance(module, nn.Sequential):
            names = list(module._modules)
            for a, b in zip(names, names[1:]):
                new = _fold_pair(module._modules[a], module._modules[b])
                if new is not None:
                    module._modules[a], module._modules[b] = new, nn.Identity()
                    count += 1
    return folded.eval(), count


SHIFTS = ("contrast", "brightness", "gamma", "noise")


def shift_images(x: torch.Tensor, kind: str, amount: float, seed: int = 0) -> torch.Tensor:
    """A shifted copy of images ``x`` with values in [0, 1] (any shape).

    * ``contrast``: ``0.5 + amount * (x - 0.5)``, so ``amount < 1`` lowers contrast.
    * ``brightness``: ``clamp(x + amount, 0, 1)``: a shift that saturates.
    * ``gamma``: ``x ** amount``; ``amount < 1`` brightens mid-tones and thickens strokes.
    * ``noise``: ``x + amount * N(0, 1)`` with a generator seeded by ``seed``.
    """
    as_float_tensor(x, "x")
    if kind not in SHIFTS:
        raise ValueError(f"kind must be one of {SHIFTS}, got {kind!r}")
    check_number(amount, "amount")
    if kind == "contrast":
        return 0.5 + amount * (x - 0.5)
    if kind == "brightness":
        return (x + amount).clamp(0.0, 1.0)
    if kind == "gamma":
        if not amount > 0:
            raise ValueError(f"a gamma must be > 0, got {amount}")
        return x.clamp_min(0.0) ** amount
    g = torch.Generator().manual_seed(seed)
    return x + amount * torch.randn(x.shape, generator=g, dtype=x.dtype)


def adapt_bn(model: nn.Module, x_unlabelled: torch.Tensor, batch_size: int = 500) -> nn.Module:
    """AdaBN: a copy of ``model`` whose BN statistics are recomputed on ``x_unlabelled``.

    No labels and no gradient steps: only the running means and variances
    change, re-estimated (Algorithm 2, current weights) on the new inputs.
    """
    adapted = copy.deepcopy(model)
    recompute_bn_stats(adapted, x_unlabelled, batch_size)
    return adapted.eval()


@torch.no_grad()
def forward_time(model: nn.Module, x: torch.Tensor, number: int = 20, repeats: int = 15) -> float:
    """Seconds per eval-mode forward pass of ``model`` on ``x``, measured like every
    timing of the course (``measure.median_time``: the median over ``repeats`` of
    ``number`` calls, after a warm-up). Timings vary between machines and runs:
    print them, never compare them byte for byte.
    """
    check_module(model, "model")
    with eval_mode(model):
        return median_time(lambda: model(x), repeats=repeats, number=number, warmup=1)


def _forward_with_hooks(model: nn.Module, x: torch.Tensor, handles: list) -> None:
    """One eval-mode forward pass of ``model`` on ``x``, then the hooks' ``handles``
    removed (also when the pass fails), so that measuring leaves the model as it was."""
    try:
        with eval_mode(model):
            model(x)
    finally:
        for h in handles:
            h.remove()


@torch.no_grad()
def operation_counts(model: nn.Module, x: torch.Tensor) -> dict[str, int]:
    """Multiply-adds of the Linear/Conv2d layers and elements BN touches, for input ``x``.

    One eval-mode forward pass with hooks: a ``Linear`` layer costs
    ``in_features`` multiply-adds per output element, a ``Conv2d`` layer
    ``in_channels / groups * kernel area`` per output element; a BN layer
    (any ``_BatchNorm``) touches each of its output elements once, with one
    multiply and one add in eval mode. Returns ``{"multiply_adds": ...,
    "bn_elements": ...}``: the arithmetic that folding leaves and the
    elementwise work it removes.
    """
    check_module(model, "model")
    x = as_float_tensor(x, "x")
    counts = {"multiply_adds": 0, "bn_elements": 0}

    def hook(module: nn.Module, inputs: tuple, output: torch.Tensor) -> None:
        if isinstance(module, nn.Linear):
            counts["multiply_adds"] += output.numel() * module.in_features
        elif isinstance(module, nn.Conv2d):
            kh, kw = module.kernel_size
            per_output = module.in_channels // module.groups * kh * kw
            counts["multiply_adds"] += output.numel() * per_output
        elif isinstance(module, _BatchNorm):
            counts["bn_elements"] += output.numel()

    _forward_with_hooks(model, x, [m.register_forward_hook(hook) for m in model.modules()
                                   if isinstance(m, (nn.Linear, nn.Conv2d, _BatchNorm))])
    return counts


@torch.no_grad()
def bn_time(model: nn.Module, x: torch.Tensor, number: int = 20, repeats: int = 15) -> float:
    """Seconds per forward pass that the BN layers of ``model`` take on their own.

    One eval-mode pass records what each BN layer receives; each layer is
    then timed alone on that input (``measure.median_time``) and the times
    are summed. Like every timing, it varies between machines and runs.
    """
    check_module(model, "model")
    x = as_float_tensor(x, "x")
    inputs: dict[nn.Module, torch.Tensor] = {}

    def hook(module: nn.Module, args: tuple) -> None:
        inputs[module] = args[0].detach().clone()

    layers = [m for m in model.modules() if isinstance(m, _BatchNorm)]
    if not layers:
        raise ValueError("model has no BN layer to time")
    _forward_with_hooks(model, x, [m.register_forward_pre_hook(hook) for m in layers])
    with eval_mode(model):
        return sum(median_time(lambda m=m: m(inputs[m]), repeats=repeats, number=number,
                               warmup=1) for m in layers)


@torch.no_grad()
def paired_time_ratios(model_a: nn.Module, model_b: nn.Module, x: torch.Tensor,
                       rounds: int, number: int) -> list[float]:
    """Per round, (time of ``model_b``) / (time of ``model_a``) on ``x``, in eval mode.

    Each round times ``number`` forward passes of each model back to back,
    alternating which goes first, so that a slow spell of a shared machine
    falls on both models of a round. The spread of the ratios over rounds is
    the noise any difference must clear.
    """
    import time

    check_module(model_a, "model_a")
    check_module(model_b, "model_b")
    x = as_float_tensor(x, "x")
    check_int(rounds, "rounds", 1)
    check_int(number, "number", 1)

    def seconds(model: nn.Module) -> float:
        start = time.perf_counter()
        for _ in range(number):
            model(x)
        return time.perf_counter() - start

    ratios = []
    with eval_mode(model_a), eval_mode(model_b):
        model_a(x), model_b(x)  # warm-up
        for k in range(rounds):
            if k % 2:
                t_b, t_a = seconds(model_b), seconds(model_a)
            else:
                t_a, t_b = seconds(model_a), seconds(model_b)
            ratios.append(t_b / t_a)
    return ratios
