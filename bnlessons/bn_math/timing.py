"""Timing batch norm's backward pass four ways.

* ``"staged"``: ``reference.backward_staged``, one chain-rule step per line.
* ``"compact"``: ``reference.backward``, the simplified formula.
* ``"autograd"``: PyTorch's autograd through the forward pass written with
  plain tensor operations (``reference.forward``), so every intermediate of the
  graph is stored and differentiated.
* ``"native"``: autograd through ``torch.nn.functional.batch_norm``, whose
  backward is PyTorch's fused kernel.
* ``"compiled"`` (on request, see ``COMPILED``): ``reference.compact_backward``, passed
  through ``torch.compile``, which fuses its operations into generated C++
  loops; it needs a C++ compiler and a first compilation of about half a
  minute, which ``warm_compile`` can do ahead of time (the result is cached
  on disk).

Only the backward pass is timed: each forward pass runs once, outside the
timer (autograd keeps its graph with ``retain_graph=True``). Each time is a
median over repeats, which is robust to the odd slow run on a shared machine.

The timer and the allocator setting that steadies it are the course's
core measuring tools, in ``bnlessons.measure``.
"""
from __future__ import annotations

import contextlib
import logging
import shutil
import statistics
import time
from dataclasses import dataclass
from typing import Callable, Iterator, Optional, Sequence

import torch
import torch.nn.functional as F

from bnlessons import reference
from bnlessons._validate import check_fraction, check_int
from bnlessons.measure import median_time

METHODS: tuple[str, ...] = ("staged", "compact", "autograd", "native")
COMPILED = "compiled"  # the optional fifth method


def can_compile() -> Optional[str]:
    """None if ``torch.compile`` can build CPU code here, else the reason it cannot."""
    if not any(shutil.which(cc) for cc in ("g++", "c++", "clang++")):
        return "no C++ compiler (g++, c++ or clang++) on the PATH"
    return None


@contextlib.contextmanager
def quiet_compilation() -> Iterator[None]:
    """Silence the one-line warning PyTorch's C++ extension loader logs on a machine
    without CUDA (it would land on a notebook's stderr), and restore the level."""
    logger = logging.getLogger("torch.utils.cpp_extension")
    level = logger.level
    logger.setLevel(logging.ERROR)
    try:
        yield
    finally:
        logger.setLevel(level)


def compiled_compact_backward() -> Callable[..., tuple[torch.Tensor, torch.Tensor, torch.Tensor]]:
    """``torch.compile(reference.compact_backward)``; raises RuntimeError where
    ``can_compile`` says no.

    Compilation happens at the first call (for each new shape and dtype);
    call it once inside ``quiet_compilation()`` to keep its log off stderr.
    """
    reason = can_compile()
    if reason is not None:
        raise RuntimeError(f"torch.compile cannot build CPU code here: {reason}")
    return torch.compile(reference.compact_backward)


def warm_compile(shape: Sequence[int] = (256, 512), dtype: torch.dtype = torch.float32) -> float:
    """Compile the compact backward for ``shape`` once, filling the on-disk cache
    that later processes reuse; returns the seconds it took."""
    start = time.perf_counter()
    backward_callables(shape, dtype=dtype, compiled=True)  # compiles at the first call
    return time.perf_counter() - start


def backward_callables(shape: Sequence[int], dtype: torch.dtype = torch.float32,
                       eps: float = 1e-5, seed: int = 0,
                       compiled: bool = False) -> dict[str, Callable[[], tuple]]:
    """One zero-argument function per method in ``METHODS``, each running one backward pass.

    All differentiate the same random input, parameters and upstream
    gradient of shape ``shape`` ((N, C) or (N, C, H, W)) and return
    ``(dx, dgamma, dbeta)``. ``compiled=True`` adds ``COMPILED`` for 2D
    shapes; its first call compiles (quietly).
    """
    shape = tuple(shape)
    if len(shape) not in (2, 3, 4):
        raise ValueError(f"shape must be 2 to 4 positive ints (N, C[, H, W]), got {shape!r}")
    for i, s in enumerate(shape):
        check_int(s, f"shape[{i}]", 1)
    if dtype not in (torch.float32, torch.float64):
        raise TypeError(f"dtype must be torch.float32 or torch.float64, got {dtype}")
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=dtype)
    gamma = torch.rand(shape[1], generator=g, dtype=dtype) + 0.5
    beta = torch.randn(shape[1], generator=g, dtype=dtype)
    dout = torch.randn(*shape, generator=g, dtype=dtype)

    _, cache = reference.forward(x, gamma, beta, eps)
    leaves = [t.clone().requires_grad_(True) for t in (x, gamma, beta)]
    out_plain, _ = reference.forward(*leaves, eps)
    native_leaves = [t.clone().requires_grad_(True) for t in (x, gamma, beta)]
    out_native = F.batch_norm(native_leaves[0], None, None, native_leaves[1], native_leaves[2],
                              training=True, eps=eps)

    fns = {
        "staged": lambda: reference.backward_staged(dout, cache),
        "compact": lambda: reference.backward(dout, cache),
        "autograd": lambda: torch.autograd.grad(out_plain, leaves, dout, retain_graph=True),
        "native": lambda: torch.autograd.grad(out_native, native_leaves, dout,
                                              retain_graph=True),
    }
    if compiled:
        if len(shape) != 2:
            raise ValueError(f"the compiled method is built for (N, C) inputs, got {shape!r}")
        fn = compiled_compact_backward()
        with quiet_compilation():
            fn(dout, cache.xhat, cache.inv_std, gamma)
        fns[COMPILED] = lambda: fn(dout, cache.xhat, cache.inv_std, gamma)
    return fns


