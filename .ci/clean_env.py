"""The environment the course's scripts and tests run in, and nothing else.

A shell carries variables the course never sets (MPLBACKEND, OMP_NUM_THREADS,
PYTHONWARNINGS, a user matplotlibrc, Jupyter and IPython configuration ...),
and some of them change what a notebook prints. The test command, the
execute and benchmark scripts start from this whitelist instead of the
caller's environment. (The course kernel also sets its own numeric pins and
neutral values; see bnlessons.reproducibility.)

Usage as a command: python .ci/clean_env.py COMMAND [ARG ...]
"""
from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
ISOLATED = ROOT / "_build" / "isolated"  # empty IPython and Jupyter config dirs
KEEP = ("HOME", "TMPDIR", "CI", "BNLESSONS_CHROMIUM", "BNLESSONS_SLOT_LOG")


def environment() -> dict[str, str]:
    """A whitelist of the caller's variables plus fixed values for the rest."""
    env = {k: os.environ[k] for k in KEEP if k in os.environ}
    dirs = {"IPYTHONDIR": ISOLATED / "ipython",
            "JUPYTER_CONFIG_DIR": ISOLATED / "jupyter-config",
            "JUPYTER_DATA_DIR": ISOLATED / "jupyter-data"}
    for path in dirs.values():
        path.mkdir(parents=True, exist_ok=True)
    env.update({k: str(v) for k, v in dirs.items()})
    env.update({
        "PATH": os.pathsep.join([str(ROOT / ".venv" / "bin"), "/usr/local/sbin", "/usr/local/bin",
                                 "/usr/sbin", "/usr/bin", "/sbin", "/bin"]),
        "LANG": "C.UTF-8",
        "LC_ALL": "C.UTF-8",
        "TERM": "dumb",
        "PYTHONHASHSEED": "0",
        # One thread per process: pytest runs two workers on two cores, and a second
        # thread that must wait for a busy core costs far more than it gives (a unit
        # test that trains took 22 s on two threads beside a notebook, 5 s on one).
        # The course kernel sets one thread of its own.
        "OMP_NUM_THREADS": "1",
        "MKL_NUM_THREADS": "1",
    })
    return env


def isolate() -> None:
    """Replace this process's environment with :func:`environment` (before starting kernels)."""
    env = environment()
    os.environ.clear()
    os.environ.update(env)


if __name__ == "__main__":
    if len(sys.argv) < 2:
        sys.exit(__doc__)
    env = environment()
    os.execvpe(sys.argv[1], sys.argv[1:], env)
