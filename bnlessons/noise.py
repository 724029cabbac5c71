"""Noise after batch normalization: Santurkar et al.'s "noisy BN" (2018, section 2.1).

BN leaves each unit with a steady mean and variance. ``ShiftScaleNoise``
undoes that on purpose: at every training step each unit gets a random mean
shift and scale, and every sample a jittered copy of them, so the next
layer sees inputs whose distribution keeps moving, far more than without
any normalisation. ``noisy_mlp`` puts the noise after the norm of every
hidden layer, with or without BN.
"""
from __future__ import annotations

from typing import Optional

import torch
from torch import nn

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
    Draws from ``generator`` if given, else torch's global one.
    """

    def __init__(self, mean_range: float = MEAN_RANGE,
                 scale_range: tuple[float, float] = SCALE_RANGE,
                 sample_range: float = SAMPLE_RANGE, sample_std: float = SAMPLE_STD,
                 generator: Optional[torch.Generator] = None) -> None:
        super().__init__()
        for name, value in (("mean_range", mean_range), ("sample_range", sample_range),
                            ("sample_std", sample_std)):
            if isinstance(value, bool) or not isinstance(value, (int, float)) or value < 0:
                raise ValueError(f"{name} must be a number >= 0, got {value!r}")
        if (not isinstance(scale_range, (tuple, list)) or len(scale_range) != 2
                or not scale_range[0] <= scale_range[1]):
            raise ValueError(f"scale_range must be a pair (low, high) with low <= high, "
                             f"got {scale_range!r}")
        self.mean_range = float(mean_range)
        self.scale_range = (float(scale_range[0]), float(scale_range[1]))
        self.sample_range = float(sample_range)
        self.sample_std = float(sample_std)
        self.generator = generator

    @property
    def expected_scale(self) -> float:
        """E[s], the mean of the per-sample scale: the middle of ``scale_range``."""
        return 0.5 * (self.scale_range[0] + self.scale_range[1])

    def extra_repr(self) -> str:
        return (f"mean_range={self.mean_range}, scale_range={self.scale_range}, "
                f"sample_range={self.sample_range}, sample_std={self.sample_std}")

    def _uniform(self, shape: tuple[int, ...], low, high, like: torch.Tensor) -> torch.Tensor:
        u = torch.rand(shape, generator=self.generator, dtype=like.dtype)
        return low + (high - low) * u

    def forward(self, a: torch.Tensor) -> torch.Tensor:
        if not isinstance(a, torch.Tensor) or not a.is_floating_point() or a.dim() < 2:
            raise ValueError("input must be a float tensor of shape (N, C) or (N, C, ...)")
        if not self.training:
            return a * self.expected_scale
        n, c = a.shape[0], a.shape[1]
        mu = self._uniform((1, c), -self.mean_range, self.mean_range, a)
        sigma = self._uniform((1, c), *self.scale_range, a)
        m = self._uniform((n, c), mu - self.sample_range, mu + self.sample_range, a)
        s = sigma + self.sample_std * torch.randn((n, c), generator=self.generator,
                                                  dtype=a.dtype)
        shape = (n, c) + (1,) * (a.dim() - 2)
        return s.reshape(shape) * a + m.reshape(shape)


def noisy_mlp(in_features: int, num_classes: int, width: int = 128, depth: int = 8,
              activation: str = "relu", norm: Optional[str] = "bn",
              init: InitSpec = "glorot", noise: bool = True) -> MLP:
    """A ``bnlessons.models.MLP`` with ``ShiftScaleNoise`` right after each hidden norm.

    With ``norm=None`` the noise follows the linear map directly: the same
    noise in a network without BN. ``noise=False`` gives the plain MLP.
    """
    model = MLP(in_features, num_classes, width=width, depth=depth, activation=activation,
                norm=norm, init=init)
    if noise:
        for block in model.blocks:
            block.norm = nn.Sequential(block.norm, ShiftScaleNoise())
    return model
