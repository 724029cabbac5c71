"""The networks the lessons train, with the knobs the chapters turn.

* ``MLP``: depth, width, activation, normalisation (none, PyTorch's BN, the
  course's reference BN, LayerNorm, GroupNorm), BN before or after the
  activation, dropout, and the initial weight scale.
* ``ResidualMLP`` / ``ResidualCNN``: stacks of ``ResidualBlock``, pre- or
  post-activation, each branch optionally multiplied by a scalar (SkipInit).
* ``bn_layers``: every BN layer of a network, by name.
* ``small_cnn``: two convolutions with BN (before or after the nonlinearity,
  or none), small enough to train on 8x8 digits in a second; a plain
  ``nn.Sequential``, indexed by layer.

Submodules have stable names (``blocks[i].linear``, ``.norm``, ``.act``) so
that probes can hook, say, the input of every activation.

The block-network protocol: every network class here (and
``residual.fixup.FixupResidualMLP``) has ``.blocks``, an ``nn.ModuleList`` of
its repeated layers in order, and ``.head``, the final linear layer.
Helpers that look inside a network (``probes``, ``covariate_shift.ics``,
``residual.propagation``, ``residual.variants``,
``placement.residual_blocks``) rely on exactly these two names and nothing
else, and raise an error naming them when a model lacks one.
"""
from __future__ import annotations

from typing import Optional, Union

import torch
from torch import nn
from torch.nn.modules.batchnorm import _BatchNorm

from bnlessons._own_work import refuse
from bnlessons._validate import check_fraction, check_int, check_module, check_positive
from bnlessons.reference import BatchNorm

NORMS = (None, "bn", "reference", "ln", "gn")
ACTIVATIONS = ("relu", "sigmoid", "tanh", "linear")
InitSpec = Union[str, float]


def _check_choice(value: object, name: str, choices: tuple) -> None:
    if value not in choices:
        raise ValueError(f"{name} must be one of {choices}, got {value!r}")


def make_norm(kind: Optional[str], width: int, conv: bool = False, groups: int = 8) -> nn.Module:
    """A normalisation layer for ``width`` features (channels if ``conv``)."""
    _check_choice(kind, "norm", NORMS)
    if kind is None:
        return nn.Identity()
    if kind == "bn":
        return nn.BatchNorm2d(width) if conv else nn.BatchNorm1d(width)
    if kind == "reference":
        return BatchNorm(width)
    if kind == "ln":
        return nn.GroupNorm(1, width) if conv else nn.LayerNorm(width)
    if width % groups:
        raise ValueError(f"GroupNorm needs width divisible by groups={groups}, got {width}")
    return nn.GroupNorm(groups, width)


def make_activation(kind: str) -> nn.Module:
    _check_choice(kind, "activation", ACTIVATIONS)
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "linear": nn.Identity}[kind]()


def init_weights(module: nn.Module, init: InitSpec) -> None:
    """Initialise every Linear/Conv weight in ``module``; biases start at zero.

    ``init`` is "default" (PyTorch's), "he" (normal, std sqrt(2 / fan_in)),
    "glorot" (normal, std sqrt(2 / (fan_in + fan_out))) or a float: the
    standard deviation of a normal initialisation.
    """
    if init == "default":
        return
    if isinstance(init, str):
        if init not in ("he", "glorot"):
            raise ValueError(f"init must be 'default', 'he', 'glorot' or a float, got {init!r}")
    else:
        check_positive(init, "init (a standard deviation)")
    for m in module.modules():
        if isinstance(m, (nn.Linear, nn.Conv2d)):
            if init == "he":
                nn.init.kaiming_normal_(m.weight, nonlinearity="relu")
            elif init == "glorot":
                nn.init.xavier_normal_(m.weight)
            else:
                nn.init.normal_(m.weight, 0.0, float(init))
            if m.bias is not None:
                nn.init.zeros_(m.bias)


class HiddenBlock(nn.Module):
    """Linear -> [norm] -> activation -> [dropout], or norm after the activation."""

    def __init__(self, in_features: int, width: int, activation: str, norm: Optional[str],
                 norm_position: str, dropout: float) -> None:
        super().__init__()
        _check_choice(norm_position, "norm_position", ("before", "after"))
        self.norm_position = norm_position
        # A bias right before BN is cancelled by the mean subtraction.
        bias = not (norm in ("bn", "reference") and norm_position == "before")
        self.linear = nn.Linear(in_features, width, bias=bias)
        self.norm = make_norm(norm, width)
        self.act = make_activation(activation)
        self.drop = nn.Dropout(dropout) if dropout > 0 else nn.Identity()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        z = self.linear(x)
        if self.norm_position == "before":
            h = self.act(self.norm(z))
        else:
            h = self.norm(self.act(z))
        return self.drop(h)


