"""The command line and the grader's input checks (no notebook is executed here)."""
from __future__ import annotations

import csv
from pathlib import Path

import nbformat
import pytest

from bnlessons.coursework import grade
from bnlessons.coursework.__main__ import main
from bnlessons.coursework.grade import (
    Report,
    Result,
    find_answers,
    grading_notebook,
    reseed,
    sources_digest,
    submissions,
    write_answers,
    write_csv,
)
from bnlessons.coursework.lesson import LessonError, exercises
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
    assert sources[0].startswith("import bnlessons.coursework.guard as")  # armed first
    for ex in found:
        (run,) = [c for c in nb.cells if c.metadata.get("coursework") == {
            "label": ex.label, "role": "graded", "sources": sources_digest(
                lesson.cells[ex.check_cell].source, lesson.cells[ex.hidden_cell].source)}]
        assert repr(lesson.cells[ex.check_cell].source) in run.source
        assert repr(lesson.cells[ex.hidden_cell].source) in run.source
        assert lesson.cells[ex.check_cell].source not in sources  # only through the guard
    assert "def my_forward(x, gamma, beta, eps):\n    return x" in sources
    assert not any("{solution-start}" in s for s in sources)
    assert nb.cells[-1].metadata["coursework"]["role"] == "graded"  # nothing after the last


def test_to_end_runs_the_whole_lesson_with_the_given_parameters():
    lesson = nbformat.read(BOOK / f"{LESSON}.ipynb", 4)
    submission = student_notebook(lesson, LESSON)
    cut, _ = grading_notebook(lesson, submission, LESSON)
    whole, _ = grading_notebook(lesson, submission, LESSON, to_end=True,
                                parameters="SEEDS = [7]")
    last_code = [c for c in lesson.cells if c.cell_type == "code"][-1]
    assert last_code.source not in [c.source for c in cut.cells]
    whole_code = [c for c in whole.cells if c.cell_type == "code"]
    assert whole_code[-1].source == last_code.source and len(whole.cells) > len(cut.cells)
    (i,) = [i for i, c in enumerate(whole.cells) if c.source == "SEEDS = [7]"]
    (p,) = [c for c in lesson.cells if "parameters" in c.metadata.get("tags", [])]
    assert whole.cells[i - 1].source == p.source  # right after the parameters cell
    with pytest.raises(TypeError, match="to_end"):
        grading_notebook(lesson, submission, LESSON, to_end=1)
    with pytest.raises(TypeError, match="parameters"):
        grading_notebook(lesson, submission, LESSON, parameters=["SEEDS = [7]"])
    lesson.cells[lesson.cells.index(p)].metadata["tags"] = []
    with pytest.raises(ValueError, match="no cell tagged 'parameters'"):
        grading_notebook(lesson, submission, LESSON, parameters="SEEDS = [7]")


def answer_cells(nb, label):
    return [c for c in nb.cells if c.metadata.get("coursework") == {"label": label,
                                                                     "role": "answer"}]


def test_answers_are_found_by_label_then_by_the_names_they_define():
    lesson = nbformat.read(BOOK / f"{LESSON}.ipynb", 4)
    found = {ex.label: ex for ex in exercises(lesson)}
    solution = lesson.cells[found["ex-forward-by-hand"].solution_cells[0]].source
    submission = student_notebook(lesson, LESSON)
    (stub,) = answer_cells(submission, "ex-forward-by-hand")
    stub.source, stub.id = solution, "renamed-by-the-student"  # found by its label
    answers = find_answers(lesson, submission, list(found.values()))
    assert answers.code[found["ex-forward-by-hand"].solution_cells[0]] == solution
    assert "ex-forward-by-hand" not in answers.warnings
    # the stub deleted, the answer retyped in a new cell near the top: it counts, with a warning
    submission.cells.remove(stub)
    submission.cells.insert(2, nbformat.v4.new_code_cell(solution))
    answers = find_answers(lesson, submission, list(found.values()))
    assert answers.code[found["ex-forward-by-hand"].solution_cells[0]] == solution
    assert "defines my_forward" in answers.warnings["ex-forward-by-hand"]
    assert not any(solution == c.source for cells in answers.added.values() for c in cells)
    nb, _ = grading_notebook(lesson, submission, LESSON)
    (answer,) = answer_cells(nb, "ex-forward-by-hand")
    assert answer.source == solution  # where the lesson's solution was, not the stub
    # ... and deleted without a replacement: a warning that says what is missing
    submission.cells.pop(2)
    answers = find_answers(lesson, submission, list(found.values()))
    assert "no answer found" in answers.warnings["ex-forward-by-hand"]
    assert "no cell you added defines my_forward" in answers.warnings["ex-forward-by-hand"]


