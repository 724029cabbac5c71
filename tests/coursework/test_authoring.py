"""The exercise markup: the lessons follow it, and each broken rule is caught."""
from __future__ import annotations

from pathlib import Path

import nbformat
import pytest

from bnlessons.coursework import build_coursework, check_book, exercises, problems
from bnlessons.coursework.lesson import LessonError, lesson_paths

ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"


def md(text: str, **meta) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_markdown_cell(text)
    cell.metadata.update(meta)
    return cell


def code(text: str, *tags: str) -> nbformat.NotebookNode:
    cell = nbformat.v4.new_code_cell(text)
    if tags:
        cell.metadata["tags"] = list(tags)
    return cell


def exercise(label: str = "ex-demo", **meta) -> list:
    return [md(f":::{{exercise}}\n:label: {label}\n\nWrite `f`.\n:::", **meta),
            md(f"```{{solution-start}} {label}\n:class: dropdown\n```"),
            code("def f(x):\n    return 2 * x", "solution"),
            md("```{solution-end}\n```"),
            code("verdict = checks.check_forward(f)\nassert verdict.passed"),
            code("checks.require(checks.check_forward(f, seed=1, verbose=False))",
                 "hidden-tests", "remove-cell")]


def notebook(cells: list) -> nbformat.NotebookNode:
    return nbformat.v4.new_notebook(cells=cells)


def test_every_lesson_follows_the_markup():
    assert check_book(BOOK) == []


def test_the_lessons_have_their_exercises():
    labels = [ex.label for p in lesson_paths(BOOK) for ex in exercises(nbformat.read(p, 4))]
    assert len(labels) == len(set(labels)) >= 26
    written = {ex.label for p in lesson_paths(BOOK) for ex in exercises(nbformat.read(p, 4))
               if ex.written}
    assert {"ex-ch1-why-eval", "ex-ch2-why-sum-zero", "ex-ch3-translate-momentum",
            "ex-ch3-ghost-two", "ex-ch5-zero-gradient"} <= written
    assert "ex-ch5-fixup-exponent" in labels and "ex-ch5-fixup-exponent" not in written


def test_a_well_formed_exercise_passes():
    nb = notebook(exercise())
    assert problems(nb) == []
    (ex,) = exercises(nb)
    assert (ex.label, ex.points, ex.check_cell, ex.hidden_cell) == ("ex-demo", 1.0, 4, 5)
    nb = notebook(exercise(coursework={"points": 3}))
    assert exercises(nb)[0].points == 3.0


@pytest.mark.parametrize("breakage, message", [
    (lambda c: c.pop(3), "never closed"),
    (lambda c: c.insert(0, md("```{solution-end}\n```")), "without a solution gate"),
    (lambda c: c[2].metadata.pop("tags"), "not tagged 'solution'"),
    (lambda c: c.pop(4) and c.pop(4), "needs an untagged check cell"),
    (lambda c: c.pop(5), "needs a hidden-tests cell"),
    (lambda c: c[5].metadata.update(tags=["hidden-tests"]), "not tagged ['remove-cell']"),
    (lambda c: c.__setitem__(0, md(":::{exercise}\n:label: ex demo!\n:::")),
     "not a valid nbgrader grade_id"),
    (lambda c: c.__setitem__(0, md(":::{exercise}\nno label\n:::")), "without a :label:"),
    (lambda c: c.append(code("f(3)")), "uses f from exercise ex-demo after its check"),
    (lambda c: c.append(code("x = 1", "solution")), "outside any solution gate"),
    (lambda c: c[0].metadata.update(coursework={"points": -1}), "positive number"),
])
def test_each_broken_rule_is_caught(breakage, message):
    cells = exercise()
    breakage(cells)
    found = problems(notebook(cells))
    assert any(message in p for p in found), found
    with pytest.raises(LessonError, match="breaks the exercise markup"):
        exercises(notebook(cells))


def test_a_fallback_to_the_reference_is_allowed():
    cells = exercise() + [code("g = checks.passed_or(verdict, f, reference_f)\ng(3)")]
    assert problems(notebook(cells)) == []


def test_duplicate_labels_across_the_book_are_caught(tmp_path):
    for chapter in ("01-a", "02-b"):
        (tmp_path / chapter).mkdir()
        nbformat.write(notebook(exercise()), tmp_path / chapter / "01-x.ipynb")
    assert any("also used" in p for p in check_book(tmp_path))
    with pytest.raises(LessonError, match="also used"):
        build_coursework(tmp_path, tmp_path / "out")


def test_the_instructors_page_lists_every_exercise_with_its_points():
    rows = [line.split("|")[1:-1] for line in (BOOK / "assigning.md").read_text().splitlines()
            if line.startswith("| ") and "`ex-" in line]
    listed = [(r[0].strip(), r[2].strip().strip("`"), r[3].split()[0], float(r[4]))
              for r in rows]
    want = []
    for path in lesson_paths(BOOK):
        for ex in exercises(nbformat.read(path, 4)):
            want.append((str(int(path.parent.name[:2])), ex.label,
                         "written" if ex.written else "code", ex.points))
    assert listed == want
    assert all(r[5].strip().endswith("min") for r in rows)


#: Worked code that would answer an exercise, by lesson: names no lesson cell a student sees
#: may compute (the solutions compute them, in the dropdowns the student notebooks drop).
WORKED_ANSWERS = {
    "02-bn-math/02-backward": {"dbeta", "dgamma", "dxhat", "dvar", "dmu", "dx_staged",
                               "dx_compact", "sum_g"},
}


@pytest.mark.parametrize("lesson", sorted(WORKED_ANSWERS))
def test_the_student_notebook_does_not_work_the_exercises_in_advance(lesson):
    from bnlessons.coursework.lesson import defined_names
    from bnlessons.coursework.student import student_notebook

    nb = student_notebook(nbformat.read(BOOK / f"{lesson}.ipynb", 4), lesson)
    shown = set().union(*(defined_names(c.source) for c in nb.cells
                          if c.cell_type == "code" and "coursework" not in c.metadata))
    assert not shown & WORKED_ANSWERS[lesson], sorted(shown & WORKED_ANSWERS[lesson])


def test_a_code_exercise_that_asks_for_sentences_has_a_written_part():
    """02/03 asks why each factor is what it is: a written exercise with its own answer cell."""
    from bnlessons.coursework.student import student_notebook

    lesson = "02-bn-math/03-scale-invariance"
    nb = student_notebook(nbformat.read(BOOK / f"{lesson}.ipynb", 4), lesson)
    roles = [(c.metadata["coursework"]["label"], c.metadata["coursework"]["role"])
             for c in nb.cells if "coursework" in c.metadata]
    assert roles == [("ex-ch2-scale-factors", "answer"), ("ex-ch2-scale-factors", "check"),
                     ("ex-ch2-scale-factors-why", "written")]
