"""The autograder on real notebooks (slow: graded lessons are executed).

Cost: every lesson with exercises runs once as its untouched student notebook, to the end
and with other seeds, in tests/test_claims.py, which asserts ``assert_untouched`` of its
report (so that run also shows the guard flags nothing a lesson does, and that Run All
on a student notebook reaches the end, falling back to the reference after a check where a
lesson uses an answer). Here the ``grade`` command runs on two quick lessons. Four crafted
submissions of two quick lessons run once each, and the tests of ``TestCraftedSubmissions``
read their reports (a replaced check, a replaced Verdict and require, the package's own
answer handed in, an answer retyped in a new cell, a notebook without cell ids, a deleted
answer, a wrong answer with its check cell deleted). Handing in the package's own answer is
tried for every code exercise in test_guard.py, with the lesson's own check and hidden
tests but without the lesson. That the lessons themselves get full marks is read from the
run that strict nbval makes of every lesson (its outputs are the stored ones, or nbval
fails): the grader runs exactly the lesson's code cells, with each check and its hidden
tests from their exact sources through the guard; the guard's verdict on correct answers is
tried on the real runs of the crafted submissions. Last, nbgrader itself (in a throwaway
environment under _build/ that sees .venv's packages) generates and autogrades one lesson.
"""
from __future__ import annotations

import ast
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import nbformat
import pytest
from test_claims import assert_untouched

from bnlessons.coursework import build_coursework, exercises, grade
from bnlessons.coursework.grade import (
    Report,
    Result,
    _error,
    _text,
    _written,
    grading_notebook,
    sources_digest,
)
from bnlessons.coursework.lesson import lesson_paths

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
BOOK = ROOT / "book"
GRADED = [p for p in lesson_paths(BOOK) if exercises(nbformat.read(p, 4))]


