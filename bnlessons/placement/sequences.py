"""Normalisation in a sequence model: what it leaks, and what padding does to it.

In a causal model the output at step t may depend on inputs at steps <= t of
the same sequence, and on nothing else. BN over (batch, time) computes its
statistics from every step of every sequence in the batch, so in training
mode each output depends on the future and on the other sequences. A
normalisation over the channels of one position (LayerNorm, RMSNorm) has no
such dependence. ``leakage`` measures both kinds by perturbation.

The normalisations here, for (N, C, T) input:

* ``nn.BatchNorm1d``: one mean and variance per channel over the batch and
  all steps;
* ``MaskedBatchNorm1d``: the same over the real (unpadded) steps only;
* ``StepBatchNorm1d``: one mean and variance per channel and step, over the
  batch (separate statistics per time step, as in Cooijmans et al.'s
  recurrent BN), with gamma and beta shared across steps;
* ``ChannelLayerNorm``: over the channels of each (sequence, step).

``CausalModel`` (built by ``causal_model``) is a causal convolution, one of
them, a ReLU and a second causal convolution; its forward pass takes the
sequences' lengths, which only ``MaskedBatchNorm1d`` uses. ``train_next_step``
trains it to predict the next step of white noise, which nothing that is
causal can predict: a training loss below 1 can only come from a leak.
"""
from __future__ import annotations

import copy
from typing import Callable, Optional, Sequence

import torch
import torch.nn.functional as F
from torch import nn

from bnlessons import running_stats
from bnlessons._own_work import refuse
from bnlessons._validate import as_float_tensor, check_int, check_module, check_number
from bnlessons.reproducibility import derive_seed, seeded


