"""Execute notebooks in place so that their stored outputs are the real ones.

Usage: python .ci/execute_notebooks.py [NOTEBOOK ...]   (default: every notebook in book/)

Each notebook runs top to bottom in a fresh kernel of the course
(``bnlessons``: pinned numerics, one thread, inline figures), in its own
folder, from the clean environment of .ci/clean_env.py. Stream outputs are
then coalesced, with carriage returns collapsed, exactly as nbval does before
comparing, so a progress bar is stored as its final state. Prints one line
per notebook with its wall time.
"""
from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Optional, Sequence

import nbformat
from nbclient import NotebookClient
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clean_env import isolate  # noqa: E402

from bnlessons.reproducibility import KERNEL_NAME as KERNEL  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def notebooks(args: Sequence[str]) -> list[Path]:
    if args:
        missing = [a for a in args if not Path(a).is_file()]
        if missing:
            raise SystemExit(f"no such notebook: {', '.join(missing)}")
        return [Path(a).resolve() for a in args]
    return sorted(p for p in (ROOT / "book").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts)


def kernel_of(nb) -> str:
    name = nb.metadata.get("kernelspec", {}).get("name")
    if name != KERNEL:
        raise SystemExit(f"the notebook's kernel is {name!r}; the course's stored outputs "
                         f"come from the {KERNEL!r} kernel (pinned numerics)")
    return name


def parameters_index(nb) -> int:
    tagged = [i for i, c in enumerate(nb.cells) if "parameters" in c.metadata.get("tags", [])]
    if len(tagged) != 1:
        raise ValueError(f"expected one cell tagged 'parameters', found {len(tagged)}")
    return tagged[0]


def inject(nb, source: str) -> None:
    """Insert a code cell running ``source`` right after the parameters cell."""
    cell = nbformat.v4.new_code_cell(source)
    cell.metadata["tags"] = ["injected-parameters"]
    nb.cells.insert(parameters_index(nb) + 1, cell)


def run(nb, path: Path, timeout: int = 120, kernel_name: Optional[str] = None) -> float:
    """Execute ``nb`` (read from ``path``) in its folder; return the wall time in seconds."""
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=timeout, kernel_name=kernel_name or kernel_of(nb),
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
    isolate()
    total = 0.0
    for path in notebooks(sys.argv[1:]):
        elapsed = execute(path)
        total += elapsed
        print(f"{elapsed:7.1f} s  {path.relative_to(ROOT)}", flush=True)
    print(f"{total:7.1f} s  total")


if __name__ == "__main__":
    main()
