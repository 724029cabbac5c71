"""The autograder: score filled-in student notebooks against the lessons.

For each submission the grader rebuilds the notebook from the lesson it came
from: every lesson cell as the lesson has it, the original check cells (so an
edited or deleted check cannot raise a score), the hidden tests after each
check, and from the submission only the answer cells (matched by cell id) and
any code cells the student added. It runs that notebook in a fresh kernel of
the course, with a time limit per cell, up to the last graded cell, and reads
each exercise's score from its check and hidden-tests cells: full points when
both ran without an error, 0 otherwise, with the check's verdict as the reason.
Written answers are listed for marking by hand.

The student's code runs unsandboxed, with the grader's permissions: grade on a
machine or in a container where that is acceptable.
"""
from __future__ import annotations

import copy
import json
import re
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from bnlessons.coursework.lesson import (
    Exercise,
    LessonError,
    cell_roles,
    exercises,
    lesson_paths,
    read,
)
from bnlessons.coursework.student import KEY, _clean, student_notebook
from bnlessons.reproducibility import KERNEL_NAME as KERNEL

CELL_TIMEOUT = 120
VERDICT_RE = re.compile(r"^\[(PASS|FAIL|TODO)\] (.*)$", re.M)


@dataclass
class Result:
    """The score of one part of an exercise: its check (``code``) or its written answer."""

    label: str
    kind: str  # "code" or "written"
    points: Optional[float]  # None for a written answer, which is marked by hand
    max_points: float
    status: str  # pass, fail, TODO, timeout, error, manual
    message: str


@dataclass
class Report:
    """A graded notebook: one result per exercise part, and the totals of the checks."""

    notebook: str
    lesson: str
    results: list[Result] = field(default_factory=list)
    seconds: float = 0.0
    #: lesson cells (not checks) that raised: the student's code broke the lesson around it
    lesson_errors: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(r.points or 0.0 for r in self.results if r.kind == "code")

    @property
    def max_total(self) -> float:
        return sum(r.max_points for r in self.results if r.kind == "code")

    def as_dict(self) -> dict:
        return {"notebook": self.notebook, "lesson": self.lesson, "total": self.total,
                "max_total": self.max_total, "seconds": round(self.seconds, 1),
                "results": [asdict(r) for r in self.results],
                "lesson_errors": list(self.lesson_errors)}

    def lines(self) -> list[str]:
        """The printed report: one line per part, then the total."""
        out = [f"{self.notebook} ({self.lesson})"]
        for r in self.results:
            score = "  -" if r.points is None else f"{r.points:g}"
            out.append(f"  {r.label:28s} {score}/{r.max_points:g}  {r.status:7s} {r.message}")
        manual = [r.label for r in self.results if r.kind == "written"]
        extra = f"; to mark by hand: {', '.join(manual)}" if manual else ""
        out.append(f"  total {self.total:g}/{self.max_total:g}{extra}")
        out += [f"  note: {e}" for e in self.lesson_errors]
        return out


def find_lesson(submission: NotebookNode, path: Path, book: Path) -> tuple[Path, str]:
    """The lesson a submission comes from: its ``coursework.lesson`` metadata, else its name."""
    lesson = submission.metadata.get(KEY, {}).get("lesson")
    if lesson:
        candidate = book / f"{lesson}.ipynb"
        if not candidate.is_file():
            raise LessonError(f"{path}: its metadata names lesson {lesson!r}, which is not in "
                              f"{book}")
        return candidate, lesson
    matches = [p for p in lesson_paths(book) if p.name == path.name]
    if len(matches) != 1:
        raise LessonError(f"{path}: no coursework.lesson metadata, and its file name matches "
                          f"{len(matches)} lessons in {book}; pass the lesson explicitly")
    return matches[0], matches[0].relative_to(book).with_suffix("").as_posix()


def _mark(cell: NotebookNode, label: str, role: str) -> NotebookNode:
    cell.metadata[KEY] = {"label": label, "role": role}
    return cell


def grading_notebook(lesson_nb: NotebookNode, submission: NotebookNode,
                     lesson: str) -> tuple[NotebookNode, list[Exercise]]:
    """The notebook that is executed: the lesson, the student's answers, the original
    checks and the hidden tests, cut after the last graded cell."""
    found = exercises(lesson_nb, lesson)
    student = student_notebook(lesson_nb, lesson)
    known = {c.get("id") for c in student.cells} | {c.get("id") for c in lesson_nb.cells}
    answers = {c.get("id"): c for c in submission.cells}
    # code cells the student added go after the known cell that precedes them
    added: dict[Optional[str], list[NotebookNode]] = {}
    last: Optional[str] = None
    for cell in submission.cells:
        cid = cell.get("id")
        if cid in known:
            last = cid
        elif cell.cell_type == "code":
            added.setdefault(last, []).append(_clean(cell))
    role = cell_roles(found)
    graded = [i for ex in found for i in (ex.check_cell, ex.hidden_cell) if i is not None]
    stop = max(graded) if graded else -1
    stubs = {c.get("id"): c for c in student.cells}
    cells: list[NotebookNode] = []
    for i, cell in enumerate(lesson_nb.cells[:stop + 1]):
        kind, ex = role.get(i, ("lesson", None))
        cid = cell.get("id")
        if kind == "solution":
            mine = answers.get(cid)
            source = mine.source if mine is not None and mine.cell_type == "code" else \
                stubs[cid].source
            answer = _clean(cell)
            answer.source = source
            cells.append(_mark(answer, ex.label, "answer"))
        elif kind in ("check", "hidden"):
            cells.append(_mark(_clean(cell), ex.label, kind))
        elif kind == "lesson":
            cells.append(_clean(cell))
        else:
            continue
        cells.extend(added.pop(cid, []))
    for cell in cells:
        cell.metadata.pop("tags", None)  # nothing is skipped or expected to raise
    nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(lesson_nb.metadata))
    return nb, found


