"""Batch normalization when the normalisation batch is small.

* ``GhostBatchNorm1d``: normalises each consecutive group of ``ghost_size``
  examples of a training batch with that group's own statistics ("ghost
  batch normalization"). The optimiser still sees the whole batch, so the
  normalisation batch size g can be varied with everything else fixed.
* ``BatchRenorm1d``: Batch Renormalization (Ioffe 2017) on top of the same
  grouping: ``xhat = (x - mu_B) / sigma_B * r + d`` with
  ``r = clip(sigma_B / sigma, 1/r_max, r_max)`` and
  ``d = clip((mu_B - mu) / sigma, -d_max, d_max)`` computed from the running
  statistics (mu, sigma) and treated as constants by the gradient. Unclipped,
  this is exactly the eval-mode map ``(x - mu) / sigma``; ``r_max = 1,
  d_max = 0`` is plain BN. The limits start there and open up after a
  warm-up.
* ``use_ghost_batchnorm`` swaps every ``nn.BatchNorm1d`` of a model for one of
  these, keeping its parameters.
* ``train_mlp`` trains one MLP of the lesson's experiments with a chosen
  normalisation (BN with normalisation batch g, Batch Renormalization,
  LayerNorm, GroupNorm) at a fixed training batch size and budget.

Both layers update ``running_mean`` / ``running_var`` once per training
batch with the average of the groups' means and of their **unbiased**
variances (Algorithm 2 applied to the groups), with PyTorch's ``momentum``
semantics (``None`` for a cumulative average). In eval mode they are
ordinary ``nn.BatchNorm1d`` layers.
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import torch
from torch import nn

from bnlessons import running_stats
from bnlessons._validate import (
    check_bn_input,
    check_bool,
    check_int,
    check_nonnegative,
    check_number,
)
from bnlessons.inference.bn_modes import replace_batchnorm
from bnlessons.reproducibility import seeded

if TYPE_CHECKING:
    from bnlessons.data import Dataset
    from bnlessons.train import History


def _group_moments(xg: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Mean, centred values and biased variance over dimension 1 of (groups, g, C).

    Written with elementwise operations: on a CPU this is many times faster
    than ``Tensor.var(dim=1)`` for small groups.
    """
    mean = xg.mean(dim=1, keepdim=True)
    centred = xg - mean
    var = (centred * centred).mean(dim=1, keepdim=True)
    return mean, centred, var


