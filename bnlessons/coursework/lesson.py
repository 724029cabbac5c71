"""How a lesson notebook marks its exercises, read into one structure.

The lessons are the single source of the coursework. An exercise is:

- a markdown cell with a ``:::{exercise}`` directive and a ``:label:``
  (optionally ``"coursework": {"points": P}`` in the cell's metadata; 1 by default);
- a solution gate: a markdown cell opening ``{solution-start} <label>``, the
  solution (code cells tagged ``solution``, and markdown: the explanation or, for
  a written question, the model answer), and a markdown ``{solution-end}``
  (which may close the same cell that opened it);
- for a code exercise, the check cell right after the gate
  (``verdict = checks.check_x(...)`` / ``assert verdict.passed``) and right
  after it the hidden tests: a code cell tagged ``hidden-tests`` and
  ``remove-cell`` (so the website does not show it).

An exercise whose gate holds no code is a written one and is marked by hand;
it may still have a check (a written question about code written earlier),
which the learner sees and the grader does not score.
:func:`problems` lists every way a notebook breaks these rules.
"""
from __future__ import annotations

import ast
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import nbformat
from nbformat import NotebookNode

#: What nbgrader accepts as a grade_id; every exercise label must match it.
LABEL_PATTERN = re.compile(r"^[A-Za-z0-9_-]+$")
EXERCISE_RE = re.compile(r"^:::\{exercise\}", re.M)
LABEL_RE = re.compile(r"^:label:[ \t]*(\S.*?)[ \t]*$", re.M)
START_RE = re.compile(r"\{solution-start\}[ \t]*(\S*)")
END_RE = re.compile(r"\{solution-end\}")
CHECK_RE = re.compile(r"^verdict = checks\.check_\w+\(", re.M)
HIDDEN_TAGS = ("hidden-tests", "remove-cell")
FALLBACK_RE = re.compile(r"checks\.passed_or\(\s*verdict\s*,\s*(\w+)")


class LessonError(ValueError):
    """A lesson notebook does not follow the exercise markup (the message says where)."""


@dataclass
class Exercise:
    """One exercise of a lesson: where its cells are and what it is worth."""

    label: str
    points: float
    exercise_cell: int
    gate_start: int
    gate_end: int
    solution_cells: list[int] = field(default_factory=list)
    answer_cells: list[int] = field(default_factory=list)
    check_cell: Optional[int] = None
    hidden_cell: Optional[int] = None

    @property
    def written(self) -> bool:
        """A written question: the gate holds no code, so the answer is marked by hand."""
        return not self.solution_cells

    @property
    def graded(self) -> bool:
        """Whether a check scores it automatically: a code exercise. The check after a
        written question tries code written for another exercise, which that exercise's
        check already scores; it is there for the learner, and scores nothing."""
        return self.check_cell is not None and not self.written


def tags(cell: NotebookNode) -> list[str]:
    """The cell's tags (an empty list when it has none)."""
    return list(cell.get("metadata", {}).get("tags", []))


def read(path: Union[str, Path]) -> NotebookNode:
    """Read a notebook as nbformat 4, with a clear error for a missing or broken file."""
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"no notebook at {path}")
    try:
        return nbformat.read(path, as_version=4)
    except Exception as err:  # noqa: BLE001 - any parse failure is the same problem
        raise LessonError(f"{path} is not a readable notebook: {err}") from err


def _points(cell: NotebookNode, label: str) -> float:
    value = cell.get("metadata", {}).get("coursework", {}).get("points", 1)
    if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
        raise LessonError(f"exercise {label}: coursework.points must be a positive number, "
                          f"got {value!r}")
    return float(value)


def _scan(nb: NotebookNode) -> tuple[list[Exercise], list[str]]:
    """Exercises found, and the rule violations met on the way."""
    found: list[Exercise] = []
    problems: list[str] = []
    cells = nb.cells
    pending: Optional[tuple[str, int, float]] = None  # an exercise waiting for its gate
    i = 0
    while i < len(cells):
        cell = cells[i]
        src = cell.source
        if cell.cell_type == "markdown" and EXERCISE_RE.search(src):
            if pending:
                problems.append(f"cell {pending[1]}: exercise {pending[0]} has no solution gate")
            m = LABEL_RE.search(src)
            if not m:
                problems.append(f"cell {i}: an exercise without a :label:")
                pending = None
            else:
                label = m.group(1)
                if not LABEL_PATTERN.match(label):
                    problems.append(f"cell {i}: label {label!r} is not a valid nbgrader grade_id "
                                    "(letters, digits, '-' and '_' only)")
                try:
                    pending = (label, i, _points(cell, label))
                except LessonError as err:
                    problems.append(f"cell {i}: {err}")
                    pending = (label, i, 1.0)
            i += 1
            continue
        if cell.cell_type == "markdown" and START_RE.search(src):
            label = START_RE.search(src).group(1)
            if pending is None or pending[0] != label:
                problems.append(f"cell {i}: solution gate {label!r} does not follow an exercise "
                                "with that label")
            ex = Exercise(label=label, points=pending[2] if pending else 1.0,
                          exercise_cell=pending[1] if pending else i, gate_start=i, gate_end=-1)
            pending = None
            j = i
            while j < len(cells):
                c = cells[j]
                if j > i and c.cell_type == "markdown" and (START_RE.search(c.source)
                                                            or EXERCISE_RE.search(c.source)):
                    break
                if c.cell_type == "code":
                    if "solution" not in tags(c):
                        problems.append(f"cell {j}: code inside the solution gate of {label} is "
                                        "not tagged 'solution'")
                    ex.solution_cells.append(j)
                elif c.cell_type == "markdown":
                    ex.answer_cells.append(j)
                if c.cell_type == "markdown" and END_RE.search(c.source):
                    ex.gate_end = j
                    break
                j += 1
            if ex.gate_end < 0:
                problems.append(f"cell {i}: the solution gate of {label} is never closed with "
                                "{solution-end}")
                i = j
                continue
            k = ex.gate_end + 1
            if k < len(cells) and cells[k].cell_type == "code" and CHECK_RE.search(
                    cells[k].source) and not tags(cells[k]):
                ex.check_cell = k
                if k + 1 < len(cells) and "hidden-tests" in tags(cells[k + 1]):
                    ex.hidden_cell = k + 1
            if not ex.written and ex.check_cell is None:
                problems.append(f"exercise {label}: a code exercise needs an untagged check cell "
                                "(verdict = checks.check_...) right after its solution")
            if ex.check_cell is not None and ex.hidden_cell is None:
                problems.append(f"exercise {label}: the check cell needs a hidden-tests cell "
                                "right after it")
            found.append(ex)
            i = ex.gate_end + 1
            continue
        if cell.cell_type == "markdown" and END_RE.search(src):
            problems.append(f"cell {i}: {{solution-end}} without a solution gate")
        if cell.cell_type == "code" and "solution" in tags(cell):
            problems.append(f"cell {i}: a cell tagged 'solution' outside any solution gate")
        if cell.cell_type == "code" and "hidden-tests" in tags(cell):
            if not any(ex.hidden_cell == i for ex in found):
                problems.append(f"cell {i}: hidden tests must directly follow a check cell")
            missing = [t for t in HIDDEN_TAGS if t not in tags(cell)]
            if missing:
                problems.append(f"cell {i}: the hidden-tests cell is not tagged {missing}")
        i += 1
    if pending:
        problems.append(f"cell {pending[1]}: exercise {pending[0]} has no solution gate")
    return found, problems


