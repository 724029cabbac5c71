"""The built coursework: student notebooks hold no solution, the nbgrader tree is valid,
and two builds are byte-identical."""
from __future__ import annotations

import ast
import re
import subprocess
import sys
import types
import zipfile
from pathlib import Path

import nbformat
import pytest

from bnlessons.coursework.__main__ import main
from bnlessons.coursework.lesson import answer_text, exercises, lesson_paths
from bnlessons.coursework.nbgrader import solution_regions, strip_for_release, validate
from bnlessons.coursework.student import stub_source

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
LESSONS = lesson_paths(BOOK)


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coursework")
    assert main(["build", "--book", str(BOOK), "--out", str(out)]) == 0
    return out


def files(root: Path) -> dict[str, bytes]:
    return {p.relative_to(root).as_posix(): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file()}


def test_two_builds_are_byte_identical(built, tmp_path):
    assert main(["build", "--book", str(BOOK), "--out", str(tmp_path)]) == 0
    first, second = files(built), files(tmp_path)
    assert len(first) == 2 * len(LESSONS)
    assert first == second


def solution_lines(source: str) -> set[str]:
    """Lines of a solution that give something away: not comments, signatures, imports,
    docstrings or short lines."""
    keep = set()
    for line in source.splitlines():
        text = line.strip()
        if len(text) < 12 or text.startswith(("#", "def ", "class ", "import ", "from ", '"""',
                                              "@", "return None")):
            continue
        keep.add(text)
    return keep


def sentences(text: str) -> list[str]:
    parts = re.split(r"(?<=[.!?])\s+", " ".join(text.split()))
    return [s for s in parts if len(s) >= 40]


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_student_notebooks_give_nothing_away(built, path):
    lesson = path.relative_to(BOOK).with_suffix("").as_posix()
    nb = nbformat.read(path, 4)
    student = nbformat.read(built / "student" / f"{lesson}.ipynb", 4)
    text = "\n".join(c.source for c in student.cells)
    lines = {line.strip() for line in text.splitlines()}
    found = exercises(nb)
    gates = {i for ex in found for i in range(ex.gate_start, ex.gate_end + 1)}
    # lines the lesson shows outside its solutions (a wrong version, a demonstration) are
    # not given away by the student notebook
    shown = {line.strip() for i, c in enumerate(nb.cells) if i not in gates
             for line in c.source.splitlines()}
    for ex in found:
        for i in ex.solution_cells:
            leaked = (solution_lines(nb.cells[i].source) - shown) & lines
            assert not leaked, f"{ex.label}: solution lines in the student notebook: {leaked}"
        for sentence in sentences(answer_text(nb, ex)):
            assert sentence not in " ".join(text.split()), f"{ex.label}: {sentence!r}"
        if ex.hidden_cell is not None:
            assert nb.cells[ex.hidden_cell].source not in text
    assert "hidden-tests" not in {t for c in student.cells for t in c.metadata.get("tags", [])}
    assert "{solution-start}" not in text and "{solution-end}" not in text
    assert "assert verdict.passed" not in text
    for cell in student.cells:
        if cell.cell_type == "code":
            assert cell.outputs == [] and cell.execution_count is None
    for cell in student.cells:  # every stub is valid Python with the lesson's names
        if cell.cell_type == "code" and "%" not in cell.source:
            ast.parse(cell.source)


def test_stubs_keep_names_and_signatures():
    src = ('import copy\n\n\ndef f(x, y=2):\n    """Doc."""\n    return x + y\n\n\n'
           'class Block(nn.Module):\n    def __init__(self, width):\n        super().__init__()\n\n'
           '    def forward(self, x):\n        return x\n\n\nprint(f(1))\nb = f(2)\n')
    stub = stub_source(src, "ex-demo")
    assert stub == ('import copy\n\n\ndef f(x, y=2):\n    """Doc."""\n    # YOUR CODE HERE\n'
                    '    raise NotImplementedError("ex-demo: write f")\n\n\n'
                    'class Block(nn.Module):\n    def __init__(self, width):\n'
                    '        # YOUR CODE HERE\n'
                    '        raise NotImplementedError("ex-demo: write Block.__init__")\n\n'
                    '    def forward(self, x):\n        # YOUR CODE HERE\n'
                    '        raise NotImplementedError("ex-demo: write Block.forward")')
    namespace: dict = {}
    exec(stub.replace("nn.Module", "object"), namespace)  # noqa: S102 - our own stub
    with pytest.raises(NotImplementedError, match="ex-demo: write f"):
        namespace["f"](1)
    values = stub_source('import math\nanswers = {"a": math.pi}\nx, y = 1, 2\n', "ex-demo")
    assert values == "import math\n\n\nanswers = ...  # YOUR CODE HERE"
    exec(values, namespace)  # noqa: S102
    assert namespace["answers"] is Ellipsis


