"""The nbgrader source tree: each lesson with nbgrader's cell metadata (schema 3).

- Solution code cells are nbgrader solution cells; inside each function or
  method the body sits between ``### BEGIN SOLUTION`` and ``### END SOLUTION``,
  so ``nbgrader generate_assignment`` keeps names and signatures; a top-level
  answer (``x = ...``) is a region of its own.
- A written answer is one markdown cell, graded and a solution (nbgrader
  replaces it with ``YOUR ANSWER HERE`` and lists it for manual grading).
- A check cell is a locked grade cell worth the exercise's points: the check,
  then its ``assert verdict.passed`` and the hidden tests between ``### BEGIN
  HIDDEN TESTS`` and ``### END HIDDEN TESTS`` (removed from the release, so that
  Run All prints every verdict and goes on past a stub; restored by
  ``nbgrader autograde``).
- The solution gates' markdown and all outputs are left out.

:func:`validate` checks the metadata by the rules of nbgrader's schema 3, so a
broken tree is caught where nbgrader is not installed.
"""
from __future__ import annotations

import ast
import copy
import re

import nbformat
from nbformat import NotebookNode

from bnlessons.coursework.lesson import LABEL_PATTERN, answer_text, cell_roles, exercises
from bnlessons.coursework.student import _clean, check_source, notebook_metadata

SCHEMA_VERSION = 3
BEGIN, END = "### BEGIN SOLUTION", "### END SOLUTION"
BEGIN_HIDDEN, END_HIDDEN = "### BEGIN HIDDEN TESTS", "### END HIDDEN TESTS"
_KEYS = {"schema_version": int, "grade": bool, "locked": bool, "solution": bool, "task": bool,
         "grade_id": str, "points": (int, float), "checksum": str, "cell_type": str}
_REQUIRED = ("schema_version", "grade", "locked", "solution")


def meta(grade_id: str, *, grade: bool = False, solution: bool = False, locked: bool = False,
         points: float = 0.0) -> dict:
    """nbgrader's cell metadata, schema 3."""
    out = {"grade": grade, "grade_id": grade_id, "locked": locked,
           "schema_version": SCHEMA_VERSION, "solution": solution}
    if grade:
        out["points"] = points
    return out


def solution_regions(source: str) -> str:
    """``source`` with every function body (methods included) and every top-level
    answer wrapped in ``### BEGIN SOLUTION`` / ``### END SOLUTION``.

    Docstrings stay outside the regions, imports are left alone.
    """
    tree = ast.parse(source)
    lines = source.splitlines()
    inserts: list[tuple[int, str]] = []  # (insert before this 0-based line, text)

    def wrap_body(node: ast.AST) -> None:
        body = node.body  # type: ignore[attr-defined]
        first = body[0]
        if (isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant)
                and isinstance(first.value.value, str) and len(body) > 1):
            first = body[1]
        line = lines[first.lineno - 1]
        indent = line[:len(line) - len(line.lstrip())]
        inserts.append((first.lineno - 1, indent + BEGIN))
        inserts.append((body[-1].end_lineno, indent + END))

    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            wrap_body(node)
        elif isinstance(node, ast.ClassDef):
            for item in node.body:
                if isinstance(item, (ast.FunctionDef, ast.AsyncFunctionDef)):
                    wrap_body(item)
        elif isinstance(node, (ast.Assign, ast.AnnAssign, ast.Expr, ast.For, ast.If, ast.With)):
            inserts.append((node.lineno - 1, BEGIN))
            inserts.append((node.end_lineno, END))
    for at, text in sorted(inserts, key=lambda t: t[0], reverse=True):
        lines.insert(at, text)
    return "\n".join(lines)


def source_notebook(nb: NotebookNode, lesson: str) -> NotebookNode:
    """The nbgrader source version of lesson ``nb`` (``lesson`` is ``<chapter>/<name>``)."""
    found = exercises(nb, lesson)
    role = cell_roles(found)
    cells = []
    for i, cell in enumerate(nb.cells):
        kind, ex = role.get(i, ("lesson", None))
        if kind == "lesson":
            cells.append(_clean(cell))
        elif kind == "solution":
            out = _clean(cell)
            out.source = solution_regions(cell.source)
            n = ex.solution_cells.index(i)
            suffix = f"-{n + 1}" if len(ex.solution_cells) > 1 else ""
            out.metadata["nbgrader"] = meta(f"{ex.label}-solution{suffix}", solution=True)
            cells.append(out)
        elif kind == "check" and not ex.graded:
            out = _clean(cell)  # a written question's check: the learner's, worth nothing
            out.source = check_source(cell.source)
            cells.append(out)
        elif kind == "check":
            out = _clean(cell)
            hidden = nb.cells[ex.hidden_cell].source if ex.hidden_cell is not None else ""
            # the release prints the verdict and goes on (Run All does not stop at the first
            # stub); the autograder puts the assert back with the hidden tests
            visible = check_source(cell.source)
            asserts = cell.source.rstrip() != visible
            out.source = (f"{visible}\n{BEGIN_HIDDEN}\n"
                          + ("assert verdict.passed\n" if asserts else "")
                          + (f"{hidden.rstrip()}\n" if hidden else "") + END_HIDDEN
                          if hidden or asserts else cell.source)
            out.metadata["nbgrader"] = meta(f"{ex.label}-check", grade=True, locked=True,
                                            points=ex.points)
            cells.append(out)
        elif kind == "gate" and i == ex.gate_start and ex.written:
            answer = nbformat.v4.new_markdown_cell(answer_text(nb, ex))
            answer.id = f"answer-{ex.label}"[:64]
            answer.metadata["nbgrader"] = meta(f"{ex.label}-answer", grade=True, solution=True,
                                               points=ex.points)
            cells.append(answer)
    out_nb = nbformat.v4.new_notebook(cells=cells, metadata=notebook_metadata(nb, lesson))
    out_nb.nbformat_minor = max(nb.get("nbformat_minor", 5), 5)
    return out_nb