@pytest.fixture(scope="module")
def student(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coursework")
    build_coursework(BOOK, out)
    return out / "student"


QUICK = [BOOK / "02-bn-math/01-forward-from-scratch.ipynb", BOOK / "02-bn-math/02-backward.ipynb"]


def test_the_command_line_grades_untouched_student_notebooks_to_zero(student, tmp_path):
    """The ``grade`` command on two quick lessons' untouched student notebooks. Every
    other lesson's student notebook is graded to the end, with other seeds, by
    tests/test_claims.py, which asserts the same of its report."""
    paths = [student / p.relative_to(BOOK) for p in QUICK]
    done = subprocess.run([sys.executable, "-m", "bnlessons.coursework", "grade", *map(str, paths),
                           "--json", str(tmp_path / "grades.json"), "--book", str(BOOK)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads((tmp_path / "grades.json").read_text())
    assert [r["notebook"] for r in reports] == list(map(str, paths))
    assert "total 0/" in done.stdout
    for report in reports:
        assert_untouched(report)


NOT_RUN_THE_SAME = ("nbval-skip", "skip-execution", "raises-exception")


@pytest.mark.parametrize("path", GRADED, ids=[p.stem for p in GRADED])
def test_the_lessons_themselves_get_full_marks(path):
    """The grading notebook of a lesson, graded with its own answers, runs the lesson's code
    cells as they are, each check and its hidden tests through the guard from their exact
    sources; the lesson's stored outputs, which strict nbval (book/ in the same test
    command) reproduces cell by cell, show every check passing and no hidden test raising.
    That the guard itself passes the lessons' answers is tried on real runs below (three
    lessons with one wrong answer each, 02/01 without cell ids)."""
    lesson = nbformat.read(path, 4)
    name = path.relative_to(BOOK).with_suffix("").as_posix()
    nb, found = grading_notebook(lesson, lesson, name)
    assert nb.metadata["coursework"] == {"warnings": {}, "notes": []}
    written = [_written(ex, lesson) for ex in found if ex.written]
    assert all(r.status == "manual" and r.points is None for r in written)
    if not any(ex.graded for ex in found):  # written answers only: nothing is run
        assert written and nb.cells == []
        return
    checks_at = {ex.check_cell: ex for ex in found if ex.graded}
    hidden_at = {ex.hidden_cell for ex in found if ex.graded}
    learners = {i for ex in found if not ex.graded for i in (ex.check_cell, ex.hidden_cell)}
    last = max(hidden_at)
    want = []
    for i, cell in enumerate(lesson.cells[:last + 1]):
        if cell.cell_type != "code" or i in hidden_at | learners:
            continue
        if i in checks_at:
            ex = checks_at[i]
            want.append(("graded", sources_digest(cell.source,
                                                  lesson.cells[ex.hidden_cell].source)))
        else:
            want.append((cell.id, cell.source))
        tags = set(cell.metadata.get("tags", []))
        assert not tags & set(NOT_RUN_THE_SAME), (cell.id, tags)
    code = [c for c in nb.cells if c.cell_type == "code"]
    assert code[0].metadata["coursework"]["role"] == "guard"
    got = [("graded", c.metadata["coursework"]["sources"])
           if c.metadata.get("coursework", {}).get("role") == "graded" else (c.id, c.source)
           for c in code[1:]]
    assert got == want, "the grading notebook no longer runs the lesson's code cells as they are"
    for ex in checks_at.values():
        check, hidden = lesson.cells[ex.check_cell], lesson.cells[ex.hidden_cell]
        assert "[PASS]" in _text(check, "stdout") and _error(check) is None, ex.label
        assert _error(hidden) is None, ex.label


def definition(nb: nbformat.NotebookNode, name: str) -> str:
    """The source of the top-level def ``name`` in a code cell of ``nb``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and f"def {name}(" in cell.source:
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.FunctionDef) and node.name == name:
                    return ast.get_source_segment(cell.source, node)
    raise AssertionError(f"the lesson no longer defines {name}")


def nbgrader_python() -> Path:
    """A throwaway environment under _build/ that sees .venv's packages and adds nbgrader
    (whose requirements are not pinned by the course); skip if it cannot be made offline."""
    venv = ROOT / "_build" / "nbgrader-venv"
    python = venv / "bin" / "python"
    if not python.exists() or subprocess.run([str(python), "-c", "import nbgrader"],
                                             capture_output=True).returncode:
        made = subprocess.run([sys.executable, "-m", "venv", "--clear", str(venv)],
                              capture_output=True, text=True)
        assert made.returncode == 0, made.stderr
        ours = subprocess.run([sys.executable, "-c", "import site; print(site.getsitepackages()"
                               "[0])"], capture_output=True, text=True).stdout.strip()
        theirs = subprocess.run([str(python), "-c", "import site; print(site.getsitepackages()"
                                 "[0])"], capture_output=True, text=True).stdout.strip()
        Path(theirs, "bnlessons-venv.pth").write_text(ours + "\n")
        done = subprocess.run([str(python), "-m", "pip", "install", "-q", "nbgrader==0.9.6"],
                              capture_output=True, text=True, timeout=600)
        if done.returncode:
            pytest.skip("nbgrader 0.9.6 could not be installed beside the pinned packages: "
                        + done.stderr.strip()[-300:])
    return python


ROUND_TRIP = ("02-bn-math", ("02-backward",))  # three checks and a written answer, quick


def test_nbgrader_generate_and_autograde_round_trip(tmp_path):
    """nbgrader itself on one chapter (its quickest lesson with exercises): the solved source
    scores full marks on its graded code cells, the release it generates scores 0."""
    python = nbgrader_python()
    chapter, names = ROUND_TRIP
    built = tmp_path / "built"
    build_coursework(BOOK, built)
    course = tmp_path / "course"
    (course / "source" / chapter).mkdir(parents=True)
    for name in names:
        shutil.copy(built / "nbgrader" / "source" / chapter / f"{name}.ipynb",
                    course / "source" / chapter)
    (course / "nbgrader_config.py").write_text(
        f"c = get_config()\nc.CourseDirectory.root = {str(course)!r}\n"
        "c.CourseDirectory.course_id = 'bn'\nc.ExecutePreprocessor.timeout = 120\n")
    env = {k: v for k, v in os.environ.items()}
    env["JUPYTER_PATH"] = str(ROOT / ".venv" / "share" / "jupyter")  # the course kernel
    env["PATH"] = os.pathsep.join([str(python.parent), env.get("PATH", "")])  # alembic
    nbgrader = [str(python), "-m", "nbgrader"]

    def run(*args: str) -> None:
        done = subprocess.run([*nbgrader, *args], cwd=course, env=env, capture_output=True,
                              text=True, timeout=600)
        assert done.returncode == 0, (args, done.stdout[-2000:], done.stderr[-3000:])

    run("db", "assignment", "add", chapter)
    run("generate_assignment", chapter, "--force")
    for student, tree in (("solved", "source"), ("blank", "release")):
        (course / "submitted" / student / chapter).mkdir(parents=True)
        for name in names:
            shutil.copy(course / tree / chapter / f"{name}.ipynb",
                        course / "submitted" / student / chapter)
        run("db", "student", "add", student)
    run("autograde", chapter, "--force")
    query = (
        "from nbgrader.api import Gradebook\n"
        "with Gradebook('sqlite:///gradebook.db') as gb:\n"
        f"    for s in ('solved', 'blank'):\n"
        f"        sub = gb.find_submission({chapter!r}, s)\n"
        "        print(s, sub.code_score, sub.max_code_score)\n")
    done = subprocess.run([str(python), "-c", query], cwd=course, env=env, capture_output=True,
                          text=True, timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    scores = {line.split()[0]: tuple(map(float, line.split()[1:]))
              for line in done.stdout.split("\n") if line.strip()}
    solved, blank = scores["solved"], scores["blank"]
    assert solved[1] > 0 and solved == (solved[1], solved[1]), scores
    assert blank == (0.0, solved[1]), scores


CONVENTIONS = "03-inference/01-conventions"
FORWARD = "02-bn-math/01-forward-from-scratch"


def solved(lesson: str, student: Path) -> tuple[nbformat.NotebookNode, dict]:
    """The student notebook of ``lesson`` with every answer cell holding the lesson's answer,
    and, by label, each exercise with its (first) solution cell."""
    nb = nbformat.read(BOOK / f"{lesson}.ipynb", 4)
    found = {ex.label: ex for ex in exercises(nb)}
    submission = nbformat.read(student / f"{lesson}.ipynb", 4)
    by_id = {c.id: c for c in submission.cells}
    for ex in found.values():
        for i in ex.solution_cells:
            by_id[nb.cells[i].id].source = nb.cells[i].source
    return submission, {label: (ex, nb.cells[ex.solution_cells[0]])
                        for label, ex in found.items() if ex.solution_cells}


def replaced_check_and_retyped_answer(student: Path):
    """03/01: one answer does nothing and replaces its check by one that always passes; the
    other is typed into a new cell near the top, its answer cell deleted; the instructor's
    seed redraws the hidden tests."""
    submission, found = solved(CONVENTIONS, student)
    cells = {c.id: c for c in submission.cells}
    cells[found["ex-ch3-cs231n-update"][1].id].source = (
        "def my_cs231n_update(running_mean, running_var, x, momentum):\n"
        "    return running_mean, running_var\n\n\n"
        "checks.check_cs231n_update = lambda fn, **kw: checks.Verdict(\n"
        "    'check_cs231n_update', True, 'all good')")
    answer = cells[found["ex-ch3-pytorch-update"][1].id]
    submission.cells.remove(answer)
    submission.cells.insert(3, nbformat.v4.new_code_cell(answer.source))
    return CONVENTIONS, submission, 11


def handed_in_and_replaced_verdict(student: Path):
    """03/01: one answer calls the package's own update; the other replaces ``Verdict`` by a
    subclass that always passes and ``require`` by a no-op."""
    submission, found = solved(CONVENTIONS, student)
    cells = {c.id: c for c in submission.cells}
    cells[found["ex-ch3-pytorch-update"][1].id].source = (
        "from bnlessons import running_stats\n\n\n"
        "def my_pytorch_update(running_mean, running_var, num_batches_tracked, x, momentum):\n"
        "    return running_stats.pytorch_update(running_mean, running_var,\n"
        "                                        num_batches_tracked, x, momentum)")
    cells[found["ex-ch3-cs231n-update"][1].id].source = (
        "import bnlessons.checks.common\n\n\n"
        "class Verdict(bnlessons.checks.common.Verdict):\n"
        "    passed = True\n\n\n"
        "bnlessons.checks.common.Verdict = checks.Verdict = Verdict\n"
        "checks.require = lambda *verdicts: None\n\n\n"
        "def my_cs231n_update(running_mean, running_var, x, momentum):\n"
        "    return running_mean, running_var")
    return CONVENTIONS, submission, None


def without_ids_and_a_deleted_answer(student: Path):
    """02/01 saved without cell ids: one exercise answered, the other's answer cell deleted
    with nothing in its place."""
    submission, found = solved(FORWARD, student)
    submission.cells = [c for c in submission.cells
                        if c.id != found["ex-ch2-per-channel"][1].id]
    submission.nbformat_minor = 4
    for cell in submission.cells:
        del cell["id"]
    return FORWARD, submission, None


def wrong_answer_with_its_check_deleted(student: Path):
    """02/01: the forward pass written with the unbiased standard deviation (the mistake the
    lesson shows failing), its check cell replaced by ``pass``; the other exercise solved."""
    nb = nbformat.read(BOOK / f"{FORWARD}.ipynb", 4)
    submission, found = solved(FORWARD, student)
    ex, solution = found["ex-forward-by-hand"]
    by_id = {c.id: c for c in submission.cells}
    wrong = "forward_with_unbiased_std"
    by_id[solution.id].source = f"{definition(nb, wrong)}\n\n\nmy_forward = {wrong}"
    by_id[nb.cells[ex.check_cell].id].source = "pass"
    return FORWARD, submission, None


CRAFTED = {f.__name__: f for f in (replaced_check_and_retyped_answer,
                                   handed_in_and_replaced_verdict,
                                   without_ids_and_a_deleted_answer,
                                   wrong_answer_with_its_check_deleted)}


@pytest.fixture(scope="module")
def crafted(student, tmp_path_factory):
    """``crafted(name)``: the report on the submission ``CRAFTED[name]`` makes, graded once
    for every test that reads it (the tests of one class run on one worker)."""
    reports: dict[str, Report] = {}

    def report(name: str) -> Report:
        if name not in reports:
            lesson, submission, seed = CRAFTED[name](student)
            path = tmp_path_factory.mktemp(name) / f"{Path(lesson).name}.ipynb"
            nbformat.write(submission, path)
            reports[name] = grade(path, BOOK, seed=seed)
            assert reports[name].lesson_errors == [], reports[name].lines()
        return reports[name]

    return report


def scores(report: Report) -> dict[str, Result]:
    return {r.label: r for r in report.results if r.kind == "code"}


class TestCraftedSubmissions:
    """What the issue's table asks of submissions that try to score without the work."""

    def test_a_replaced_check_scores_0_and_is_flagged(self, crafted):
        report = crafted("replaced_check_and_retyped_answer")
        tampered = scores(report)["ex-ch3-cs231n-update"]
        assert (tampered.points, tampered.status) == (0.0, "tampered"), report.lines()
        assert "bnlessons.checks.check_cs231n_update" in tampered.message
        assert report.flagged == ["ex-ch3-cs231n-update"]
        assert any(line.startswith("  FLAGGED") for line in report.lines())

    def test_an_answer_retyped_in_a_new_cell_counts(self, crafted):
        report = crafted("replaced_check_and_retyped_answer")
        retyped = scores(report)["ex-ch3-pytorch-update"]
        assert (retyped.points, retyped.status) == (1.0, "pass"), report.lines()
        assert "defines my_pytorch_update" in retyped.warning
        assert report.seed == 11  # and the reseeded hidden tests pass a correct answer

    def test_handing_in_the_packages_answer_scores_0_saying_why(self, crafted):
        report = crafted("handed_in_and_replaced_verdict")
        delegated = scores(report)["ex-ch3-pytorch-update"]
        assert (delegated.points, delegated.status) == (0.0, "fail"), report.lines()
        assert "calls the package's own bnlessons.running_stats.pytorch_update" in \
            delegated.message

    def test_a_replaced_verdict_and_require_score_0_and_are_flagged(self, crafted):
        report = crafted("handed_in_and_replaced_verdict")
        faked = scores(report)["ex-ch3-cs231n-update"]
        assert (faked.points, faked.status) == (0.0, "tampered"), report.lines()
        assert "Verdict" in faked.message and "require" in faked.message
        assert report.flagged == ["ex-ch3-cs231n-update"] and report.total == 0

    def test_a_notebook_without_cell_ids_is_graded(self, crafted):
        report = crafted("without_ids_and_a_deleted_answer")
        answered = scores(report)["ex-forward-by-hand"]
        assert (answered.points, answered.status, answered.warning) == (1.0, "pass", ""), \
            report.lines()
        assert "no cell ids" in report.notes[0]

    def test_a_deleted_answer_gets_a_warning_not_a_silent_0(self, crafted):
        report = crafted("without_ids_and_a_deleted_answer")
        missing = scores(report)["ex-ch2-per-channel"]
        assert (missing.points, missing.status) == (0.0, "TODO"), report.lines()
        assert "no answer found" in missing.warning
        assert any("warning: no answer found" in line for line in report.lines())

    def test_a_wrong_answer_zeroes_only_its_exercise_with_its_check_deleted(self, crafted):
        report = crafted("wrong_answer_with_its_check_deleted")
        got = {label: (r.points, r.status) for label, r in scores(report).items()}
        assert got == {"ex-forward-by-hand": (0.0, "fail"),
                       "ex-ch2-per-channel": (1.0, "pass")}, report.lines()
        assert "unbiased" in scores(report)["ex-forward-by-hand"].message, report.lines()
