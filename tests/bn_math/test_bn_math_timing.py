"""bnlessons.bn_math.timing and the backward benchmark script."""
import subprocess
import sys
from pathlib import Path

import pytest
import torch

from bnlessons.bn_math import gradcheck, timing

ROOT = Path(__file__).resolve().parents[2]


@pytest.mark.parametrize("shape", [(16, 5), (4, 3, 2, 2)])
def test_the_four_methods_agree(shape):
    fns = timing.backward_callables(shape, dtype=torch.float64)
    assert tuple(fns) == timing.METHODS
    results = {name: fn() for name, fn in fns.items()}
    for name, grads in results.items():
        assert len(grads) == 3
        for got, want in zip(grads, results["compact"]):
            assert gradcheck.relative_error(got, want) < 1e-10, name
    # each function can be called again (autograd keeps its graph)
    again = fns["autograd"]()
    assert gradcheck.relative_error(again[0], results["autograd"][0]) == 0.0


def test_backward_callables_bad_input():
    with pytest.raises(ValueError, match="shape must be 2 to 4 positive ints"):
        timing.backward_callables((5,))
    with pytest.raises(ValueError, match=r"shape\[1\] must be an int >= 1"):
        timing.backward_callables((4, 0))
    with pytest.raises(TypeError, match=r"shape\[0\] must be an int"):
        timing.backward_callables((4.0, 2))
    with pytest.raises(TypeError, match="dtype must be"):
        timing.backward_callables((4, 2), dtype=torch.int64)


def test_benchmark_rows_ratios_and_table():
    rows = timing.benchmark_backward([(32, 8), (4, 2, 3, 3)], repeats=3, number=1)
    assert [r.shape for r in rows] == [(32, 8), (4, 2, 3, 3)]
    row = rows[0]
    assert set(row.rounds) == set(timing.METHODS)
    assert all(len(t) == 3 and all(0 < s < 1 for s in t) for t in row.rounds.values())
    with pytest.raises(KeyError, match="no timing for 'fast'"):
        row.ratio("fast", "compact")
    with pytest.raises(ValueError, match="stat must be"):
        row.ratio("staged", "compact", stat="mean")
    table = timing.format_table(rows)
    assert "milliseconds" in table and "time / compact's" in table and "(4, 2, 3, 3)" in table
    assert max(len(line) for line in table.splitlines()) <= 78
    with pytest.raises(ValueError, match="relative_to must be one of"):
        timing.format_table(rows, relative_to="numpy")


def test_timing_ratio_uses_paired_rounds():
    row = timing.Timing((2, 2), {"a": (2.0, 20.0, 2.0), "b": (1.0, 10.0, 1.0)})
    assert row.ratio("a", "b") == 2.0
    assert row.seconds == {"a": 2.0, "b": 1.0}
    assert row.best == {"a": 2.0, "b": 1.0}
    # per-round ratios 3, 2, 1; medians 4 and 4; fastest rounds 3 and 1: three answers
    row = timing.Timing((2, 2), {"a": (3.0, 20.0, 4.0), "b": (1.0, 10.0, 4.0)})
    assert row.ratio("a", "b") == 2.0
    assert row.ratio("a", "b", stat="min") == 3.0
    assert row.seconds == {"a": 4.0, "b": 4.0} and row.best == {"a": 3.0, "b": 1.0}


def test_ratio_quantiles_are_the_spread_of_paired_ratios():
    row = timing.Timing((4, 2), {"a": (2.0, 3.0, 8.0, 4.0, 10.0), "b": (1.0, 1.0, 2.0, 2.0, 2.0)})
    # per-round ratios 2, 3, 4, 2, 5 -> sorted 2, 2, 3, 4, 5
    assert row.ratio_quantiles("a", "b") == (2.0, 3.0, 5.0)
    assert row.ratio_quantiles("a", "b", qs=(0.0, 1.0)) == (2.0, 5.0)
    assert row.ratio_quantiles("a", "b", qs=(0.5,))[0] == row.ratio("a", "b")
    with pytest.raises(KeyError, match="c"):
        row.ratio_quantiles("c", "b")
    with pytest.raises(ValueError, match="qs"):
        row.ratio_quantiles("a", "b", qs=(1.5,))


def test_benchmark_bad_input():
    with pytest.raises(ValueError, match="methods must be"):
        timing.benchmark_backward([(4, 2)], methods=("compact", "numpy"))
    with pytest.raises(ValueError, match="shapes is empty"):
        timing.benchmark_backward([])
    with pytest.raises(ValueError, match="repeats must be"):
        timing.benchmark_backward([(4, 2)], repeats=0)


def test_benchmark_script_prints_a_table():
    script = ROOT / ".ci" / "benchmark_bn_backward.py"
    done = subprocess.run([sys.executable, str(script), "--repeats", "2", "--number", "1",
                           "--no-compiled", "16,4", "2,3,2,2"], capture_output=True, text=True,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    assert "milliseconds per call" in done.stdout and "compact" in done.stdout
    assert "(2, 3, 2, 2)" in done.stdout
    assert "compiled method left out: --no-compiled" in done.stdout
    bad = subprocess.run([sys.executable, str(script), "16"], capture_output=True, text=True,
                         timeout=120)
    assert bad.returncode != 0 and "shape must be 2 to 4 positive ints" in bad.stderr


def test_can_compile_names_the_missing_compiler(monkeypatch):
    monkeypatch.setenv("PATH", "")
    assert "C++ compiler" in timing.can_compile()
    with pytest.raises(RuntimeError, match="C\\+\\+ compiler"):
        timing.compiled_compact_backward()


def test_compiled_method_only_for_2d_shapes():
    with pytest.raises(ValueError, match=r"\(N, C\)"):
        timing.backward_callables((4, 3, 2, 2), compiled=True)
    with pytest.raises(ValueError, match="methods"):
        timing.benchmark_backward([(8, 4)], methods=("compiled", "fused"))


@pytest.mark.slow
def test_compiled_compact_backward_matches_the_reference():
    if timing.can_compile() is not None:
        pytest.skip(timing.can_compile())
    fns = timing.backward_callables((32, 16), dtype=torch.float64, compiled=True)
    for got, want in zip(fns[timing.COMPILED](), fns["compact"]()):
        torch.testing.assert_close(got, want, rtol=1e-12, atol=1e-12)
    rows = timing.benchmark_backward([(32, 16)], repeats=2, number=1,
                                     methods=("compact", timing.COMPILED))
    assert set(rows[0].rounds) == {"compact", timing.COMPILED}