def defined_names(source: str) -> set[str]:
    """Top-level names a solution cell defines (functions, classes, assignments)."""
    names: set[str] = set()
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return names
    for node in tree.body:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, (ast.Assign, ast.AnnAssign)):
            targets = node.targets if isinstance(node, ast.Assign) else [node.target]
            for target in targets:
                names |= {n.id for n in ast.walk(target) if isinstance(n, ast.Name)}
    return names


def _late_uses(nb: NotebookNode, exercises: list[Exercise]) -> list[str]:
    """Lesson cells that use an answer after its check without a fallback to the reference."""
    problems = []
    own = set()
    for ex in exercises:
        own |= set(range(ex.gate_start, ex.gate_end + 1))
        own |= {c for c in (ex.check_cell, ex.hidden_cell) if c is not None}
    for ex in exercises:
        after = ex.hidden_cell or ex.check_cell or ex.gate_end
        names = set().union(*(defined_names(nb.cells[c].source) for c in ex.solution_cells)) \
            if ex.solution_cells else set()
        for j in range(after + 1, len(nb.cells)):
            cell = nb.cells[j]
            if cell.cell_type != "code" or j in own:
                continue
            text = FALLBACK_RE.sub("", cell.source)
            for name in sorted(names):
                if re.search(rf"\b{re.escape(name)}\b", text):
                    problems.append(f"cell {j} uses {name} from exercise {ex.label} after its "
                                    "check: go through checks.passed_or(verdict, "
                                    f"{name}, <reference>) so a student notebook still runs")
    return problems


def exercises(nb: NotebookNode, where: str = "notebook") -> list[Exercise]:
    """The notebook's exercises; :class:`LessonError` naming every rule it breaks."""
    found, problems = _scan(nb)
    problems += _late_uses(nb, found)
    if problems:
        raise LessonError(f"{where} breaks the exercise markup:\n  " + "\n  ".join(problems))
    return found


def problems(nb: NotebookNode) -> list[str]:
    """Every way the notebook breaks the exercise markup (empty when it follows it)."""
    found, probs = _scan(nb)
    return probs + _late_uses(nb, found)


def answer_text(nb: NotebookNode, ex: Exercise) -> str:
    """The prose inside the gate (explanation or model answer), without the directive fences."""
    parts = []
    for i in ex.answer_cells:
        text = nb.cells[i].source
        text = re.sub(r"```\{solution-start\}[^\n]*\n(:[^\n]*\n)*```[ \t]*\n?", "", text)
        text = re.sub(r"\n?```\{solution-end\}\s*```\s*$", "", text)
        text = re.sub(r"^```\{solution-end\}\s*```\s*$", "", text)
        if text.strip():
            parts.append(text.strip())
    return "\n\n".join(parts)


def lesson_paths(book: Union[str, Path]) -> list[Path]:
    """Every lesson notebook under ``book`` (``<chapter>/<lesson>.ipynb``), sorted."""
    book = Path(book)
    if not book.is_dir():
        raise FileNotFoundError(f"no book folder at {book}")
    return sorted(p for p in book.glob("*/*.ipynb") if ".ipynb_checkpoints" not in p.parts)


def cell_roles(found: Sequence[Exercise]) -> dict[int, tuple[str, Exercise]]:
    """Which exercise each cell index belongs to, and as what: ``"gate"`` (the
    solution dropdown's markdown), ``"solution"``, ``"check"`` or ``"hidden"``.
    Cells that are in no exercise are absent."""
    role: dict[int, tuple[str, Exercise]] = {}
    for ex in found:
        for i in range(ex.gate_start, ex.gate_end + 1):
            role[i] = ("gate", ex)
        for i in ex.solution_cells:
            role[i] = ("solution", ex)
        if ex.check_cell is not None:
            role[ex.check_cell] = ("check", ex)
        if ex.hidden_cell is not None:
            role[ex.hidden_cell] = ("hidden", ex)
    return role
