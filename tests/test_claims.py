"""Every lesson's claims hold on other seeds with the processor's native numerics.

The claims check of .ci/check_claims.py, as the test command runs it: each notebook
re-executed with ``SEEDS = [101, 202, 303][:len(SEEDS)]`` in a kernel without the numeric
pins; every assertion must hold. One test per notebook, so that they run side by side
with the rest; a notebook whose metadata says it is timed runs alone (see conftest.py).

A lesson with exercises runs here as its untouched student notebook, through the grader,
to the end: one run shows that its claims hold on other seeds (every lesson cell runs as
the lesson has it, and a cell that uses an answer after its check falls back to the
package's reference, which the check compares the lesson's answer with), that Run All on
the student notebook reaches the end, and that the grader scores it 0 with every code
exercise to do and flags nothing the lesson does. ``.ci/check_claims.py`` itself runs the
lessons with their answers.
"""
from __future__ import annotations

import sys
from pathlib import Path

import nbformat
import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))
import check_claims  # noqa: E402
from execute_notebooks import notebooks  # noqa: E402
from notebook_kinds import declared, read  # noqa: E402

from bnlessons.coursework import build_coursework, exercises, grade  # noqa: E402

pytestmark = pytest.mark.slow
SEEDS = [101, 202, 303]
NOTEBOOKS = notebooks([])
BOOK = ROOT / "book"
GRADED = [p for p in NOTEBOOKS if exercises(nbformat.read(p, 4))]


def params(paths: list[Path]) -> list:
    """One pytest parameter per notebook, marked ``timed`` where its metadata says so."""
    return [pytest.param(p, id=p.relative_to(ROOT / "book").as_posix(),
                         marks=[pytest.mark.timed] if declared(read(p))["timed"] else [])
            for p in paths]


@pytest.fixture(scope="session")
def native_kernel() -> str:
    check_claims.install_native_kernel()
    return check_claims.NATIVE_KERNEL


@pytest.fixture(scope="session")
def student(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("coursework")
    build_coursework(BOOK, out)
    return out / "student"


@pytest.mark.parametrize("path", params([p for p in NOTEBOOKS if p not in GRADED]))
def test_claims_hold_on_other_seeds_without_the_pins(path, native_kernel):
    verdict, _ = check_claims.check(path, SEEDS, pinned=False)
    assert verdict == "ok", verdict


@pytest.mark.parametrize("path", params(GRADED))
def test_student_notebook_keeps_the_claims_runs_to_the_end_and_scores_0(path, native_kernel,
                                                                       student):
    report = grade(student / path.relative_to(BOOK), BOOK, kernel_name=native_kernel,
                   to_end=True, parameters=f"SEEDS = {SEEDS!r}[:len(SEEDS)]  # other seeds")
    assert report.seconds > 0 and not report.flagged, report.lines()
    assert_untouched(report.as_dict())


def assert_untouched(report: dict) -> None:
    """What the report on an untouched student notebook must say: the lesson ran without
    an error, every code exercise is to do (0 points) and every written one unanswered."""
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


def test_every_lesson_is_checked_on_other_seeds():
    assert len(GRADED) >= 2 and len(GRADED) < len(NOTEBOOKS)
