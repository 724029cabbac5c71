"""bnlessons.measure: the course's timer and the allocator setting for timings."""
import sys
import time

import pytest

from bnlessons import measure


def test_median_time_counts_calls_and_validates():
    calls = []
    t = measure.median_time(lambda: calls.append(1), repeats=3, number=2, warmup=1)
    assert t > 0 and len(calls) == 1 + 3 * 2
    with pytest.raises(TypeError, match="fn must be callable"):
        measure.median_time(None)
    with pytest.raises(ValueError, match="repeats must be an int >= 1"):
        measure.median_time(lambda: None, repeats=0)
    with pytest.raises(TypeError, match="number must be an int >= 1"):
        measure.median_time(lambda: None, number=1.5)


def test_median_time_measures_a_known_duration(monkeypatch):
    # A fake clock that only the timed function advances, so the answer is
    # exact on a busy machine: per call 1, 9 and 2 seconds in the three
    # repeats; the median is 2 (a mean would say 4).
    clock = [0.0]
    steps = iter([1, 1, 9, 9, 2, 2])
    monkeypatch.setattr(time, "perf_counter", lambda: clock[0])

    def fn():
        clock[0] += next(steps)

    assert measure.median_time(fn, repeats=3, number=2, warmup=0) == 2


def test_keep_freed_memory():
    # glibc's mallopt exists on Linux, so the call takes effect there and reports it
    assert measure.keep_freed_memory() is sys.platform.startswith("linux")
    with pytest.raises(ValueError, match="limit_bytes"):
        measure.keep_freed_memory(0)


def test_minor_faults_counts_fresh_pages_and_validates():
    import torch

    # a fresh 64 MiB tensor, above every allocator's mmap threshold, is mapped in page by page
    # when it is filled; reusing one buffer maps nothing new
    fresh = measure.minor_faults(lambda: torch.ones(16 << 20), number=3)
    buffer = torch.empty(16 << 20)
    reused = measure.minor_faults(lambda: buffer.fill_(1.0), number=3)
    if sys.platform.startswith("linux"):
        assert fresh > 4000 and reused < 100, (fresh, reused)
    with pytest.raises(TypeError, match="callable"):
        measure.minor_faults(3)
    with pytest.raises(ValueError, match="number"):
        measure.minor_faults(lambda: None, number=0)


def test_copy_bandwidth_is_bytes_per_second_and_validates():
    import torch

    bandwidth = measure.copy_bandwidth(1 << 20, repeats=3, number=2)
    assert 1e8 < bandwidth < 1e13  # between 0.1 GB/s and 10 TB/s on any machine
    with pytest.raises(TypeError, match="dtype"):
        measure.copy_bandwidth(10, dtype=torch.int64)
    with pytest.raises(ValueError, match="numel"):
        measure.copy_bandwidth(0)