class MLP(nn.Module):
    """A fully connected classifier of ``depth`` hidden layers of ``width`` units."""

    def __init__(self, in_features: int, num_classes: int, width: int = 100, depth: int = 3,
                 activation: str = "relu", norm: Optional[str] = None,
                 norm_position: str = "before", dropout: float = 0.0,
                 init: InitSpec = "default") -> None:
        super().__init__()
        check_int(in_features, "in_features")
        check_int(num_classes, "num_classes", 2)
        check_int(width, "width")
        check_int(depth, "depth", 0)
        check_fraction(dropout, "dropout", one=False)
        sizes = [in_features] + [width] * depth
        self.blocks = nn.ModuleList(
            HiddenBlock(a, width, activation, norm, norm_position, dropout) for a in sizes[:-1]
        )
        self.head = nn.Linear(sizes[-1], num_classes)
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x.flatten(1)
        for block in self.blocks:
            x = block(x)
        return self.head(x)


class ResidualBlock(nn.Module):
    """A residual block: ``x + alpha * f(x)`` (pre) or ``act(x + alpha * f(x))`` (post).

    Pre-activation branch: ``branch_layers`` times (norm -> activation -> linear).
    Post-activation branch: (linear -> norm -> activation) repeated, ending in
    linear -> norm. ``scale`` is the branch multiplier alpha: ``None`` for none,
    else a learnable scalar starting at that value (SkipInit uses 0).
    ``zero_init_last_norm`` sets the last norm's gamma to zero, so that a
    post-activation block starts as ``act(x)`` (Goyal et al. 2017). Only the
    post-activation branch ends in a norm; in a pre-activation branch the last
    norm feeds a ReLU and a linear layer, and a zero gamma there would cut the
    branch off from every gradient, so ``style="pre"`` refuses it.
    """

    def __init__(self, width: int, norm: Optional[str] = None, activation: str = "relu",
                 style: str = "pre", branch_layers: int = 1, scale: Optional[float] = None,
                 conv: bool = False, zero_init_last_norm: bool = False) -> None:
        super().__init__()
        _check_choice(style, "style", ("pre", "post"))
        check_int(branch_layers, "branch_layers")
        if style == "pre":
            refuse('bnlessons.models.ResidualBlock(style="pre")', ("check_preact_block",))
        if scale is not None:
            refuse("bnlessons.models.ResidualBlock(scale=...)", ("check_skipinit_block",))
        self.style = style

        def layer() -> nn.Module:
            bias = norm is None
            if conv:
                return nn.Conv2d(width, width, 3, padding=1, bias=bias)
            return nn.Linear(width, width, bias=bias)

        mods: list[nn.Module] = []
        for i in range(branch_layers):
            if style == "pre":
                mods += [make_norm(norm, width, conv), make_activation(activation), layer()]
            else:
                mods += [layer(), make_norm(norm, width, conv)]
                if i < branch_layers - 1:
                    mods.append(make_activation(activation))
        self.branch = nn.Sequential(*mods)
        self.act = make_activation(activation) if style == "post" else nn.Identity()
        if scale is None:
            self.register_parameter("scale", None)
        else:
            self.scale = nn.Parameter(torch.tensor(float(scale)))
        if zero_init_last_norm and style == "pre":
            raise ValueError("zero_init_last_norm applies to style='post' only: a pre-activation "
                             "branch ends in (norm, activation, linear), and a zero gamma before "
                             "the activation leaves the branch with no gradient at all")
        if zero_init_last_norm:
            norms = [m for m in self.branch if hasattr(m, "weight") and not
                     isinstance(m, (nn.Linear, nn.Conv2d))]
            if not norms or norms[-1].weight is None:
                raise ValueError("zero_init_last_norm needs an affine norm in the branch")
            nn.init.zeros_(norms[-1].weight)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        f = self.branch(x)
        if self.scale is not None:
            f = self.scale * f
        return self.act(x + f)