@dataclass(frozen=True)
class Timing:
    """Backward times of each method for one input shape, in seconds, round by round."""

    shape: tuple[int, ...]
    rounds: dict[str, tuple[float, ...]]  # method -> time per call in each round

    @property
    def seconds(self) -> dict[str, float]:
        """The median time per call of each method."""
        return {m: statistics.median(t) for m, t in self.rounds.items()}

    @property
    def best(self) -> dict[str, float]:
        """The fastest round's time per call of each method.

        Interference from other processes (and page faults) only ever adds
        time, so on a busy machine the minimum is the steadiest estimate of
        what the code itself costs.
        """
        return {m: min(t) for m, t in self.rounds.items()}

    def ratio(self, slower: str, faster: str, stat: str = "median") -> float:
        """How many times longer ``slower`` takes than ``faster``.

        ``stat="median"``: the median over rounds of the per-round ratio (both
        methods ran back to back in each round, under the same load).
        ``stat="min"``: the ratio of the fastest rounds (see ``best``).
        """
        for name in (slower, faster):
            if name not in self.rounds:
                raise KeyError(f"no timing for {name!r}; have {sorted(self.rounds)}")
        if stat == "median":
            return statistics.median(a / b for a, b in zip(self.rounds[slower],
                                                            self.rounds[faster]))
        if stat == "min":
            return min(self.rounds[slower]) / min(self.rounds[faster])
        raise ValueError(f"stat must be 'median' or 'min', got {stat!r}")

    def ratio_quantiles(self, slower: str, faster: str,
                        qs: Sequence[float] = (0.1, 0.5, 0.9)) -> tuple[float, ...]:
        """Quantiles of the per-round ratios ``slower / faster``: their spread.

        Each round timed both methods back to back, so the ratio of one round
        is paired; its spread over rounds says how far one measurement can be
        trusted on this machine (nearest-rank quantiles).
        """
        for name in (slower, faster):
            if name not in self.rounds:
                raise KeyError(f"no timing for {name!r}; have {sorted(self.rounds)}")
        if not qs:
            raise ValueError("qs is empty: give at least one quantile in [0, 1]")
        qs = [check_fraction(q, f"qs[{i}]") for i, q in enumerate(qs)]
        ratios = sorted(a / b for a, b in zip(self.rounds[slower], self.rounds[faster]))
        return tuple(ratios[round(q * (len(ratios) - 1))] for q in qs)


def benchmark_backward(shapes: Sequence[Sequence[int]], repeats: int = 41, number: int = 3,
                       methods: Sequence[str] = METHODS,
                       dtype: torch.dtype = torch.float32) -> list[Timing]:
    """Median backward time of each method for each shape.

    Each of ``repeats`` rounds times ``number`` calls of every method in turn
    (after one untimed call); the result is the median over rounds of the mean
    time per call. Many short rounds are less likely to be interrupted by
    another process than a few long ones.
    """
    unknown = [m for m in methods if m not in (*METHODS, COMPILED)]
    if unknown or not methods:
        raise ValueError(f"methods must be a non-empty subset of {(*METHODS, COMPILED)}, "
                         f"got {tuple(methods)}")
    if not shapes:
        raise ValueError("shapes is empty: give at least one input shape")
    check_int(repeats, "repeats", 1)
    check_int(number, "number", 1)
    rows = []
    for shape in shapes:
        fns = backward_callables(shape, dtype=dtype, compiled=COMPILED in methods)
        times: dict[str, list[float]] = {m: [] for m in methods}
        # Interleave the methods: a burst of load from another process then
        # slows every method's repeat alike instead of one method's median.
        for _ in range(repeats):
            for m in methods:
                times[m].append(median_time(fns[m], repeats=1, number=number, warmup=1))
        rows.append(Timing(tuple(shape), {m: tuple(t) for m, t in times.items()}))
    return rows


def format_table(rows: Sequence[Timing], relative_to: str = "compact") -> str:
    """Two plain-text tables, each at most 78 characters wide for up to five methods:
    milliseconds per call (median round) for every method, then each other method's
    time over ``relative_to``'s (median of the paired per-round ratios)."""
    if not rows:
        raise ValueError("rows is empty")
    methods = list(rows[0].seconds)
    if relative_to not in methods:
        raise ValueError(f"relative_to must be one of {methods}, got {relative_to!r}")
    others = [m for m in methods if m != relative_to]
    lines = ["milliseconds per call (median)",
             f"{'shape':<18}" + "".join(f"{m:>10}" for m in methods)]
    for row in rows:
        lines.append(f"{str(row.shape):<18}"
                     + "".join(f"{row.seconds[m] * 1e3:>10.3f}" for m in methods))
    lines += [f"time / {relative_to}'s (median of paired ratios)",
              f"{'shape':<18}" + "".join(f"{m:>10}" for m in others)]
    for row in rows:
        lines.append(f"{str(row.shape):<18}"
                     + "".join(f"{row.ratio(m, relative_to):>10.2f}" for m in others))
    return "\n".join(lines)