class CausalConv1d(nn.Conv1d):
    """A 1-D convolution over time that sees only the present and the past:
    the input is padded with ``kernel_size - 1`` zeros on the left only."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int,
                 bias: bool = True) -> None:
        super().__init__(in_channels, out_channels, kernel_size, bias=bias)
        self.left = kernel_size - 1

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return super().forward(F.pad(x, (self.left, 0)))


class ChannelLayerNorm(nn.Module):
    """LayerNorm over the channels of each (sequence, step) of an (N, C, T) input."""

    def __init__(self, channels: int) -> None:
        refuse("bnlessons.placement.sequences.ChannelLayerNorm", ("check_causal_norm",))
        super().__init__()
        self.norm = nn.LayerNorm(check_int(channels, "channels"))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.transpose(1, 2)).transpose(1, 2)


def real_steps(lengths: Sequence[int], steps: int) -> torch.Tensor:
    """A (N, T) boolean mask: True at the steps of each sequence that are not padding."""
    check_int(steps, "steps")
    for n in lengths:
        check_int(n, "length")
        if n > steps:
            raise ValueError(f"a length of {n} is more than the {steps} steps of the batch")
    return torch.arange(steps).unsqueeze(0) < torch.tensor(list(lengths)).unsqueeze(1)


class MaskedBatchNorm1d(nn.BatchNorm1d):
    """BN over (batch, time) whose statistics come from the real steps only.

    ``forward(x, lengths)``: in training mode, each channel's mean and (biased)
    variance are taken over the steps ``t < lengths[n]`` of every sequence
    ``n``, every step is normalised with them, and the running statistics
    follow them (PyTorch's update, unbiased variance). Without ``lengths``
    every step is real, which is ``nn.BatchNorm1d``. In eval mode it is
    ``nn.BatchNorm1d``.
    """

    def forward(self, x: torch.Tensor, lengths: Optional[Sequence[int]] = None) -> torch.Tensor:
        if not self.training or lengths is None:
            return super().forward(x)
        if x.dim() != 3 or len(lengths) != x.shape[0]:
            raise ValueError(f"need (N, C, T) input and one length per sequence, got "
                             f"{tuple(x.shape)} and {len(lengths)} lengths")
        mask = real_steps(lengths, x.shape[2]).unsqueeze(1).to(x.dtype)  # (N, 1, T)
        count = int(mask.sum())
        if count < 2:
            raise ValueError("need at least two real steps for batch statistics")
        mean = (x * mask).sum(dim=(0, 2)) / count
        var = (((x - mean[:, None]) ** 2) * mask).sum(dim=(0, 2)) / count
        with torch.no_grad():
            running_stats.update_buffers(self, mean.detach(),
                                         running_stats.unbiased(var.detach(), count))
        out = (x - mean[:, None]) * torch.rsqrt(var[:, None] + self.eps)
        if self.affine:
            out = out * self.weight[:, None] + self.bias[:, None]
        return out


class StepBatchNorm1d(nn.Module):
    """BN with separate statistics for every time step: for (N, C, T) input, each
    (channel, step) is normalised over the batch; gamma and beta are per channel,
    shared across steps. ``steps`` is the largest T it accepts (its running
    statistics are kept per step); shorter inputs use the first steps."""

    def __init__(self, channels: int, steps: int, eps: float = 1e-5,
                 momentum: float = 0.1) -> None:
        super().__init__()
        self.channels, self.steps = check_int(channels, "channels"), check_int(steps, "steps")
        self.norm = nn.BatchNorm1d(channels * steps, eps=eps, momentum=momentum, affine=False)
        self.weight = nn.Parameter(torch.ones(channels, 1))
        self.bias = nn.Parameter(torch.zeros(channels, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, c, t = x.shape
        if c != self.channels or t > self.steps:
            raise ValueError(f"expected (N, {self.channels}, T <= {self.steps}), got "
                             f"{tuple(x.shape)}")
        full = F.pad(x, (0, self.steps - t)).reshape(n, c * self.steps)
        out = self.norm(full).reshape(n, c, self.steps)[:, :, :t]
        return out * self.weight + self.bias


NORMS = ("bn", "masked bn", "ln", None)


class CausalModel(nn.Module):
    """Causal conv (kernel 3) -> norm -> ReLU -> causal conv (kernel 3), on (N, C, T).

    ``forward(x, lengths=None)`` passes ``lengths`` to the norm if it is a
    ``MaskedBatchNorm1d``. The first convolution has no bias before a BN
    layer of any kind (BN's mean subtraction would cancel it) and keeps it
    before any other norm.
    """

    def __init__(self, in_channels: int, channels: int, out_channels: int,
                 norm: nn.Module) -> None:
        super().__init__()
        check_module(norm, "norm")
        bn_like = isinstance(norm, (nn.BatchNorm1d, StepBatchNorm1d))
        self.conv1 = CausalConv1d(in_channels, channels, 3, bias=not bn_like)
        self.norm = norm
        self.act = nn.ReLU()
        self.conv2 = CausalConv1d(channels, out_channels, 3)

    def forward(self, x: torch.Tensor, lengths: Optional[Sequence[int]] = None
                ) -> torch.Tensor:
        z = self.conv1(x)
        z = self.norm(z, lengths) if isinstance(self.norm, MaskedBatchNorm1d) else self.norm(z)
        return self.conv2(self.act(z))


def causal_model(*, in_channels: int, channels: int, out_channels: int,
                 norm: Optional[str], seed: int,
                 make_norm: Optional[Callable[[int], nn.Module]] = None,
                 dtype: torch.dtype = torch.float64) -> CausalModel:
    """A ``CausalModel`` with the norm ``norm`` (one of ``NORMS``: ``"bn"``,
    ``"masked bn"``, ``"ln"`` or ``None``), or, if ``make_norm`` is given,
    ``make_norm(channels)`` (``norm`` is then ignored). Weights come from
    ``seed``; torch's global random state is left alone. Float64 by default,
    for exact leakage measurements. The sizes and the seed have no defaults.
    """
    if make_norm is None and norm not in NORMS:
        raise ValueError(f"norm must be one of {NORMS}, got {norm!r}")
    with seeded(seed):
        if make_norm is not None:
            layer = make_norm(channels)
        else:
            layer = {"bn": lambda: nn.BatchNorm1d(channels),
                     "masked bn": lambda: MaskedBatchNorm1d(channels),
                     "ln": lambda: ChannelLayerNorm(channels),
                     None: nn.Identity}[norm]()
        model = CausalModel(in_channels, channels, out_channels, layer)
    return model.to(dtype)


@torch.no_grad()
def leakage_map(model: nn.Module, x: torch.Tensor, step: int, size: float = 1.0,
                seed: int = 0) -> dict[str, torch.Tensor]:
    """How much each output moves, per sequence and step (largest over channels), under
    two perturbations that a causal model of independent sequences must ignore:

    * ``"future"``: every input at steps >= ``step`` perturbed; the outputs at
      steps < ``step`` must not move;
    * ``"batch"``: every sequence but the first perturbed; the first sequence's
      outputs must not move.

    Returns two (N, T) tensors of absolute changes (the outputs that may move
    are included, for a picture). The model runs in its current mode; BN in
    training mode updates its running statistics, so pass a copy if they
    matter. ``x`` is (N, C, T).
    """
    check_module(model)
    x = as_float_tensor(x, "x")
    if x.dim() != 3 or x.shape[0] < 2:
        raise ValueError(f"x must be (N, C, T) with N >= 2 sequences, got {tuple(x.shape)}")
    check_int(step, "step", 1)
    if step >= x.shape[2]:
        raise ValueError(f"step must be < T = {x.shape[2]}, got {step}")
    g = torch.Generator().manual_seed(seed)
    noise = size * torch.randn(x.shape, generator=g, dtype=x.dtype)
    base = model(x)
    future = x.clone()
    future[:, :, step:] += noise[:, :, step:]
    others = x.clone()
    others[1:] += noise[1:]
    return {"future": (model(future) - base).abs().amax(dim=1),
            "batch": (model(others) - base).abs().amax(dim=1)}


def leakage(model: nn.Module, x: torch.Tensor, step: int, size: float = 1.0,
            seed: int = 0) -> dict[str, float]:
    """The largest change ``leakage_map`` finds where nothing may move: any output at
    steps < ``step`` (``"future"``), and the first sequence's outputs
    (``"batch"``). Both are 0 for a causal model of independent sequences."""
    maps = leakage_map(model, x, step, size, seed)
    return {"future": float(maps["future"][:, :step].max()),
            "batch": float(maps["batch"][0].max())}


def padded(x: torch.Tensor, lengths: Sequence[int], steps: Optional[int] = None
           ) -> torch.Tensor:
    """``x`` (N, C, T) with the steps after each sequence's length set to zero
    (padding), and, if ``steps`` > T is given, zeros appended up to ``steps``."""
    x = as_float_tensor(x, "x")
    if len(lengths) != x.shape[0]:
        raise ValueError(f"need one length per sequence ({x.shape[0]}), got {len(lengths)}")
    total = x.shape[2] if steps is None else check_int(steps, "steps")
    if total < x.shape[2]:
        raise ValueError(f"steps={total} is fewer than the {x.shape[2]} steps of x")
    out = F.pad(x, (0, total - x.shape[2]))
    out[~real_steps(lengths, total).unsqueeze(1).expand_as(out)] = 0.0
    return out


def white_noise(batch: int, channels: int, steps: int, generator: torch.Generator,
                dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """Standard normal sequences (batch, channels, steps): no step says anything
    about the next, so the best causal prediction of the next step is 0, with a
    mean squared error of exactly 1."""
    return torch.randn(check_int(batch, "batch"), check_int(channels, "channels"),
                       check_int(steps, "steps"), generator=generator, dtype=dtype)


def next_step_loss(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Mean squared error of the model's output at steps 0..T-2 against the input at
    steps 1..T-1 (the output has the input's channels)."""
    out = model(x)
    if out.shape != x.shape:
        raise ValueError(f"the model must map (N, C, T) to the same shape, got "
                         f"{tuple(out.shape)} for {tuple(x.shape)}")
    return F.mse_loss(out[:, :, :-1], x[:, :, 1:])


def train_next_step(model: nn.Module, *, steps: int, batch: int, length: int, lr: float,
                    seed: int) -> list[float]:
    """Train ``model`` with Adam to predict the next step of fresh white noise (a new
    batch of ``batch`` sequences of ``length`` steps at every update) and return
    the training loss of every update. The data and any draws in the model come
    from ``seed``; the caller's global random state is left alone."""
    check_module(model)
    check_int(steps, "steps")
    lr = check_number(lr, "lr")
    channels = next(m for m in model.modules() if isinstance(m, nn.Conv1d)).in_channels
    dtype = next(model.parameters()).dtype
    g = torch.Generator().manual_seed(derive_seed(seed, "data"))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    losses = []
    model.train()
    with seeded(derive_seed(seed, "forward")):
        for _ in range(steps):
            loss = next_step_loss(model, white_noise(batch, channels, length, g, dtype))
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(loss.item())
    return losses


@torch.no_grad()
def evaluate_next_step(model: nn.Module, x: torch.Tensor, batch: int) -> dict[str, float]:
    """``next_step_loss`` on ``x`` in both modes: ``"eval"`` (the running statistics:
    how the model is used, one step at a time) and ``"train"`` (batch statistics
    over consecutive groups of ``batch`` sequences: what training saw). Runs on
    a copy, so the model's modes and running statistics are left alone."""
    check_module(model)
    x = as_float_tensor(x, "x")
    check_int(batch, "batch")
    if len(x) % batch:
        raise ValueError(f"{len(x)} sequences do not split into batches of {batch}")
    copy_ = copy.deepcopy(model)
    eval_loss = float(next_step_loss(copy_.eval(), x))
    copy_.train()
    train_loss = sum(float(next_step_loss(copy_, x[i:i + batch]))
                     for i in range(0, len(x), batch)) / (len(x) // batch)
    return {"eval": eval_loss, "train": train_loss}
