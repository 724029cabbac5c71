"""``python -m bnlessons install-kernel PREFIX``: install the course's Jupyter kernel.

The kernel specification goes to ``PREFIX/share/jupyter/kernels/bnlessons``
(``PREFIX`` is usually the virtual environment), where JupyterLab, nbval and
the course's scripts find it.
"""
from __future__ import annotations

import sys
from pathlib import Path

from bnlessons.reproducibility import KERNEL_NAME, write_kernelspec


def main(argv: list[str]) -> int:
    if len(argv) != 2 or argv[0] != "install-kernel":
        print("usage: python -m bnlessons install-kernel PREFIX", file=sys.stderr)
        return 2
    folder = write_kernelspec(Path(argv[1]) / "share" / "jupyter" / "kernels")
    print(f"installed the '{KERNEL_NAME}' kernel in {folder}")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
