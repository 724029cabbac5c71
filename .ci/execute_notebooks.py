"""Execute notebooks in place so that their stored outputs are the real ones.

Usage: python .ci/execute_notebooks.py [NOTEBOOK ...]   (default: every notebook in book/)

Each notebook runs top to bottom in a fresh python3 kernel, in its own folder,
on two threads at most (the lessons themselves ask for one). Stream outputs
are then coalesced, with carriage returns collapsed, exactly as nbval does
before comparing, so a progress bar is stored as its final state. Prints one
line per notebook with its wall time.
"""
from __future__ import annotations

import os
import sys
import time
from pathlib import Path

import nbformat
from nbclient import NotebookClient
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

ROOT = Path(__file__).resolve().parent.parent


def notebooks(args: list[str]) -> list[Path]:
    if args:
        return [Path(a).resolve() for a in args]
    return sorted(p for p in (ROOT / "book").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts)


def run(nb, path: Path, timeout: int = 120) -> float:
    """Execute ``nb`` (read from ``path``) in its folder; return the wall time in seconds."""
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name="python3",
                            resources={"metadata": {"path": str(path.parent)}})
    client.execute()
    return time.perf_counter() - start


def execute(path: Path) -> float:
    nb = nbformat.read(path, as_version=4)
    elapsed = run(nb, path)
    nb, _ = CoalesceStreamsPreprocessor().preprocess(nb, {})
    for cell in nb.cells:
        cell.metadata.pop("execution", None)
    nbformat.write(nb, path)
    return elapsed


def main() -> None:
    os.environ.setdefault("OMP_NUM_THREADS", "2")
    total = 0.0
    for path in notebooks(sys.argv[1:]):
        elapsed = execute(path)
        total += elapsed
        print(f"{elapsed:7.1f} s  {path.relative_to(ROOT)}", flush=True)
    print(f"{total:7.1f} s  total")


if __name__ == "__main__":
    main()