def test_solution_regions_wrap_bodies_only():
    src = 'def f(x):\n    """Doc."""\n    y = x\n    return y\n\n\nanswers = {"a": 1}'
    assert solution_regions(src) == (
        'def f(x):\n    """Doc."""\n    ### BEGIN SOLUTION\n    y = x\n    return y\n'
        '    ### END SOLUTION\n\n\n### BEGIN SOLUTION\nanswers = {"a": 1}\n### END SOLUTION')


@pytest.mark.parametrize("path", LESSONS, ids=[p.stem for p in LESSONS])
def test_nbgrader_sources_are_valid(built, path):
    lesson = path.relative_to(BOOK).with_suffix("").as_posix()
    source = nbformat.read(built / "nbgrader" / "source" / f"{lesson}.ipynb", 4)
    assert validate(source) == []
    nb = nbformat.read(path, 4)
    graded = [c for c in source.cells if c.metadata.get("nbgrader", {}).get("grade")]
    assert len(graded) == sum(ex.graded + ex.written for ex in exercises(nb))
    release = strip_for_release(source)
    assert "BEGIN HIDDEN TESTS" not in "\n".join(c.source for c in release.cells)
    # Run All goes past a stub: the assert on the verdict is hidden with the tests
    assert "assert verdict.passed" not in "\n".join(c.source for c in release.cells)
    for cell in graded:
        if cell.cell_type == "code":
            assert "### BEGIN HIDDEN TESTS\nassert verdict.passed\n" in cell.source
    for cell in release.cells:
        if cell.cell_type == "code" and "%" not in cell.source:
            ast.parse(cell.source)


def test_the_validator_catches_what_nbgrader_rejects():
    cell = nbformat.v4.new_code_cell("x = 1")
    nb = nbformat.v4.new_notebook(cells=[cell])
    for bad, message in [({"grade": True, "solution": False, "locked": False,
                           "schema_version": 3, "grade_id": "a"}, "points"),
                          ({"grade": False, "solution": True, "locked": False,
                            "schema_version": 3, "grade_id": "a b"}, "grade_id"),
                          ({"grade": False, "solution": True, "locked": False,
                            "schema_version": 2, "grade_id": "a"}, "schema_version"),
                          ({"grade": False, "solution": True, "locked": False,
                            "schema_version": 3}, "grade_id"),
                          ({"grade": False, "solution": True, "schema_version": 3,
                            "grade_id": "a"}, "no 'locked'")]:
        cell.metadata["nbgrader"] = bad
        assert any(message in p for p in validate(nb)), (bad, validate(nb))
    md = nbformat.v4.new_markdown_cell("answer")
    md.metadata["nbgrader"] = {"grade": False, "solution": True, "locked": False,
                               "schema_version": 3, "grade_id": "b"}
    assert validate(nbformat.v4.new_notebook(cells=[md]))


def nbgrader_validator():
    """nbgrader's own MetadataValidatorV3, from its wheel on the package index (not installed:
    nbgrader's requirements would change the pinned environment)."""
    where = ROOT / "_build" / "nbgrader-wheel"
    wheels = sorted(where.glob("nbgrader-0.9.6-*.whl"))
    if not wheels:
        where.mkdir(parents=True, exist_ok=True)
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "-q",
                               "-d", str(where), "nbgrader==0.9.6"], capture_output=True,
                              text=True, timeout=120)
        wheels = sorted(where.glob("nbgrader-0.9.6-*.whl"))
        if done.returncode or not wheels:
            pytest.skip("nbgrader 0.9.6's wheel could not be downloaded: "
                        + done.stderr.strip()[-200:])
    unpacked = where / "unpacked"
    if not (unpacked / "nbgrader" / "nbgraderformat" / "v3.json").exists():
        with zipfile.ZipFile(wheels[0]) as wheel:
            wheel.extractall(unpacked)
    # nbgrader/__init__ imports the whole server; load only its metadata format package
    saved = {k: v for k, v in sys.modules.items() if k == "nbgrader" or k.startswith("nbgrader.")}
    package = types.ModuleType("nbgrader")
    package.__path__ = [str(unpacked / "nbgrader")]
    sys.modules["nbgrader"] = package
    try:
        from nbgrader.nbgraderformat.v3 import MetadataValidatorV3
    finally:
        for k in [k for k in sys.modules if k == "nbgrader" or k.startswith("nbgrader.")]:
            del sys.modules[k]
        sys.modules.update(saved)
    return MetadataValidatorV3()


def test_nbgraders_own_validator_accepts_every_source(built):
    validator = nbgrader_validator()
    sources = sorted((built / "nbgrader" / "source").rglob("*.ipynb"))
    assert len(sources) == len(LESSONS)
    for path in sources:
        validator.validate_nb(nbformat.read(path, 4))
    bad = nbformat.read(sources[0], 4)
    cell = nbformat.v4.new_code_cell("x = 1")
    cell.metadata["nbgrader"] = {"grade": True, "solution": False, "locked": False,
                                 "schema_version": 3, "grade_id": "x"}
    bad.cells.append(cell)
    with pytest.raises(Exception, match="points"):
        validator.validate_nb(bad)