def _text(cell: NotebookNode, name: str) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == name)


def _error(cell: NotebookNode) -> Optional[str]:
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            return f"{o.get('ename')}: {o.get('evalue')}".strip()
    return None


def _score(ex: Exercise, nb: NotebookNode, ran: bool) -> Result:
    cells = {c.metadata.get(KEY, {}).get("role"): c for c in nb.cells
             if c.metadata.get(KEY, {}).get("label") == ex.label}
    check, hidden = cells.get("check"), cells.get("hidden")
    verdicts = VERDICT_RE.findall(_text(check, "stdout")) if check is not None else []
    first = verdicts[-1] if verdicts else None
    errors = [e for e in (_error(check) if check is not None else None,
                          _error(hidden) if hidden is not None else None) if e]
    if not ran or (check is not None and check.get("execution_count") is None):
        return Result(ex.label, "code", 0.0, ex.points, "timeout",
                      "not run: the notebook stopped before this check (time limit or "
                      "a dead kernel)")
    if any(e.startswith(("KeyboardInterrupt", "CellTimeoutError")) for e in errors):
        return Result(ex.label, "code", 0.0, ex.points, "timeout",
                      f"a cell ran past the time limit ({errors[0]})")
    if first is not None and first[0] == "TODO":
        return Result(ex.label, "code", 0.0, ex.points, "TODO", first[1])
    if errors:
        if first is not None and first[0] == "FAIL":
            return Result(ex.label, "code", 0.0, ex.points, "fail", first[1])
        return Result(ex.label, "code", 0.0, ex.points, "fail",
                      ("hidden tests: " if _error(check) is None else "") + errors[0])
    message = first[1] if first is not None else "the check ran without an error"
    return Result(ex.label, "code", ex.points, ex.points, "pass", message)


def _written(ex: Exercise, submission: NotebookNode) -> Result:
    text = ""
    for cell in submission.cells:
        meta = cell.metadata.get(KEY, {})
        if cell.get("id") == f"answer-{ex.label}" or (meta.get("label") == ex.label
                                                     and meta.get("role") == "written"):
            text = cell.source
    text = " ".join(text.replace("**Your answer.**", "").split())
    if not text or text == "YOUR ANSWER HERE":
        shown = "no answer yet"
    else:
        shown = f"answer: {text[:70]}" + ("..." if len(text) > 70 else "")
    return Result(ex.label, "written", None, ex.points, "manual", shown)


def grade(path: Union[str, Path], book: Union[str, Path], cell_timeout: int = CELL_TIMEOUT,
          kernel_name: str = KERNEL, lesson: Optional[str] = None) -> Report:
    """Grade one notebook. ``book`` is the folder of lessons; ``lesson`` (``<chapter>/<name>``)
    overrides what the notebook's metadata or file name say."""
    path, book = Path(path), Path(book)
    if isinstance(cell_timeout, bool) or not isinstance(cell_timeout, int) or cell_timeout <= 0:
        raise ValueError(f"cell_timeout must be a positive number of seconds, got "
                         f"{cell_timeout!r}")
    submission = read(path)
    if lesson is not None:
        lesson_path = book / f"{lesson}.ipynb"
        if not lesson_path.is_file():
            raise LessonError(f"no lesson {lesson!r} in {book}")
    else:
        lesson_path, lesson = find_lesson(submission, path, book)
    lesson_nb = read(lesson_path)
    nb, found = grading_notebook(lesson_nb, submission, lesson)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name=kernel_name,
                            allow_errors=True, interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(lesson_path.parent)}})
    ran = True
    try:
        client.execute()
    except DeadKernelError:
        ran = False
    report = Report(notebook=str(path), lesson=lesson, seconds=time.perf_counter() - start)
    for i, cell in enumerate(nb.cells):
        err = _error(cell) if cell.cell_type == "code" else None
        if err and cell.metadata.get(KEY, {}).get("role") not in ("check", "hidden"):
            report.lesson_errors.append(f"cell {i} raised {err.splitlines()[0][:120]}")
    for ex in found:
        if ex.graded:
            report.results.append(_score(ex, nb, ran))
        if ex.written:
            report.results.append(_written(ex, submission))
    return report


def grade_all(paths: Sequence[Union[str, Path]], book: Union[str, Path],
              cell_timeout: int = CELL_TIMEOUT, json_out: Optional[Union[str, Path]] = None,
              kernel_name: str = KERNEL) -> list[Report]:
    """Grade every notebook in ``paths``, printing each report; optionally write them as JSON."""
    if not paths:
        raise ValueError("give at least one notebook to grade")
    reports = []
    for p in paths:
        report = grade(p, book, cell_timeout=cell_timeout, kernel_name=kernel_name)
        print("\n".join(report.lines()), flush=True)
        reports.append(report)
    if json_out is not None:
        Path(json_out).write_text(json.dumps([r.as_dict() for r in reports], indent=1) + "\n")
    return reports