def test_a_notebook_without_cell_ids_is_matched_by_labels_and_text(tmp_path):
    lesson = nbformat.read(BOOK / f"{LESSON}.ipynb", 4)
    found = exercises(lesson)
    submission = student_notebook(lesson, LESSON)
    for ex in found:
        (stub,) = answer_cells(submission, ex.label)
        stub.source = lesson.cells[ex.solution_cells[0]].source
    submission.cells.insert(3, nbformat.v4.new_code_cell("helper = 1"))
    submission.nbformat_minor = 4
    for cell in submission.cells:
        del cell["id"]
    path = tmp_path / "old.ipynb"
    nbformat.write(submission, path)
    read_back = nbformat.read(path, 4)
    assert not any(c.get("id") for c in read_back.cells)
    answers = find_answers(lesson, read_back, found)
    assert answers.warnings == {} and "no cell ids" in answers.notes[0]
    assert sorted(answers.code) == sorted(i for ex in found for i in ex.solution_cells)
    # the student's own cell stays after the lesson cell it followed
    ((after, (helper,)),) = answers.added.items()
    assert helper.source == "helper = 1" and lesson.cells[after].source == \
        read_back.cells[2].source


def test_the_instructors_seed_redraws_the_hidden_inputs():
    hidden = ("checks.require(checks.check_forward(my_forward, shapes=((5, 7),), seed=1100,\n"
              "                                    verbose=False))")
    assert reseed(hidden, 7, "ex") == reseed(hidden, 7, "ex")
    one, other = reseed(hidden, 7, "ex"), reseed(hidden, 8, "ex")
    assert "seed=1100" not in one and one != other and "shapes=((5, 7),)" in one
    assert reseed("checks.require(checks.check_x(f, cases=(1,)))", 7, "ex") == \
        "checks.require(checks.check_x(f, cases=(1,)))"
    lesson = nbformat.read(BOOK / f"{LESSON}.ipynb", 4)
    plain, _ = grading_notebook(lesson, lesson, LESSON)
    seeded, _ = grading_notebook(lesson, lesson, LESSON, seed=7)
    assert "seed=1100" in "".join(c.source for c in plain.cells)
    assert "seed=1100" not in "".join(c.source for c in seeded.cells)


SCALES = "02-bn-math/03-scale-invariance"


def _hidden_source(nb, label):
    """The hidden tests the graded cell of ``label`` runs (its second argument)."""
    import ast

    cell = next(c for c in nb.cells if c.metadata.get("coursework", {}).get("label") == label
                and c.metadata["coursework"]["role"] == "graded")
    return ast.literal_eval(ast.parse(cell.source).body[0].value.args[2])


def _hidden_scales(hidden):
    import ast

    from bnlessons.checks.bn_math import drawn_scales

    call = ast.parse(hidden).body[0].value.args[0]
    kw = {k.arg: k.value.value for k in call.keywords}
    assert kw["a"] is None  # the scales come from the seed
    return drawn_scales(kw["seed"])


