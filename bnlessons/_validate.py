"""Input checks shared by the package: bad input gets an error that names it.

One rule everywhere: a value of the wrong *type* raises ``TypeError``, a value
of the right type that is out of range raises ``ValueError``; the message
names the argument and shows what was given.
"""
from __future__ import annotations

import math

import torch
from torch import nn


def check_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is a ``torch.Tensor`` of any dtype, else raise a ``TypeError``."""
    if not isinstance(x, torch.Tensor):
        raise TypeError(f"{name} must be a torch.Tensor, got {type(x).__name__}")
    return x


def as_float_tensor(x: object, name: str) -> torch.Tensor:
    """Return ``x`` if it is a floating-point tensor, else raise a clear error."""
    check_tensor(x, name)
    if not x.is_floating_point():
        raise TypeError(
            f"{name} must have a floating-point dtype (float32 or float64), got {x.dtype}; "
            f"convert it with {name}.float() or {name}.double()"
        )
    return x


def check_bn_input(x: object, name: str = "x", finite: bool = True) -> torch.Tensor:
    """Batch norm input: a float tensor of shape (N, C), (N, C, L) or (N, C, H, W).

    ``finite=True`` also rejects NaN and inf, with a message saying so; the
    ``BatchNorm`` module passes ``False``, so that a network that diverges
    during training produces non-finite values (which the training loop
    records as divergence) instead of an exception in the middle of a layer.
    """
    x = as_float_tensor(x, name)
    if x.dim() not in (2, 3, 4):
        raise ValueError(
            f"{name} must have shape (N, C), (N, C, L) or (N, C, H, W); "
            f"got {x.dim()} dimensions with shape {tuple(x.shape)}"
        )
    if x.shape[0] == 0 or x.shape[1] == 0:
        raise ValueError(f"{name} is empty: shape {tuple(x.shape)}")
    if finite and not torch.isfinite(x).all():
        bad = "NaN" if torch.isnan(x).any() else "inf"
        raise ValueError(f"{name} contains {bad} values; batch statistics would be {bad}")
    return x


def values_per_channel(x: torch.Tensor) -> int:
    """How many numbers each channel's statistics are computed from: N*H*W."""
    return x.numel() // x.shape[1]


def check_training_batch(x: torch.Tensor, name: str = "x") -> None:
    """Batch statistics need at least two values per channel."""
    if values_per_channel(x) < 2:
        raise ValueError(
            f"Expected more than 1 value per channel when training, got {name} of shape "
            f"{tuple(x.shape)}: the batch variance of a single value is 0 and every "
            "output would be beta. Use a larger batch or eval mode."
        )


def check_channel_param(p: object, name: str, channels: int, like: torch.Tensor) -> torch.Tensor:
    """gamma, beta, running statistics: one float per channel, same dtype as the input."""
    p = as_float_tensor(p, name)
    if tuple(p.shape) != (channels,):
        raise ValueError(
            f"{name} must have shape ({channels},), one value per channel of the input, "
            f"got shape {tuple(p.shape)}"
        )
    if p.dtype != like.dtype:
        raise TypeError(f"{name} has dtype {p.dtype} but the input has dtype {like.dtype}")
    return p


def check_eps(eps: object) -> float:
    """The constant added to the variance before the square root: a finite number >= 0."""
    return check_nonnegative(eps, "eps")


def reduce_dims(x: torch.Tensor) -> tuple[int, ...]:
    """The dimensions statistics are taken over: all but the channel dimension 1."""
    return (0,) + tuple(range(2, x.dim()))


