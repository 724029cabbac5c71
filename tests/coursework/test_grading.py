"""The autograder on real notebooks (slow: graded lessons are executed).

Cost: each of the 16 lessons with exercises runs once as its untouched student notebook,
cut after its last graded cell (two lessons to a command-line call, so that the calls
can run side by side), and three more lessons run once with a wrong answer substituted.
The wrong answers are the ones the lessons themselves show failing their check, one per
chapter 2, 3 and 4 (the first two in lessons with a second exercise, which must keep its
marks); the first also replaces its check cell with ``pass``. Run All is tried on the
student notebooks that fall back to the reference after a check. That the lessons
themselves get full marks is read from the run that strict nbval makes of every lesson
(its outputs are the stored ones, or nbval fails): the grader would run exactly the
lesson's code cells, so it scores the stored outputs. Last, nbgrader itself (in a
throwaway environment under _build/ that sees .venv's packages) generates and
autogrades one lesson.
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
from nbclient import NotebookClient

from bnlessons.coursework import build_coursework, exercises, grade
from bnlessons.coursework.grade import _error, _score, _written, grading_notebook
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


CHUNKS = [GRADED[i:i + 2] for i in range(0, len(GRADED), 2)]  # two lessons to a call


@pytest.mark.parametrize("chunk", CHUNKS, ids=["+".join(p.stem[:2] + p.parent.name[:2]
                                                       for p in c) for c in CHUNKS])
def test_unmodified_student_notebooks_score_zero_without_crashing(student, tmp_path, chunk):
    paths = [student / p.relative_to(BOOK) for p in chunk]
    done = subprocess.run([sys.executable, "-m", "bnlessons.coursework", "grade", *map(str, paths),
                           "--json", str(tmp_path / "grades.json"), "--book", str(BOOK)],
                          capture_output=True, text=True, timeout=900, cwd=ROOT)
    assert done.returncode == 0, done.stderr[-3000:]
    reports = json.loads((tmp_path / "grades.json").read_text())
    assert [r["notebook"] for r in reports] == list(map(str, paths))
    assert "total 0/" in done.stdout
    for report in reports:
        assert report["lesson_errors"] == [], report
        assert report["total"] == 0 and report["max_total"] > 0 or not any(
            r["kind"] == "code" for r in report["results"]), report
        for r in report["results"]:
            if r["kind"] == "code":
                assert (r["status"], r["points"]) == ("TODO", 0.0), (report["lesson"], r)
                assert "not implemented yet" in r["message"], r
            else:
                assert (r["status"], r["points"], r["message"]) == ("manual", None,
                                                                     "no answer yet"), r


def test_every_graded_lesson_is_in_a_chunk():
    assert [p for chunk in CHUNKS for p in chunk] == GRADED and len(GRADED) >= 2


NOT_RUN_THE_SAME = ("nbval-skip", "skip-execution", "raises-exception")


@pytest.mark.parametrize("path", GRADED, ids=[p.stem for p in GRADED])
def test_the_lessons_themselves_get_full_marks(path):
    """The grader's scores of the lesson's own run, read from its stored outputs.

    Strict nbval (book/ in the same test command) runs every cell of the lesson in the
    course kernel and fails unless each output equals the stored one. The grading
    notebook of the lesson itself, with its own answers, runs the same code cells in the
    same order in the same kernel (checked here), so its outputs are the stored ones and
    the grader's verdicts follow from them."""
    lesson = nbformat.read(path, 4)
    name = path.relative_to(BOOK).with_suffix("").as_posix()
    nb, found = grading_notebook(lesson, lesson, name)
    written = [_written(ex, lesson) for ex in found if ex.written]
    assert all(r.status == "manual" and r.points is None for r in written)
    if not any(ex.graded for ex in found):  # written answers only: nothing is run
        assert written and nb.cells == []
        return
    stored = {c.id: c for c in lesson.cells}
    code = [c for c in nb.cells if c.cell_type == "code"]
    last = max(i for i, c in enumerate(lesson.cells) if c.id == code[-1].id)
    ran = [c for c in lesson.cells[:last + 1] if c.cell_type == "code"]
    assert [(c.id, c.source) for c in code] == [(c.id, c.source) for c in ran], \
        "the grading notebook no longer runs the lesson's code cells as they are"
    for cell in ran:
        tags = set(cell.metadata.get("tags", []))
        assert not tags & set(NOT_RUN_THE_SAME), (cell.id, tags)
    for cell in code:
        cell.outputs = stored[cell.id].outputs
        cell.execution_count = stored[cell.id].execution_count
    errors = [_error(c) for c in code if c.metadata.get("coursework", {}).get("role")
              not in ("check", "hidden")]
    assert not any(errors), errors
    results = [_score(ex, nb, ran=True) for ex in found if ex.graded]
    assert results and all(r.status == "pass" for r in results), results
    assert sum(r.points for r in results) == sum(r.max_points for r in results) > 0


