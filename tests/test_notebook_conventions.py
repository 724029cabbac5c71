"""Every lesson follows the course's conventions, so nbval and the book agree.

(Strict nbval, run on book/ by the same test command, re-executes each
notebook and compares its outputs; these checks cover what it does not.)
"""
from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
NOTEBOOKS = sorted(p for p in (ROOT / "book").rglob("*.ipynb")
                   if ".ipynb_checkpoints" not in p.parts)
ADDRESS = re.compile(r" at 0x[0-9a-fA-F]{6,}")
MACHINE_PATH = re.compile(r"(/root/|/home/|/tmp/|/Users/|/work/)")


def ids(paths):
    return [p.relative_to(ROOT / "book").as_posix() for p in paths]


def code_cells(nb):
    return [c for c in nb["cells"] if c["cell_type"] == "code"]


def text(output) -> str:
    t = output.get("text") or output.get("data", {}).get("text/plain", "")
    return "".join(t) if isinstance(t, list) else t


def test_there_are_lessons():
    assert NOTEBOOKS, "no notebooks under book/"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_conventions(path):
    nb = json.loads(path.read_text())
    assert nb["metadata"]["kernelspec"]["name"] == "bnlessons", \
        "notebooks run in the course kernel (pinned numerics): kernelspec name 'bnlessons'"
    cells = code_cells(nb)
    first = "".join(cells[0]["source"])
    assert "import bnlessons" in first or "from bnlessons" in first, \
        "the first code cell must import bnlessons"
    tagged = [c for c in cells if "parameters" in c.get("metadata", {}).get("tags", [])]
    assert len(tagged) == 1, "exactly one code cell must be tagged 'parameters'"
    assert re.search(r"^SEEDS = \[\d+(, \d+)*\]", "".join(tagged[0]["source"]), re.M), \
        "the parameters cell names its seeds SEEDS, a list of ints (.ci/check-claims replaces it)"
    assert any("bnlessons.setup(" in "".join(c["source"]) for c in cells), \
        "the notebook must call bnlessons.setup(seed)"
    counts = [c["execution_count"] for c in cells if "".join(c["source"]).strip()]
    assert counts == list(range(1, len(counts) + 1)), \
        "stored outputs must come from one top-to-bottom run (.ci/execute_notebooks.py)"
    for i, cell in enumerate(cells):
        tags = cell.get("metadata", {}).get("tags", [])
        for out in cell.get("outputs", []):
            if out["output_type"] == "error":
                assert "raises-exception" in tags, f"code cell {i} stores an error"
            assert not ADDRESS.search(text(out)), f"code cell {i} prints a memory address"
            assert not MACHINE_PATH.search(text(out)), f"code cell {i} prints a machine path"
            if out.get("name") == "stderr":
                assert "it/s" not in text(out), f"code cell {i} has a timed progress bar"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=ids(NOTEBOOKS))
def test_notebook_does_not_redefine_package_functions(path):
    """Notebooks call bnlessons; they do not carry copies of its public functions."""
    import importlib
    import pkgutil

    import bnlessons  # noqa: F401

    public = set()
    for mod in pkgutil.walk_packages(bnlessons.__path__, "bnlessons."):
        module = importlib.import_module(mod.name)
        public |= {n for n, v in vars(module).items() if not n.startswith("_")
                   and callable(v) and getattr(v, "__module__", "") == mod.name}
    nb = json.loads(path.read_text())
    defined = set()
    for cell in code_cells(nb):
        if "solution" in cell.get("metadata", {}).get("tags", []):
            continue  # a learner's solution may re-implement what the reference does
        defined |= set(re.findall(r"^(?:def|class)\s+(\w+)", "".join(cell["source"]), re.M))
    assert not defined & public, f"redefines bnlessons functions: {sorted(defined & public)}"