class ResidualMLP(nn.Module):
    """Linear stem -> ``depth`` residual blocks -> [norm] -> activation -> linear head."""

    def __init__(self, in_features: int, num_classes: int, width: int = 64, depth: int = 10,
                 norm: Optional[str] = None, activation: str = "relu", style: str = "pre",
                 branch_layers: int = 1, scale: Optional[float] = None,
                 init: InitSpec = "he", zero_init_last_norm: bool = False) -> None:
        super().__init__()
        check_int(in_features, "in_features")
        check_int(depth, "depth", 0)
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(
            ResidualBlock(width, norm, activation, style, branch_layers, scale,
                          zero_init_last_norm=zero_init_last_norm) for _ in range(depth)
        )
        self.final_norm = make_norm(norm, width) if style == "pre" else nn.Identity()
        self.final_act = make_activation(activation) if style == "pre" else nn.Identity()
        self.head = nn.Linear(width, num_classes)
        init_weights(self, init)

    def features(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x.flatten(1))
        for block in self.blocks:
            x = block(x)
        return x

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(self.final_act(self.final_norm(self.features(x))))


class ResidualCNN(nn.Module):
    """3x3 conv stem -> ``depth`` conv residual blocks -> global average pool -> linear."""

    def __init__(self, in_channels: int, num_classes: int, channels: int = 16, depth: int = 4,
                 norm: Optional[str] = None, activation: str = "relu", style: str = "pre",
                 branch_layers: int = 2, scale: Optional[float] = None,
                 init: InitSpec = "he", zero_init_last_norm: bool = False) -> None:
        super().__init__()
        check_int(in_channels, "in_channels")
        self.stem = nn.Conv2d(in_channels, channels, 3, padding=1)
        self.blocks = nn.ModuleList(
            ResidualBlock(channels, norm, activation, style, branch_layers, scale, conv=True,
                          zero_init_last_norm=zero_init_last_norm) for _ in range(depth)
        )
        self.final_norm = make_norm(norm, channels, conv=True) if style == "pre" else nn.Identity()
        self.final_act = make_activation(activation)
        self.head = nn.Linear(channels, num_classes)
        init_weights(self, init)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dim() != 4:
            raise ValueError(f"ResidualCNN expects images (N, C, H, W), got shape {tuple(x.shape)}")
        x = self.stem(x)
        for block in self.blocks:
            x = block(x)
        x = self.final_act(self.final_norm(x))
        return self.head(x.mean(dim=(2, 3)))


def bn_layers(model: nn.Module) -> list[tuple[str, _BatchNorm]]:
    """Every batch-norm layer in ``model`` (BatchNorm1d/2d/3d and subclasses), by name,
    in the order of ``model.named_modules()``."""
    check_module(model)
    return [(name, m) for name, m in model.named_modules() if isinstance(m, _BatchNorm)]


def small_cnn(in_channels: int = 1, num_classes: int = 10, channels: tuple[int, int] = (16, 32),
              norm: bool = True, activation: str = "relu",
              norm_position: str = "before") -> nn.Sequential:
    """conv3x3 -> [BN] -> act -> conv3x3 stride 2 -> [BN] -> act -> average pool -> linear.

    Convolutions followed by BN have no bias (BN's mean subtraction would cancel it).
    Layer indices: 0 conv, 1 BN, 2 activation, 3 conv, 4 BN, 5 activation, 6 pool,
    7 flatten, 8 head; ``norm=False`` keeps an ``nn.Identity`` where each BN was, so
    the indices hold. ``norm_position="after"`` puts each BN after its nonlinearity
    instead (indices 1 and 2, 4 and 5 swap; the convolutions keep their bias).
    """
    check_int(in_channels, "in_channels")
    check_int(num_classes, "num_classes")
    if len(channels) != 2:
        raise ValueError(f"channels must be two positive ints, got {channels!r}")
    for i, c in enumerate(channels):
        check_int(c, f"channels[{i}]", 1)
    if norm_position not in ("before", "after"):
        raise ValueError(f"norm_position must be 'before' or 'after', got {norm_position!r}")
    c1, c2 = channels

    def stage(c_in: int, c_out: int, stride: int) -> list[nn.Module]:
        conv = nn.Conv2d(c_in, c_out, 3, stride=stride, padding=1,
                         bias=not (norm and norm_position == "before"))
        bn = nn.BatchNorm2d(c_out) if norm else nn.Identity()
        act = make_activation(activation)
        return [conv, bn, act] if norm_position == "before" else [conv, act, bn]

    return nn.Sequential(*stage(in_channels, c1, 1), *stage(c1, c2, 2),
                         nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(c2, num_classes))
