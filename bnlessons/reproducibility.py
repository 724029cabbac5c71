"""Everything that makes a lesson print the same numbers on any machine.

Two kinds of variation are fixed here.

* **Randomness and threads.** :func:`setup` seeds Python's, NumPy's and
  torch's generators, runs torch on one thread (a different thread count
  changes the order of floating-point sums) and asks for deterministic
  algorithms.
* **The processor.** PyTorch (ATen), MKL, oneDNN, NumPy, OpenBLAS and glibc's
  maths library each choose their code paths by the instructions the
  processor offers (SSE, AVX2, FMA, AVX-512). Different paths round
  differently, and training turns a last-bit difference into a different
  accuracy. :data:`PINNED_ENV` pins every one of them to a path that exists
  on any x86-64 processor. These variables are read when the libraries load,
  so they cannot be set from inside a running notebook: the course's Jupyter
  kernel (``bnlessons``, installed into ``.venv`` by ``.ci/setup-env``) sets
  them before Python starts. :func:`setup` says so, in one line, when they
  are not in effect.

:data:`NEUTRAL_ENV` fixes what a learner's shell might otherwise change in a
notebook's output: the matplotlib backend, the hash seed, thread counts, the
locale and warning filters.

``python -m bnlessons install-kernel PREFIX`` writes the kernel specification
into ``PREFIX/share/jupyter/kernels/bnlessons``.
"""
from __future__ import annotations

import hashlib
import json
import os
import random
import sys
from contextlib import contextmanager
from pathlib import Path
from typing import Iterator, Mapping, Optional, Sequence

import numpy as np
import torch

from bnlessons._validate import check_int

KERNEL_NAME = "bnlessons"
INLINE_BACKEND = "module://matplotlib_inline.backend_inline"

# glibc's libm has FMA and AVX2 versions of exp, log, pow, sin, tanh, ...;
# they differ from the SSE2 versions in the last bit of some results, which
# NumPy's float64 maths inherits. These masks make glibc use its SSE2 code.
GLIBC_MASK = ("glibc.cpu.hwcaps=-AVX,-AVX2,-FMA,-FMA4,"
              "-AVX512F,-AVX512VL,-AVX512BW,-AVX512DQ,-AVX512CD")

#: Numeric dispatch, pinned to code paths every x86-64 processor has.
PINNED_ENV: dict[str, str] = {
    "ATEN_CPU_CAPABILITY": "default",  # PyTorch's kernels: no AVX2/AVX-512 variants
    "MKL_CBWR": "COMPATIBLE",  # MKL's conditional numerical reproducibility: SSE2 paths
    "ONEDNN_MAX_CPU_ISA": "SSE41",  # oneDNN's JIT kernels (convolutions)
    "DNNL_MAX_CPU_ISA": "SSE41",  # the same, under oneDNN's older name
    "NPY_ENABLE_CPU_FEATURES": "X86_V2",  # NumPy's baseline, no dispatched AVX2/AVX-512 loops
    "OPENBLAS_CORETYPE": "Nehalem",  # NumPy's OpenBLAS: SSE kernels
    "GLIBC_TUNABLES": GLIBC_MASK,
}

#: What else a shell could change in a notebook's output, fixed.
NEUTRAL_ENV: dict[str, str] = {
    "MPLBACKEND": INLINE_BACKEND,  # figures are displayed, whatever the shell says
    "PYTHONHASHSEED": "0",  # set and dict orders of strings
    "PYTHONWARNINGS": "",  # Python's default warning filters
    "OMP_NUM_THREADS": "1",
    "MKL_NUM_THREADS": "1",
    "OPENBLAS_NUM_THREADS": "1",
    "LC_ALL": "C.UTF-8",
    "LANG": "C.UTF-8",
    "COLUMNS": "100",
    "TERM": "dumb",
}


def kernel_env(pinned: bool = True) -> dict[str, str]:
    """The environment of the course kernel; ``pinned=False`` leaves dispatch native."""
    env = dict(NEUTRAL_ENV)
    if pinned:
        env.update(PINNED_ENV)
    return env