def test_the_instructors_seed_draws_the_scales_of_the_hidden_test():
    """02/03's hidden test tries scales drawn from the grader's seed, never the visible a = 4;
    two seeds give two sets; an answer hard-coded for a = 4 passes the visible check and
    fails the hidden test; a correct one passes both."""
    from bnlessons import checks
    from bnlessons.checks.common import CheckFailed

    lesson = nbformat.read(BOOK / f"{SCALES}.ipynb", 4)
    label = "ex-ch2-scale-factors"
    (ex,) = [e for e in exercises(lesson) if e.label == label]
    assert "a=4.0" in lesson.cells[ex.check_cell].source
    hidden = {seed: _hidden_source(grading_notebook(lesson, lesson, SCALES, seed=seed)[0],
                                   label) for seed in (None, 7, 8)}
    scales = {seed: _hidden_scales(h) for seed, h in hidden.items()}
    assert len(set(scales.values())) == 3, scales
    assert all(4.0 not in s and len(s) == 2 for s in scales.values()), scales

    def hard_coded(a):
        return {"output": 1.0, "grad_input": 1.0, "grad_weight": 0.25, "effective_lr": 1 / 16}

    def correct(a):
        return {"output": 1.0, "grad_input": 1.0, "grad_weight": 1 / a, "effective_lr": a**-2}

    for answer in (hard_coded, correct):  # the visible check, as the lesson has it
        exec(lesson.cells[ex.check_cell].source, {"checks": checks, "scale_factors": answer})
    for source in hidden.values():
        exec(source, {"checks": checks, "scale_factors": correct})
        with pytest.raises(CheckFailed, match="not the factor measured with a ="):
            exec(source, {"checks": checks, "scale_factors": hard_coded})
        with pytest.raises(CheckFailed, match="must be a function of a"):
            exec(source, {"checks": checks, "scale_factors": correct(4.0)})


def test_a_folder_of_submissions_gives_one_csv_and_one_file_of_answers(tmp_path):
    (tmp_path / "alice" / "02-bn-math").mkdir(parents=True)
    (tmp_path / "bob").mkdir()
    for p in (tmp_path / "alice" / "02-bn-math" / "a.ipynb", tmp_path / "bob" / "b.ipynb",
              tmp_path / "carol.ipynb"):
        nbformat.write(nbformat.v4.new_notebook(), p)
    assert [s for s, _ in submissions([tmp_path])] == ["alice", "bob", "carol"]
    long = "Because the mean is subtracted. " * 10
    reports = [Report("a.ipynb", "02-bn-math/02-backward", student="alice", results=[
        Result("ex-a", "code", 1.0, 1.0, "pass", "fine"),
        Result("ex-why", "written", None, 1.0, "manual", "answer: ...", answer=long)]),
        Report("b.ipynb", "02-bn-math/02-backward", student="bob", results=[
            Result("ex-a", "code", 0.0, 1.0, "tampered", "the submission replaced x"),
            Result("ex-why", "written", None, 1.0, "manual", "no answer yet")])]
    write_csv(reports, tmp_path / "grades.csv")
    write_answers(reports, tmp_path / "answers.md")
    with open(tmp_path / "grades.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert [(r["student"], r["exercise"], r["points"], r["status"]) for r in rows] == [
        ("alice", "ex-a", "1", "pass"), ("alice", "ex-why", "", "manual"),
        ("bob", "ex-a", "0", "tampered"), ("bob", "ex-why", "", "manual")]
    text = (tmp_path / "answers.md").read_text()
    assert long.strip() in text and "### bob" in text and "*(no answer)*" in text


def test_a_written_questions_check_scores_nothing():
    lesson = nbformat.read(BOOK / "02-bn-math/02-backward.ipynb", 4)
    found = {ex.label: ex for ex in exercises(lesson)}
    why = found["ex-ch2-why-sum-zero"]
    assert why.written and why.check_cell is not None and not why.graded
    nb, _ = grading_notebook(lesson, lesson, "02-bn-math/02-backward")
    labels = [c.metadata["coursework"]["label"] for c in nb.cells
              if c.metadata.get("coursework", {}).get("role") == "graded"]
    assert labels == ["ex-ch2-staged-backward", "ex-ch2-compact-backward"]
    assert lesson.cells[why.check_cell].source not in "".join(c.source for c in nb.cells)
