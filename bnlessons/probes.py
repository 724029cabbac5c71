"""Looking inside a network: per-layer activations, percentiles, means, variances.

``ActivationRecorder`` hooks named modules and keeps what flowed into (or out
of) them on the latest forward pass. The summary functions reduce those
tensors to the numbers the lessons plot: percentiles of one unit's input over
a batch, per-unit means and variances, and variance per layer.
"""
from __future__ import annotations

from typing import Sequence

import torch
from torch import nn

from bnlessons._own_work import answers
from bnlessons._validate import (
    as_float_tensor,
    check_module,
    check_positive,
    check_tensor,
    reduce_dims,
)
from bnlessons.train import eval_mode


class ActivationRecorder:
    """Record the input or output of named modules on each forward pass.

    Use as a context manager, or call ``remove()`` when done:

        with ActivationRecorder({"act3": model.blocks[2].act}) as rec:
            model(x)
        rec.last["act3"]  # the sigmoid's input, detached
    """

    def __init__(self, modules: dict[str, nn.Module], capture: str = "input") -> None:
        if capture not in ("input", "output"):
            raise ValueError(f"capture must be 'input' or 'output', got {capture!r}")
        if not modules:
            raise ValueError("modules is empty: name at least one module to record")
        for name, module in modules.items():
            check_module(module, f"modules[{name!r}]")
        self.capture = capture
        self.last: dict[str, torch.Tensor] = {}
        self._handles = [m.register_forward_hook(self._hook(n)) for n, m in modules.items()]

    def _hook(self, name: str):
        def hook(module, inputs, output):
            value = inputs[0] if self.capture == "input" else output
            self.last[name] = value.detach().clone()
        return hook

    def remove(self) -> None:
        for h in self._handles:
            h.remove()
        self._handles = []

    def __enter__(self) -> "ActivationRecorder":
        return self

    def __exit__(self, *exc) -> None:
        self.remove()


@torch.no_grad()
def capture_in_eval(model: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module],
                    capture: str = "input") -> dict[str, torch.Tensor]:
    """What flows into (or out of) each named module when ``model`` sees ``x`` in eval mode.

    BN layers use their running statistics and are not updated; no gradients
    are kept; the model's training mode is restored afterwards.
    """
    with eval_mode(model), ActivationRecorder(modules, capture) as rec:
        model(x)
    return rec.last


def activation_inputs(model: nn.Module) -> dict[str, nn.Module]:
    """The activation module of every hidden block, named ``layer1``, ``layer2``, ..."""
    blocks = getattr(model, "blocks", None)
    if blocks is None:
        raise ValueError(f"{type(model).__name__} has no .blocks; name the modules yourself")
    return {f"layer{i + 1}": b.act for i, b in enumerate(blocks)}


def percentiles(values: torch.Tensor, qs: Sequence[float] = (15, 50, 85)) -> torch.Tensor:
    """Percentiles over the batch dimension: (N, ...) -> (len(qs), ...)."""
    if check_tensor(values, "values").dim() < 1 or values.shape[0] < 1:
        raise ValueError(f"values must have a non-empty batch dimension 0, "
                         f"got shape {tuple(values.shape)}")
    q = torch.tensor([float(v) / 100.0 for v in qs], dtype=torch.float64)
    if (q < 0).any() or (q > 1).any():
        raise ValueError(f"percentiles must lie in [0, 100], got {tuple(qs)}")
    return torch.quantile(values.double(), q, dim=0).to(values.dtype)


def unit_stats(values: torch.Tensor) -> dict[str, torch.Tensor]:
    """Per-unit mean and (biased) variance over every dimension but 1."""
    dims = reduce_dims(values)
    return {"mean": values.mean(dim=dims), "var": values.var(dim=dims, unbiased=False)}


@torch.no_grad()
def layer_variances(model: nn.Module, x: torch.Tensor, modules: dict[str, nn.Module],
                    capture: str = "output") -> dict[str, float]:
    """Variance of each named module's output (or input) over all its entries."""
    with ActivationRecorder(modules, capture) as rec:
        model(x)
    return {name: float(rec.last[name].var(unbiased=False)) for name in modules}


def statistics_recorder(modules: dict[str, nn.Module], x_probe: torch.Tensor,
                        capture: str = "input", qs: Sequence[float] = (15, 50, 85)):
    """A ``record`` function for ``bnlessons.train.train``: per-layer statistics.

    At each evaluation step it runs the fixed batch ``x_probe`` through the
    model in eval mode and returns, for every named module, the percentiles
    ``qs`` of each unit's input (or output) over the batch, shape
    (len(qs), units), and each unit's mean and variance, under the keys
    ``"<name>/percentiles"``, ``"<name>/mean"`` and ``"<name>/var"``.
    """
    if check_tensor(x_probe, "x_probe").dim() < 1 or x_probe.shape[0] < 2:
        raise ValueError(f"x_probe must hold a batch of at least 2 examples, "
                         f"got shape {tuple(x_probe.shape)}")

    def record(model: nn.Module, step: int) -> dict[str, torch.Tensor]:
        seen = capture_in_eval(model, x_probe, modules, capture)
        out: dict[str, torch.Tensor] = {}
        for name in modules:
            values = seen[name].flatten(2) if seen[name].dim() > 2 else seen[name]
            out[f"{name}/percentiles"] = percentiles(values, qs)
            stats = unit_stats(values)
            out[f"{name}/mean"] = stats["mean"]
            out[f"{name}/var"] = stats["var"]
        return out

    return record


SATURATION_THRESHOLD = 4.0  # sigmoid'(4) = 0.018, about 7% of its peak of 0.25


def sigmoid_slope(z: torch.Tensor) -> torch.Tensor:
    """sigmoid'(z) = sigmoid(z) (1 - sigmoid(z)): at most 0.25, at z = 0."""
    s = torch.sigmoid(z)
    return s * (1 - s)


@answers("check_saturation")
def saturation(z: torch.Tensor, threshold: float = SATURATION_THRESHOLD) -> tuple[float, float]:
    """From samples ``z`` of a sigmoid's input: (fraction with |z| > threshold, mean sigmoid'(z)).

    The fraction says how many inputs sit on a flat part of the sigmoid; the
    mean slope is how much gradient, on average, the unit lets through.
    """
    z = as_float_tensor(z, "z")
    if z.numel() == 0:
        raise ValueError("z is empty")
    threshold = check_positive(threshold, "threshold")
    fraction = float((z.abs() > threshold).double().mean())
    return fraction, float(sigmoid_slope(z.double()).mean())