class GhostBatchNorm1d(nn.BatchNorm1d):
    """``nn.BatchNorm1d`` for (N, C) input that normalises groups of ``ghost_size`` examples.

    In training mode N must be a multiple of ``ghost_size``; with
    ``ghost_size == N`` the layer is exactly ``nn.BatchNorm1d``.
    """

    def __init__(self, num_features: int, ghost_size: int, eps: float = 1e-5,
                 momentum: Optional[float] = 0.1, affine: bool = True) -> None:
        super().__init__(num_features, eps=eps, momentum=momentum, affine=affine,
                         track_running_stats=True)
        self.ghost_size = check_int(ghost_size, "ghost_size", 2)

    def extra_repr(self) -> str:
        return super().extra_repr() + f", ghost_size={self.ghost_size}"

    def _groups(self, x: torch.Tensor) -> torch.Tensor:
        x = check_bn_input(x, "input")
        if x.dim() != 2 or x.shape[1] != self.num_features:
            raise ValueError(f"input must have shape (N, {self.num_features}), got "
                             f"{tuple(x.shape)}")
        n = x.shape[0]
        if n % self.ghost_size:
            raise ValueError(f"the batch size {n} must be a multiple of ghost_size="
                             f"{self.ghost_size} in training mode")
        return x.reshape(n // self.ghost_size, self.ghost_size, self.num_features)

    @torch.no_grad()
    def _update(self, group_mean: torch.Tensor, group_var: torch.Tensor) -> None:
        """group_mean, group_var: (groups, 1, C), the biased variance of each group."""
        mean = group_mean.mean(dim=(0, 1))
        var = running_stats.unbiased(group_var, self.ghost_size).mean(dim=(0, 1))
        running_stats.update_buffers(self, mean, var)

    def _affine(self, xhat: torch.Tensor) -> torch.Tensor:
        if self.affine:
            return xhat * self.weight + self.bias
        return xhat

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        xg = self._groups(x)
        mean, centred, var = _group_moments(xg)
        xhat = centred * torch.rsqrt(var + self.eps)
        self._update(mean.detach(), var.detach())
        return self._affine(xhat.reshape(x.shape))


class BatchRenorm1d(GhostBatchNorm1d):
    """Batch Renormalization over groups of ``ghost_size`` examples.

    For the first ``warmup_steps`` training batches the limits are
    ``r_max = 1, d_max = 0`` (plain BN, while the running statistics settle);
    over the next ``ramp_steps`` batches they grow linearly to ``r_max`` and
    ``d_max``. ``limits()`` gives the current pair.

    ``track_std=False`` keeps the running variance as ghost BN does (the
    groups' unbiased variances), so ``sigma = sqrt(running_var + eps)`` is
    the population standard deviation. ``track_std=True`` follows Algorithm 1
    of the paper: ``sigma`` is a moving average of the groups' own
    ``sigma_B = sqrt(var_B + eps)`` (biased variance), stored as
    ``running_var = sigma**2 - eps`` so that eval mode divides by it. For
    small groups ``E[sigma_B]`` is well below the population standard
    deviation (about 0.56 of it for g = 2 and Gaussian values), and the two
    choices differ by that factor.
    """

    def __init__(self, num_features: int, ghost_size: int, r_max: float = 3.0,
                 d_max: float = 5.0, warmup_steps: int = 100, ramp_steps: int = 400,
                 eps: float = 1e-5, momentum: Optional[float] = 0.1, affine: bool = True,
                 track_std: bool = False) -> None:
        super().__init__(num_features, ghost_size, eps=eps, momentum=momentum, affine=affine)
        self.track_std = check_bool(track_std, "track_std")
        self.r_max = check_number(r_max, "r_max", low=1)
        self.d_max = check_nonnegative(d_max, "d_max")
        self.warmup_steps = check_int(warmup_steps, "warmup_steps", 0)
        self.ramp_steps = check_int(ramp_steps, "ramp_steps", 0)

    def extra_repr(self) -> str:
        return (super().extra_repr() + f", r_max={self.r_max}, d_max={self.d_max}, "
                f"warmup_steps={self.warmup_steps}, ramp_steps={self.ramp_steps}, "
                f"track_std={self.track_std}")

    def limits(self) -> tuple[float, float]:
        """The clipping limits (r_max, d_max) for the next training batch."""
        batch = int(self.num_batches_tracked) + 1  # the batch about to be normalised
        done = batch - self.warmup_steps
        if done <= 0:
            return 1.0, 0.0
        frac = 1.0 if self.ramp_steps == 0 else min(1.0, done / self.ramp_steps)
        return 1.0 + frac * (self.r_max - 1.0), frac * self.d_max

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training:
            return super().forward(x)
        xg = self._groups(x)
        r_max, d_max = self.limits()
        mean, centred, var = _group_moments(xg)
        std = torch.sqrt(var + self.eps)
        with torch.no_grad():
            run_std = torch.sqrt(self.running_var + self.eps)
            r = (std / run_std).clamp(1.0 / r_max, r_max)
            d = ((mean - self.running_mean) / run_std).clamp(-d_max, d_max)
        xhat = centred / std * r + d
        if self.track_std:
            self._update_std(mean.detach(), std.detach())
        else:
            self._update(mean.detach(), var.detach())
        return self._affine(xhat.reshape(x.shape))

    @torch.no_grad()
    def _update_std(self, group_mean: torch.Tensor, group_std: torch.Tensor) -> None:
        """Algorithm 1's update: moving averages of mu_B and of sigma_B (not sigma_B**2)."""
        self.num_batches_tracked += 1
        weight = running_stats.new_batch_weight(self.momentum, int(self.num_batches_tracked))
        self.running_mean.copy_(running_stats.blend(self.running_mean,
                                                    group_mean.mean(dim=(0, 1)), weight))
        sigma = running_stats.blend(torch.sqrt(self.running_var + self.eps),
                                    group_std.mean(dim=(0, 1)), weight)
        self.running_var.copy_(sigma * sigma - self.eps)


def use_ghost_batchnorm(model: nn.Module, ghost_size: int, renorm: bool = False,
                        **renorm_options: float) -> int:
    """Replace every ``nn.BatchNorm1d`` of ``model`` (in place) by a ghost or renorm layer.

    Parameters and buffers are copied. ``renorm_options`` (r_max, d_max,
    warmup_steps, ramp_steps) go to ``BatchRenorm1d``. Returns how many layers
    were replaced.
    """
    check_int(ghost_size, "ghost_size", 2)
    if renorm_options and not renorm:
        raise ValueError("renorm options were given but renorm=False")

    def factory(bn: nn.Module) -> nn.Module:
        if renorm:
            new: GhostBatchNorm1d = BatchRenorm1d(bn.num_features, ghost_size, eps=bn.eps,
                                                  momentum=bn.momentum, affine=bn.affine,
                                                  **renorm_options)
        else:
            new = GhostBatchNorm1d(bn.num_features, ghost_size, eps=bn.eps,
                                   momentum=bn.momentum, affine=bn.affine)
        new.load_state_dict(bn.state_dict())
        return new

    count = replace_batchnorm(model, factory, kinds=(nn.BatchNorm1d,))
    if count == 0:
        raise ValueError("model has no nn.BatchNorm1d layer to replace")
    return count


def train_mlp(data: "Dataset", *, seed: int, steps: int, norm: Optional[str], width: int,
              depth: int, batch_size: int, lr: float, momentum: float,
              ghost_size: Optional[int] = None, renorm: bool = False,
              renorm_options: Optional[dict] = None,
              progress: bool = False) -> tuple[nn.Module, "History"]:
    """Train one MLP of the small-batch experiments; returns ``(model, history)``.

    Every setting of the experiment is a keyword argument without a default:
    the lesson that runs it states them.

    ``norm`` is any of ``bnlessons.models.NORMS``. For BN, ``ghost_size``
    (the normalisation batch g) below ``batch_size`` swaps in
    ``GhostBatchNorm1d``, and ``renorm=True`` swaps in ``BatchRenorm1d``
    (with ``renorm_options``), so that only the normalisation changes while
    the optimiser keeps seeing batches of ``batch_size``. The weights are
    initialised from ``seed`` and the minibatches drawn from it.
    """
    from bnlessons.models import MLP
    from bnlessons.train import train

    if ghost_size is not None and norm not in ("bn",):
        raise ValueError(f"ghost_size needs norm='bn', got norm={norm!r}")
    if renorm and ghost_size is None:
        raise ValueError("renorm=True needs a ghost_size (use batch_size for whole batches)")
    if ghost_size is not None and batch_size % ghost_size:
        raise ValueError(f"ghost_size={ghost_size} must divide batch_size={batch_size}")
    with seeded(seed):
        model = MLP(data.num_features, data.num_classes, width=width, depth=depth, norm=norm)
        if renorm:
            use_ghost_batchnorm(model, ghost_size, renorm=True, **(renorm_options or {}))
        elif ghost_size is not None and ghost_size < batch_size:
            use_ghost_batchnorm(model, ghost_size)
        history = train(model, data, steps=steps, lr=lr, batch_size=batch_size,
                        momentum=momentum, seed=seed, eval_every=steps, progress=progress)
    return model, history