def write_kernelspec(kernels_dir: os.PathLike | str, name: str = KERNEL_NAME,
                     env: Optional[Mapping[str, str]] = None,
                     argv_prefix: Sequence[str] = (), python: Optional[str] = None,
                     display_name: str = "Python 3 (bnlessons, pinned numerics)") -> Path:
    """Write ``KERNELS_DIR/NAME/kernel.json`` and return that folder.

    The kernel runs ``python`` (this interpreter by default) with ``env``
    (:func:`kernel_env` by default) on top of the caller's environment, so
    the pins hold whoever starts it: JupyterLab, nbval or a script.
    ``argv_prefix`` goes before the interpreter (an emulator, for instance).
    """
    if not isinstance(name, str):
        raise TypeError(f"name must be a str, got {type(name).__name__}")
    if not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"name must be letters, digits, '-' or '_', got {name!r}")
    folder = Path(kernels_dir) / name
    folder.mkdir(parents=True, exist_ok=True)
    spec = {
        "argv": [*argv_prefix, python or sys.executable, "-m", "ipykernel_launcher",
                 "-f", "{connection_file}"],
        "display_name": display_name,
        "language": "python",
        "env": dict(kernel_env() if env is None else env),
        "metadata": {"debugger": True},
    }
    (folder / "kernel.json").write_text(json.dumps(spec, indent=1, sort_keys=True) + "\n")
    return folder


def _pin_holds(name: str, wanted: str) -> bool:
    value = os.environ.get(name)
    if name == "GLIBC_TUNABLES" and value is not None:
        # a stricter mask (more features hidden) still pins glibc
        have = set(value.partition("glibc.cpu.hwcaps=")[2].split(":")[0].split(","))
        return set(wanted.partition("=")[2].split(",")) <= have
    return value == wanted


def unpinned() -> list[str]:
    """The numeric pins not in effect in this process, as ``NAME=value`` (empty if all are)."""
    missing = [f"{k}={os.environ.get(k, '(unset)')}" for k, v in PINNED_ENV.items()
               if not _pin_holds(k, v)]
    capability = torch.backends.cpu.get_cpu_capability()
    if capability != "DEFAULT" and not any(m.startswith("ATEN_") for m in missing):
        missing.append(f"torch capability={capability}")
    return missing


def _in_ipython_kernel() -> bool:
    shell = sys.modules.get("IPython")
    get = getattr(shell, "get_ipython", None)
    return bool(get and get() is not None and hasattr(get(), "kernel"))


def _inline_figures() -> None:
    """Inside a Jupyter kernel, show figures inline whatever MPLBACKEND said."""
    if not _in_ipython_kernel():
        return
    import matplotlib

    if matplotlib.get_backend() != INLINE_BACKEND:
        matplotlib.use(INLINE_BACKEND)


def seed_everything(seed: int) -> torch.Generator:
    """Seed Python, NumPy and torch and return a torch generator seeded alike."""
    check_int(seed, "seed", 0)
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    generator = torch.Generator()
    generator.manual_seed(seed)
    return generator


def derive_seed(seed: int, purpose: str) -> int:
    """A seed for one named stream of a run's random draws, computed from the run's ``seed``.

    A run draws for several purposes (the initial weights, the order of the
    minibatches, dropout masks and other noise in the forward pass). Seeding
    each from ``seed`` itself would give them the same underlying sequence of
    random numbers: the first dropout mask would repeat the first weights'
    draws. ``derive_seed(seed, "forward")`` is a different, fixed number for
    each purpose (the first 63 bits of a SHA-256 of both), the same on every
    machine and in every run.
    """
    check_int(seed, "seed", 0)
    if not isinstance(purpose, str) or not purpose:
        raise TypeError(f"purpose must be a non-empty str, got {purpose!r}")
    digest = hashlib.sha256(f"{seed}/{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "little") >> 1


@contextmanager
def seeded(seed: int) -> Iterator[None]:
    """Inside the block, torch's global generator starts from ``seed``; afterwards the
    caller's random state is back as it was.

    Every builder of a network and the training loop draw inside such a
    block, so what a run draws follows from its seed alone: re-running one
    seed gives the same numbers whether or not other runs came before it,
    and a notebook's next draw does not depend on what a library call used.
    """
    check_int(seed, "seed", 0)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        yield


def setup(seed: int = 0, threads: int = 1) -> torch.Generator:
    """Make everything that follows reproducible; return a seeded generator.

    Seeds Python's, NumPy's and torch's global generators, runs torch on
    ``threads`` threads, asks torch for deterministic algorithms, turns off
    the convolution back ends that choose kernels by processor (oneDNN and
    NNPACK; convolutions then use matrix products, pinned through MKL), shows
    figures inline in a notebook and sets the course's figure style. Prints
    one line to stderr when the numeric pins are not in effect.
    """
    check_int(threads, "threads")
    generator = seed_everything(seed)
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    torch.set_default_dtype(torch.float32)
    torch.backends.mkldnn.enabled = False
    torch.backends.nnpack.set_flags(False)
    _inline_figures()
    from bnlessons.plots import apply_style

    apply_style()
    missing = unpinned()
    if missing:
        print(f"bnlessons: numerics not pinned ({', '.join(missing[:3])}"
              f"{', ...' if len(missing) > 3 else ''}); printed numbers may differ from the "
              f"course site. Use the '{KERNEL_NAME}' kernel.", file=sys.stderr)
    return generator
