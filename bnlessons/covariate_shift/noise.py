"""Noise after batch normalization: Santurkar et al.'s "noisy BN" (2018, section 2.1).

BN leaves each unit with a steady mean and variance. ``ShiftScaleNoise``
undoes that on purpose: at every training step each unit gets a random mean
shift and scale, and every sample a jittered copy of them, so the next
layer sees inputs whose distribution keeps moving. ``noisy_mlp`` puts the
noise after the norm of every hidden layer, with or without BN; there the
mean shift is measured in units of each unit's own spread, so that the
noise moves a network without BN (whose pre-activations may be far from unit
scale) as much, relatively, as one with BN. ``step_drift`` measures how far
what a layer sees moves from one SGD step to the next.
"""
from __future__ import annotations

import copy
from dataclasses import dataclass
from typing import Mapping, Optional

import torch
import torch.nn.functional as F
from torch import nn

from bnlessons._own_work import refuse
from bnlessons._validate import (
    as_float_tensor,
    check_bool,
    check_int,
    check_nonnegative,
    check_pair,
    check_positive,
    reduce_dims,
)
from bnlessons.models import MLP, InitSpec

# Santurkar et al.'s recipe: per unit and step mu ~ U(-0.5, 0.5), sigma ~ U(1, 1.25);
# per sample m ~ U(mu - 0.1, mu + 0.1), s ~ N(sigma, 0.1); then a <- s * a + m.
MEAN_RANGE = 0.5
SCALE_RANGE = (1.0, 1.25)
SAMPLE_RANGE = 0.1
SAMPLE_STD = 0.1


class ShiftScaleNoise(nn.Module):
    """a -> s * a + m with a fresh random shift and scale per unit and step.

    Per unit (channel, dimension 1) and forward pass: mu ~ U(-mean_range,
    mean_range) and sigma ~ U(*scale_range). Per sample and unit:
    m ~ U(mu - sample_range, mu + sample_range) and s ~ N(sigma, sample_std).
    In eval mode it applies the expected transform instead, a -> E[s] a + E[m]
    = a * (low + high) / 2 for ``scale_range`` = (low, high): the next layer
    then sees, on average, what it saw in training (as dropout rescales).
    With ``relative=True`` the shift m is multiplied by each unit's standard
    deviation over the batch (Santurkar et al. add the noise to BN's output,
    whose units have spread about 1; this keeps that proportion anywhere).
    Draws from ``generator`` if given, else torch's global one.
    """

    def __init__(self, mean_range: float = MEAN_RANGE,
                 scale_range: tuple[float, float] = SCALE_RANGE,
                 sample_range: float = SAMPLE_RANGE, sample_std: float = SAMPLE_STD,
                 generator: Optional[torch.Generator] = None, relative: bool = False) -> None:
        refuse("bnlessons.covariate_shift.noise.ShiftScaleNoise", ("check_noise_layer",))
        super().__init__()
        self.mean_range = check_nonnegative(mean_range, "mean_range")
        self.scale_range = check_pair(scale_range, "scale_range")
        self.sample_range = check_nonnegative(sample_range, "sample_range")
        self.sample_std = check_nonnegative(sample_std, "sample_std")
        self.relative = check_bool(relative, "relative")
        self.generator = generator

    @property
    def expected_scale(self) -> float:
        """E[s], the mean of the per-sample scale: the middle of ``scale_range``."""
        return 0.5 * (self.scale_range[0] + self.scale_range[1])

    def extra_repr(self) -> str:
        return (f"mean_range={self.mean_range}, scale_range={self.scale_range}, "
                f"sample_range={self.sample_range}, sample_std={self.sample_std}, "
                f"relative={self.relative}")

    def _uniform(self, shape: tuple[int, ...], low, high, like: torch.Tensor) -> torch.Tensor:
        u = torch.rand(shape, generator=self.generator, dtype=like.dtype)
        return low + (high - low) * u

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if as_float_tensor(a, "input").dim() < 2:
            raise ValueError(f"input must have shape (N, C) or (N, C, ...), "
                             f"got {tuple(a.shape)}")
        if not self.training:
            return a * self.expected_scale
        n, c = a.shape[0], a.shape[1]
        mu = self._uniform((1, c), -self.mean_range, self.mean_range, a)
        sigma = self._uniform((1, c), *self.scale_range, a)
        m = self._uniform((n, c), mu - self.sample_range, mu + self.sample_range, a)
        s = sigma + self.sample_std * torch.randn((n, c), generator=self.generator,
                                                  dtype=a.dtype)
        shape = (n, c) + (1,) * (a.dim() - 2)
        shift = m.reshape(shape)
        if self.relative:
            dims = reduce_dims(a)
            shift = shift * a.detach().std(dim=dims, keepdim=True)
        return s.reshape(shape) * a + shift


