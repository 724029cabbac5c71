"""The command line and the grader's input checks (no notebook is executed here)."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from bnlessons.coursework import grade
from bnlessons.coursework.__main__ import main
from bnlessons.coursework.grade import grading_notebook
from bnlessons.coursework.lesson import LessonError
from bnlessons.coursework.student import student_notebook

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
LESSON = "02-bn-math/01-forward-from-scratch"


def test_bad_input_gets_a_clear_error(tmp_path, capsys):
    assert main(["grade", str(tmp_path / "missing.ipynb"), "--book", str(BOOK)]) == 2
    assert "no notebook at" in capsys.readouterr().err
    (tmp_path / "broken.ipynb").write_text("{not json")
    assert main(["grade", str(tmp_path / "broken.ipynb"), "--book", str(BOOK)]) == 2
    assert "not a readable notebook" in capsys.readouterr().err
    with pytest.raises(ValueError, match="cell_timeout"):
        grade(BOOK / f"{LESSON}.ipynb", BOOK, cell_timeout=0)
    stray = tmp_path / "unknown-lesson.ipynb"
    nbformat.write(nbformat.v4.new_notebook(), stray)
    with pytest.raises(LessonError, match="matches 0 lessons"):
        grade(stray, BOOK)
    assert main(["check", "--book", str(tmp_path / "nowhere")]) == 2


def test_the_grading_notebook_keeps_the_checks_and_takes_only_the_answers():
    lesson = nbformat.read(BOOK / f"{LESSON}.ipynb", 4)
    submission = student_notebook(lesson, LESSON)
    for cell in submission.cells:
        meta = cell.metadata.get("coursework", {})
        if meta.get("role") == "check":
            cell.source = "pass"
        if meta.get("role") == "answer":
            cell.source = "def my_forward(x, gamma, beta, eps):\n    return x"
    mine = nbformat.v4.new_code_cell("helper = 1")
    submission.cells.insert(1, mine)
    nb, found = grading_notebook(lesson, submission, LESSON)
    sources = [c.source for c in nb.cells]
    assert "pass" not in sources and "helper = 1" in sources
    for ex in found:
        assert lesson.cells[ex.check_cell].source in sources
        assert lesson.cells[ex.hidden_cell].source in sources
    assert "def my_forward(x, gamma, beta, eps):\n    return x" in sources
    assert not any("{solution-start}" in s for s in sources)
    last = max(ex.hidden_cell for ex in found)
    assert sources[-1] == lesson.cells[last].source  # nothing after the last graded cell