FALLBACKS = [p for p in GRADED if "checks.passed_or(" in p.read_text()]


@pytest.mark.parametrize("path", FALLBACKS, ids=[p.stem for p in FALLBACKS])
def test_student_notebooks_run_all_to_the_end(student, path):
    """Run All on an untouched student notebook: no cell raises (checks print [TODO]), and
    the cells that use an answer after its check fall back to the reference. Only the
    lessons with such a cell run here; the others are run up to their last check above."""
    nb = nbformat.read(student / path.relative_to(BOOK), 4)
    NotebookClient(nb, timeout=120, kernel_name="bnlessons",
                   resources={"metadata": {"path": str(path.parent)}}).execute()
    text = "\n".join(o.get("text", "") for c in nb.cells if c.cell_type == "code"
                     for o in c.outputs)
    assert "[TODO]" in text and "this cell uses the reference instead" in text
    assert "[FAIL]" not in text and "[PASS]" not in text


def definition(nb: nbformat.NotebookNode, name: str) -> str:
    """The source of the top-level def ``name`` in a code cell of ``nb``."""
    for cell in nb.cells:
        if cell.cell_type == "code" and f"def {name}(" in cell.source:
            for node in ast.parse(cell.source).body:
                if isinstance(node, ast.FunctionDef) and node.name == name:
                    return ast.get_source_segment(cell.source, node)
    raise AssertionError(f"the lesson no longer defines {name}")


WRONG = [  # (lesson, exercise, the wrong answer the lesson shows, the name it must take)
    ("02-bn-math/01-forward-from-scratch", "ex-forward-by-hand", "forward_with_unbiased_std",
     "my_forward"),
    ("03-inference/01-conventions", "ex-ch3-pytorch-update", "update_with_biased_var",
     "my_pytorch_update"),
    ("04-placement/04-post-vs-pre", "ex-ch4-preact-block",
     'lambda width: models.ResidualBlock(\n        width, norm="bn", style="post", '
     'branch_layers=2\n    )',
     "PreActBlock"),
]


@pytest.mark.parametrize("lesson, label, wrong, name", WRONG, ids=[w[1] for w in WRONG])
def test_a_wrong_answer_zeroes_only_its_exercise(student, tmp_path, lesson, label, wrong, name):
    nb = nbformat.read(BOOK / f"{lesson}.ipynb", 4)
    found = {ex.label: ex for ex in exercises(nb)}
    lesson_text = "\n".join(c.source for c in nb.cells)
    if wrong.startswith("lambda"):
        assert wrong in lesson_text
        replacement = f"{name} = {wrong}"
    else:
        replacement = f"{definition(nb, wrong)}\n\n\n{name} = {wrong}"
    submission = nbformat.read(student / f"{lesson}.ipynb", 4)
    by_id = {c.id: c for c in submission.cells}
    for ex in found.values():  # a student who solved every exercise ...
        for i in ex.solution_cells:
            by_id[nb.cells[i].id].source = nb.cells[i].source
    (cell,) = [nb.cells[i] for i in found[label].solution_cells]
    by_id[cell.id].source = replacement  # ... but this one, the wrong way
    if label == "ex-forward-by-hand":  # ... and deleted its check
        by_id[nb.cells[found[label].check_cell].id].source = "pass"
    path = tmp_path / f"{Path(lesson).name}.ipynb"
    nbformat.write(submission, path)
    report = grade(path, BOOK)
    scores = {r.label: (r.points, r.status) for r in report.results if r.kind == "code"}
    assert scores[label] == (0.0, "fail"), report.lines()
    others = {k: v for k, v in scores.items() if k != label}
    assert all(v[1] == "pass" for v in others.values()), report.lines()
    assert report.total == report.max_total - found[label].points


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
