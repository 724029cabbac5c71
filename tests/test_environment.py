"""The tests' verdict does not depend on the caller's environment.

A learner's or an instructor's shell may set variables the course never sets.
Here a plotting notebook and a training notebook run under strict nbval with
every such variable set to an unusual value, including conflicting numeric
dispatch settings; the course kernel and ``bnlessons.setup`` must neutralise
all of them, so the stored outputs still match exactly.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bnlessons import reproducibility

ROOT = Path(__file__).resolve().parent.parent
PLOTTING = "book/01-covariate-shift/01-covariate-shift.ipynb"
TRAINING = "book/03-inference/02-train-vs-eval.ipynb"

MATPLOTLIBRC = """\
backend: agg
figure.figsize: 3, 2
figure.dpi: 50
axes.grid: False
axes.formatter.use_locale: True
axes.unicode_minus: False
"""


def hostile_environment(tmp: Path) -> dict[str, str]:
    rc = tmp / "matplotlibrc"
    rc.write_text(MATPLOTLIBRC)
    env = dict(os.environ)
    env.update({
        "MPLBACKEND": "Agg",
        "MATPLOTLIBRC": str(rc),
        "OMP_NUM_THREADS": "16",
        "MKL_NUM_THREADS": "16",
        "OPENBLAS_NUM_THREADS": "16",
        "PYTHONHASHSEED": "12345",
        "COLUMNS": "20",
        "LINES": "5",
        "TERM": "xterm-256color",
        "LANG": "C",
        "LC_ALL": "C",
        "JUPYTER_PLATFORM_DIRS": "1",
        "PYTHONWARNINGS": "always",
        # numeric dispatch asking for the processor's fastest paths
        "ATEN_CPU_CAPABILITY": "avx2",
        "MKL_CBWR": "AUTO",
        "MKL_ENABLE_INSTRUCTIONS": "AVX2",
        "NPY_ENABLE_CPU_FEATURES": "",
        "OPENBLAS_CORETYPE": "Haswell",
        "GLIBC_TUNABLES": "glibc.malloc.check=0",
    })
    return env


@pytest.mark.slow
def test_strict_nbval_passes_in_a_hostile_environment(tmp_path):
    env = hostile_environment(tmp_path)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
         "--nbval-sanitize-with", "tests/nbval_sanitize.cfg", PLOTTING, TRAINING],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert result.returncode == 0, result.stdout[-6000:] + result.stderr[-2000:]


OBSERVE = """
import json, locale, shutil, sys
import numpy, torch, threadpoolctl
from bnlessons import reproducibility
print(json.dumps({
    "hash": hash("batch norm"),
    "warning options": sys.warnoptions,
    "locale": locale.setlocale(locale.LC_ALL, ""),
    "columns": shutil.get_terminal_size().columns,
    "torch threads": torch.get_num_threads(),
    "thread pools": sorted((p["internal_api"], p["num_threads"], p.get("architecture"))
                           for p in threadpoolctl.threadpool_info()),
    "unpinned": reproducibility.unpinned(),
}))
"""


def _observe(env: dict[str, str]) -> dict:
    result = subprocess.run([sys.executable, "-c", OBSERVE], env=env, cwd=ROOT,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    return json.loads(result.stdout)


def test_the_kernel_environment_outweighs_a_hostile_shell(tmp_path):
    """What a process started as the kernel starts it (its variables on top of the
    caller's) sees is the same from a hostile shell as from an empty one."""
    kernel = reproducibility.kernel_env()
    from_hostile = _observe({**hostile_environment(tmp_path), **kernel})
    from_empty = _observe({"PATH": os.environ.get("PATH", ""), **kernel})
    assert from_hostile == from_empty
    assert from_empty["unpinned"] == [] and from_empty["torch threads"] == 1


def _setup_in_a_fresh_python(env_extra: dict[str, str]) -> subprocess.CompletedProcess:
    env = {k: v for k, v in os.environ.items()
           if k not in reproducibility.PINNED_ENV and k not in reproducibility.NEUTRAL_ENV}
    env.update(env_extra)
    return subprocess.run([sys.executable, "-c", "import bnlessons; bnlessons.setup(0)"],
                          env=env, capture_output=True, text=True, timeout=300)


def test_setup_says_in_one_line_when_the_pins_are_missing():
    result = _setup_in_a_fresh_python({})
    assert result.returncode == 0, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "numerics not pinned" in lines[0], result.stderr
    assert "ATEN_CPU_CAPABILITY" in lines[0] and "'bnlessons' kernel" in lines[0]


def test_setup_is_silent_when_the_pins_hold():
    result = _setup_in_a_fresh_python(reproducibility.kernel_env())
    assert result.returncode == 0 and result.stderr == "", result.stderr


def test_a_stricter_glibc_mask_still_counts_as_pinned(monkeypatch):
    for name, value in reproducibility.PINNED_ENV.items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(reproducibility.torch.backends.cpu, "get_cpu_capability",
                        lambda: "DEFAULT")
    monkeypatch.setenv("GLIBC_TUNABLES", reproducibility.GLIBC_MASK + ",-SSE4_2")
    assert reproducibility.unpinned() == []
    monkeypatch.setenv("GLIBC_TUNABLES", "glibc.cpu.hwcaps=-AVX2")
    assert reproducibility.unpinned() == ["GLIBC_TUNABLES=glibc.cpu.hwcaps=-AVX2"]


def test_kernelspec_names_the_interpreter_and_the_environment(tmp_path):
    folder = reproducibility.write_kernelspec(tmp_path, "demo", env={"A": "1"},
                                              argv_prefix=["emu", "-cpu", "x"])
    spec = json.loads((folder / "kernel.json").read_text())
    assert spec["argv"][:4] == ["emu", "-cpu", "x", sys.executable]
    assert spec["argv"][-2:] == ["-f", "{connection_file}"]
    assert spec["env"] == {"A": "1"}
    with pytest.raises(ValueError, match="name"):
        reproducibility.write_kernelspec(tmp_path, "bad name/..")