def noisy_mlp(in_features: int, num_classes: int, width: int = 128, depth: int = 8,
              activation: str = "relu", norm: Optional[str] = "bn",
              init: InitSpec = "he", noise: bool = True) -> MLP:
    """A ``bnlessons.models.MLP`` with ``ShiftScaleNoise`` right after each hidden norm.

    With ``norm=None`` the noise follows the linear map directly: the same
    noise in a network without BN. ``noise=False`` gives the plain MLP. The
    noise's mean shift is relative to each unit's spread (``relative=True``).
    """
    model = MLP(in_features, num_classes, width=width, depth=depth, activation=activation,
                norm=norm, init=init)
    if noise:
        for block in model.blocks:
            block.norm = nn.Sequential(block.norm, ShiftScaleNoise(relative=True))
    return model


@dataclass(frozen=True)
class Drift:
    """How far a layer's input moved per SGD step, in units of each unit's spread.

    ``mean``: the change of each unit's mean over the batch. ``per_example``:
    the change of each example's value, averaged over the examples. Both are
    averaged over the steps, divided by the unit's standard deviation over the
    batch, and summarised by the median over units. Where the batch mean is
    fixed by construction (a BN output in training mode has batch mean beta),
    ``mean`` only sees beta move, while ``per_example`` still sees every
    example move relative to the others.
    """

    mean: float
    per_example: float


def step_drift(model: nn.Module, x: torch.Tensor, y: torch.Tensor, lr: float,
               inputs_of: Mapping[str, str], steps: int) -> dict[str, Drift]:
    """How far the input of each named submodule moves per SGD step, relative to its spread.

    On a copy of ``model`` in training mode (the model itself and torch's
    global random state are left alone), records the input of each
    submodule named in ``inputs_of`` (label -> name as in
    ``model.named_modules()``) on the batch ``x``, takes a plain SGD step of
    size ``lr`` on (x, y), and repeats ``steps`` times. Returns a ``Drift``
    for each label. Everything that moves a layer's input counts: the
    updates of the layers below, and fresh noise drawn at every forward pass.
    """
    check_positive(lr, "lr")
    check_int(steps, "steps", 1)
    probe = copy.deepcopy(model).train()
    named = dict(probe.named_modules())
    missing = [name for name in inputs_of.values() if name not in named]
    if missing:
        raise ValueError(f"no submodule named {missing} in {type(model).__name__}")
    seen: dict[str, list[torch.Tensor]] = {label: [] for label in inputs_of}

    def hook_for(label: str):
        def hook(module, inputs, output):
            # one unit per feature (and position)
            seen[label].append(inputs[0].detach().flatten(1).clone())
        return hook

    handles = [named[name].register_forward_hook(hook_for(label))
               for label, name in inputs_of.items()]
    opt = torch.optim.SGD(probe.parameters(), lr=lr)
    try:
        with torch.random.fork_rng(devices=[]):
            for _ in range(steps + 1):
                loss = F.cross_entropy(probe(x), y)
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
    finally:
        for handle in handles:
            handle.remove()
    drift = {}
    for label, values in seen.items():
        z = torch.stack(values)  # (steps + 1, batch, units)
        spread = z[:-1].std(dim=1).clamp_min(1e-12)  # (steps, units)
        mean_moves = (z[1:].mean(dim=1) - z[:-1].mean(dim=1)).abs() / spread
        example_moves = (z[1:] - z[:-1]).abs().mean(dim=1) / spread
        drift[label] = Drift(mean_moves.mean(dim=0).median().item(),
                             example_moves.mean(dim=0).median().item())
    return drift
