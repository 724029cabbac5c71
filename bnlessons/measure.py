"""Measuring code: how long it takes, and what steadies the measurement.

* ``median_time``: the median over repeats of the mean time of a few calls,
  which is robust to the odd slow run on a shared machine.
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
