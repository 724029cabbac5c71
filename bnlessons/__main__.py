"""Two commands for the course's setup script.

``python -m bnlessons install-kernel PREFIX`` installs the course's Jupyter
kernel: the specification goes to ``PREFIX/share/jupyter/kernels/bnlessons``
(``PREFIX`` is usually the virtual environment), where JupyterLab, nbval and
the course's scripts find it.

``python -m bnlessons warm-compile`` compiles chapter 2's ``torch.compile``
demonstration once, in a fresh process with the course kernel's
environment, so that the lesson finds the generated code in PyTorch's
on-disk cache instead of spending half a minute compiling. It does nothing
when a marker in that cache says it was done for this version of the code,
or when there is no C++ compiler.
"""
from __future__ import annotations

import getpass
import hashlib
import os
import subprocess
import sys
import tempfile
from pathlib import Path

from bnlessons.reproducibility import KERNEL_NAME, kernel_env, write_kernelspec

USAGE = "usage: python -m bnlessons install-kernel PREFIX | warm-compile"


def inductor_cache_dir() -> Path:
    """Where torch.compile's CPU code is cached (PyTorch's default, or TORCHINDUCTOR_CACHE_DIR)."""
    configured = os.environ.get("TORCHINDUCTOR_CACHE_DIR")
    if configured:
        return Path(configured)
    return Path(tempfile.gettempdir()) / f"torchinductor_{getpass.getuser()}"


def warm_compile() -> int:
    from bnlessons.bn_math import timing

    reason = timing.can_compile()
    if reason is not None:
        print(f"warm-compile: skipped, {reason}")
        return 0
    import torch

    from bnlessons import reference

    source = (Path(timing.__file__).read_bytes() + Path(reference.__file__).read_bytes()
              + torch.__version__.encode())
    marker = inductor_cache_dir() / f".bnlessons-warm-{hashlib.sha256(source).hexdigest()[:16]}"
    if marker.exists():
        return 0
    env = {**os.environ, **kernel_env(pinned=True)}
    code = "from bnlessons.bn_math import timing; print(f'{timing.warm_compile():.0f}')"
    done = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        print(f"warm-compile: failed (the lesson will compile itself):\n{done.stderr[-2000:]}")
        return 0
    marker.parent.mkdir(parents=True, exist_ok=True)
    marker.touch()
    print(f"warm-compile: compiled the chapter 2 demonstration in {done.stdout.strip()} s")
    return 0


def main(argv: list[str]) -> int:
    if argv == ["warm-compile"]:
        return warm_compile()
    if len(argv) != 2 or argv[0] != "install-kernel":
        print(USAGE, file=sys.stderr)
        return 2
    folder = write_kernelspec(Path(argv[1]) / "share" / "jupyter" / "kernels")
    print(f"installed the '{KERNEL_NAME}' kernel in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
