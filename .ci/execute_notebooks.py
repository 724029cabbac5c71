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

import fcntl
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path
from typing import Mapping, Optional, Sequence

import nbformat
from nbclient import NotebookClient
from nbconvert.preprocessors import CoalesceStreamsPreprocessor

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clean_env import isolate  # noqa: E402

from bnlessons.reproducibility import KERNEL_NAME as KERNEL  # noqa: E402
from bnlessons.reproducibility import write_kernelspec  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def notebooks(args: Sequence[str]) -> list[Path]:
    if args:
        missing = [a for a in args if not Path(a).is_file()]
        if missing:
            raise SystemExit(f"no such notebook: {', '.join(missing)}")
        return [Path(a).resolve() for a in args]
    return sorted(p for p in (ROOT / "book").rglob("*.ipynb")
                  if ".ipynb_checkpoints" not in p.parts and "_build" not in p.parts)


def install_kernel(name: str, env: Mapping[str, str], display_name: str) -> None:
    """Install a kernel of the course's Python under ``$JUPYTER_DATA_DIR/kernels``
    (the isolated one of .ci/clean_env.py when unset), unless the same one is there:
    processes that run side by side may each ask for it while the other starts one."""
    from clean_env import ISOLATED

    data = Path(os.environ.setdefault("JUPYTER_DATA_DIR", str(ISOLATED / "jupyter-data")))
    (data / "kernels").mkdir(parents=True, exist_ok=True)
    with open(data / "kernels" / ".install.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        with tempfile.TemporaryDirectory() as tmp:
            spec = write_kernelspec(tmp, name, env=env, display_name=display_name)
            target = data / "kernels" / name / "kernel.json"
            new = (spec / "kernel.json").read_bytes()
            if not target.exists() or target.read_bytes() != new:
                target.parent.mkdir(exist_ok=True)
                partial = target.with_suffix(".tmp")
                shutil.copyfile(spec / "kernel.json", partial)
                os.replace(partial, target)


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