def per_channel(v: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """Reshape a (C,) vector so that it broadcasts against ``x`` along dimension 1."""
    return v.reshape((1, -1) + (1,) * (x.dim() - 2))


def check_int(value: object, name: str, minimum: int = 1, maximum: int | None = None) -> int:
    """An int (not a bool) of at least ``minimum`` and, if given, at most ``maximum``.

    The error names the argument and shows what was given.
    """
    want = f"an int >= {minimum}" if maximum is None else f"an int in [{minimum}, {maximum}]"
    if isinstance(value, bool) or not isinstance(value, int):
        raise TypeError(f"{name} must be {want}, got {value!r} ({type(value).__name__})")
    if value < minimum or (maximum is not None and value > maximum):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return value


def _interval(low: float | None, high: float | None, low_open: bool, high_open: bool) -> str:
    """How a range reads in a message: '> 0', '>= 0', '(0, 1]', '[0, 1)' and so on."""
    if low is None and high is None:
        return ""
    if high is None:
        return f" {'>' if low_open else '>='} {low:g}"
    if low is None:
        return f" {'<' if high_open else '<='} {high:g}"
    return f" in {'(' if low_open else '['}{low:g}, {high:g}{')' if high_open else ']'}"


def check_number(value: object, name: str, *, low: float | None = None,
                 high: float | None = None, low_open: bool = False,
                 high_open: bool = False) -> float:
    """A finite real number (not a bool), optionally within bounds; returned as a float.

    ``low`` and ``high`` bound the value (``None``: no bound); ``low_open`` and
    ``high_open`` exclude the bound itself. An int or float is accepted (a bool
    is not, though Python counts it as an int, because ``True`` given for a
    learning rate is a mistake, not a 1). NaN and inf are bad values: every
    number this package takes is a finite setting, and either would turn the
    result into NaN instead of an error.
    """
    want = f"a finite number{_interval(low, high, low_open, high_open)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise TypeError(f"{name} must be {want}, got {value!r} ({type(value).__name__})")
    v = float(value)
    if not math.isfinite(v):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    if low is not None and (v <= low if low_open else v < low):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    if high is not None and (v >= high if high_open else v > high):
        raise ValueError(f"{name} must be {want}, got {value!r}")
    return v


def check_positive(value: object, name: str) -> float:
    """A finite number > 0: a learning rate, a step size, a scale, a standard deviation."""
    return check_number(value, name, low=0, low_open=True)


def check_nonnegative(value: object, name: str) -> float:
    """A finite number >= 0: a noise amplitude, a decay, a mean squared gradient."""
    return check_number(value, name, low=0)


def check_fraction(value: object, name: str, *, zero: bool = True, one: bool = True) -> float:
    """A number in [0, 1]: a probability, a momentum, an accuracy.

    ``zero=False`` excludes 0 and ``one=False`` excludes 1, for the settings
    where either end means something else (a keep probability of 0 keeps
    nothing; a dropout probability of 1 drops everything).
    """
    return check_number(value, name, low=0, high=1, low_open=not zero, high_open=not one)


def check_pair(value: object, name: str, *, low: float | None = None) -> tuple[float, float]:
    """A range ``(a, b)`` of two finite numbers with ``a <= b``, each at least ``low`` if given.

    A tuple or list of two numbers is accepted; anything else is a
    ``TypeError``, and a list of another length a ``ValueError``.
    """
    if not isinstance(value, (tuple, list)):
        raise TypeError(f"{name} must be a pair (low, high) of numbers, got {value!r} "
                        f"({type(value).__name__})")
    if len(value) != 2:
        raise ValueError(f"{name} must be a pair (low, high) of numbers, got {len(value)} "
                         f"values: {value!r}")
    a = check_number(value[0], f"{name}[0]", low=low)
    b = check_number(value[1], f"{name}[1]", low=low)
    if a > b:
        raise ValueError(f"{name} must be a pair (low, high) with low <= high, got {value!r}")
    return a, b


def check_bool(value: object, name: str) -> bool:
    """True or False, nothing else (1 and "yes" are rejected)."""
    if not isinstance(value, bool):
        raise TypeError(f"{name} must be True or False, got {value!r}")
    return value


def check_module(value: object, name: str = "model") -> nn.Module:
    """A ``torch.nn.Module`` instance (not a class, not a function that builds one)."""
    if not isinstance(value, nn.Module):
        raise TypeError(f"{name} must be a torch.nn.Module, got {type(value).__name__}")
    return value


def check_gradient_like(grad: object, x: torch.Tensor, name: str = "dout") -> torch.Tensor:
    """An upstream gradient for ``x``: a float tensor of x's shape and dtype."""
    grad = as_float_tensor(grad, name)
    if grad.shape != x.shape:
        raise ValueError(f"{name} must have the shape of the forward input {tuple(x.shape)}, "
                         f"got {tuple(grad.shape)}")
    if grad.dtype != x.dtype:
        raise TypeError(f"{name} has dtype {grad.dtype} but the input has dtype {x.dtype}")
    return grad


def check_batch_size(batch_size: object, n: int, minimum: int = 1) -> int:
    """A batch size: an int of at least ``minimum`` and at most the ``n`` examples given."""
    check_int(batch_size, "batch_size", minimum)
    if batch_size > n:
        raise ValueError(f"batch_size={batch_size} is larger than the {n} examples given")
    return batch_size
