"""Measuring code: how long it takes, and what steadies the measurement.

* ``median_time``: the median over repeats of the mean time of a few calls,
  which is robust to the odd slow run on a shared machine.
* ``minor_faults``: how many minor page faults a call of a function causes on
  average (each is a fresh page of memory the kernel maps in).
* ``copy_bandwidth``: bytes per second a plain tensor copy moves, the
  memory roofline against which a kernel's time can be compared.
* ``keep_freed_memory``: memory-bound operations on tensors of a few hundred
  kilobytes and more are dominated by *where* their output memory comes from.
  glibc serves allocations of 32 MiB and more (its ``mmap`` threshold) with
  fresh pages and hands large freed blocks back to the operating system, so
  the next allocation of that size page-faults afresh; whether it does
  depends on what else ran in between, and the timings become bimodal. This
  asks glibc to keep freed memory for reuse, which makes the timings steady.

The course's timing lessons and helpers (``bn_math.timing``,
``inference.deploy``) measure with these.
"""
from __future__ import annotations

import ctypes
import ctypes.util
import statistics
import time
from typing import Callable

import torch

from bnlessons._validate import check_int

_M_TRIM_THRESHOLD = -1  # mallopt parameter numbers from glibc's malloc.h
_M_MMAP_THRESHOLD = -3


def keep_freed_memory(limit_bytes: int = 1 << 30) -> bool:
    """Ask glibc's allocator to keep freed blocks up to ``limit_bytes`` for reuse.

    Raises the thresholds above which glibc serves an allocation with a fresh
    ``mmap`` and returns freed memory to the operating system. Affects the
    whole process from now on (it only costs memory). Returns False, and
    changes nothing, where the C library is not glibc (macOS, Windows, musl).
    """
    check_int(limit_bytes, "limit_bytes", 1)
    path = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(path)
        mallopt = libc.mallopt
    except (OSError, AttributeError, TypeError):
        return False
    mmap_limit = min(limit_bytes, 32 << 20)  # glibc caps this threshold at 32 MiB
    return bool(mallopt(_M_MMAP_THRESHOLD, mmap_limit)) and bool(
        mallopt(_M_TRIM_THRESHOLD, min(limit_bytes, 2**31 - 1)))


def median_time(fn: Callable[[], object], repeats: int = 7, number: int = 10,
                warmup: int = 2) -> float:
    """Median over ``repeats`` of the mean time of ``number`` calls of ``fn``, in seconds.

    ``warmup`` calls run first and are not timed (first calls allocate memory).
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    check_int(repeats, "repeats", 1)
    check_int(number, "number", 1)
    check_int(warmup, "warmup", 0)
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        for _ in range(number):
            fn()
        times.append((time.perf_counter() - start) / number)
    return statistics.median(times)


def minor_faults(fn: Callable[[], object], number: int = 10, warmup: int = 1) -> float:
    """Minor page faults per call of ``fn``, averaged over ``number`` calls.

    Counted by the operating system for the whole process
    (``resource.getrusage``); NaN where that count is not available (Windows).
    A freshly mapped 4 KiB page costs one fault; memory that the allocator
    reuses costs none, so the count says whether a timing includes the price
    of getting new memory from the operating system.
    """
    if not callable(fn):
        raise TypeError(f"fn must be callable, got {type(fn).__name__}")
    check_int(number, "number", 1)
    check_int(warmup, "warmup", 0)
    try:
        import resource
    except ImportError:  # not on POSIX
        return float("nan")
    for _ in range(warmup):
        fn()
    before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(number):
        fn()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before) / number


def copy_bandwidth(numel: int, dtype: torch.dtype = torch.float32, repeats: int = 7,
                   number: int = 5) -> float:
    """Bytes per second moved by ``dst.copy_(src)`` for tensors of ``numel`` elements.

    A copy reads every byte of ``src`` and writes every byte of ``dst``, so
    both count: ``2 * numel * itemsize`` bytes per call, over the median time
    (``median_time``). For tensors much larger than the caches this is about
    the best any elementwise kernel can do per byte it must move.
    """
    check_int(numel, "numel", 1)
    if not isinstance(dtype, torch.dtype) or not dtype.is_floating_point:
        raise TypeError(f"dtype must be a floating-point torch.dtype, got {dtype!r}")
    src = torch.ones(numel, dtype=dtype)
    dst = torch.empty_like(src)
    seconds = median_time(lambda: dst.copy_(src), repeats=repeats, number=number, warmup=1)
    return 2 * numel * src.element_size() / seconds