def validate(nb: NotebookNode) -> list[str]:
    """Every way ``nb``'s nbgrader metadata breaks schema 3 (empty when it is valid).

    The rules of nbgrader 0.9's ``MetadataValidatorV3``: the required keys and
    their types, no other keys, ``schema_version`` 3, a non-empty ``grade_id`` of
    letters, digits, ``-`` and ``_`` on every graded, solution or locked cell,
    points (>= 0) on graded cells, markdown cells graded if and only if they are
    solutions (task cells apart, which must be markdown), and unique grade ids.
    """
    problems = []
    ids: set[str] = set()
    for i, cell in enumerate(nb.cells):
        m = cell.get("metadata", {}).get("nbgrader")
        if m is None:
            continue
        where = f"cell {i}"
        for key in _REQUIRED:
            if key not in m:
                problems.append(f"{where}: nbgrader metadata has no {key!r}")
        for key, value in m.items():
            if key not in _KEYS:
                problems.append(f"{where}: unknown nbgrader key {key!r}")
            elif not isinstance(value, _KEYS[key]) or (
                    key != "grade" and _KEYS[key] is not bool and isinstance(value, bool)):
                problems.append(f"{where}: {key} must be {_KEYS[key]}, got {value!r}")
        if problems and any(p.startswith(where) for p in problems):
            continue
        if m["schema_version"] != SCHEMA_VERSION:
            problems.append(f"{where}: schema_version {m['schema_version']}, expected 3")
        grade, solution, locked = m["grade"], m["solution"], m["locked"]
        task = m.get("task", False)
        if grade or solution or locked:
            gid = m.get("grade_id", "")
            if not gid or not LABEL_PATTERN.match(gid):
                problems.append(f"{where}: grade_id {gid!r} is empty or has characters nbgrader "
                                "rejects")
            elif gid in ids:
                problems.append(f"{where}: duplicate grade_id {gid!r}")
            ids.add(gid)
        if grade and ("points" not in m or m["points"] < 0):
            problems.append(f"{where}: a grade cell needs points >= 0")
        if "points" in m and not grade:
            problems.append(f"{where}: points on a cell that is not graded")
        if task:
            if cell.cell_type != "markdown":
                problems.append(f"{where}: task cells have to be markdown")
        elif cell.cell_type == "markdown" and grade != solution:
            problems.append(f"{where}: a markdown cell must be both graded and a solution, "
                            "or neither")
    return problems


def strip_for_release(nb: NotebookNode) -> NotebookNode:
    """What ``nbgrader generate_assignment`` would hand out, for checking this tree offline:
    solution regions replaced by ``# YOUR CODE HERE`` / ``raise NotImplementedError()``,
    markdown answers by ``YOUR ANSWER HERE``, hidden tests removed."""
    nb = copy.deepcopy(nb)
    region = re.compile(rf"^([ \t]*){re.escape(BEGIN)}\n.*?^[ \t]*{re.escape(END)}[ \t]*$",
                        re.M | re.S)
    hidden = re.compile(rf"\n?^[ \t]*{re.escape(BEGIN_HIDDEN)}\n.*?^[ \t]*"
                        rf"{re.escape(END_HIDDEN)}[ \t]*$", re.M | re.S)
    for cell in nb.cells:
        m = cell.metadata.get("nbgrader", {})
        if m.get("solution") and cell.cell_type == "code":
            cell.source = region.sub(lambda r: f"{r.group(1)}# YOUR CODE HERE\n"
                                               f"{r.group(1)}raise NotImplementedError()",
                                     cell.source)
        elif m.get("solution"):
            cell.source = "YOUR ANSWER HERE"
        if m.get("grade"):
            cell.source = hidden.sub("", cell.source)
    return nb
