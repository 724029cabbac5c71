"""The autograder: score filled-in student notebooks against the lessons.

For each submission the grader rebuilds the notebook from the lesson it came
from: every lesson cell as the lesson has it, and from the submission only the
answers and any code cells the student added. Answers are found by the
``coursework`` label and role the student notebooks carry on their answer
cells, else by cell id, else (an answer retyped in a new cell) as the cell that
defines the names the answer must define; an exercise whose answer is not
found gets a warning in the report, never a silent 0. Each exercise's check
and hidden tests (the lesson's own, so an edited or deleted check cell changes
nothing) run through :mod:`~bnlessons.coursework.guard`, which checks that
nothing they rest on was replaced and signs the result with a key only the
grader knows; the hidden tests draw their random inputs from the grader's
``seed`` when one is given, so that a class cannot share them. The notebook
runs in a fresh kernel of the course, with a time limit per cell, up to the
last graded cell. An exercise scores full points when its check passed and its
hidden tests raised nothing, 0 otherwise, with the check's verdict as the
reason; a submission that replaced a check, ``Verdict``, ``require`` or the
grader's own code scores 0 for that exercise and is flagged ``tampered``.
Written answers are collected in full for marking by hand.

The student's code runs unsandboxed, with the grader's permissions: grade on a
machine or in a container where that is acceptable.
"""
from __future__ import annotations

import ast
import copy
import csv
import hashlib
import json
import os
import secrets
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Optional, Sequence, Union

import nbformat
from nbclient import NotebookClient
from nbclient.exceptions import DeadKernelError
from nbformat import NotebookNode

from bnlessons._validate import check_bool, check_int
from bnlessons.coursework.guard import read_signed
from bnlessons.coursework.lesson import (
    Exercise,
    LessonError,
    cell_roles,
    defined_names,
    exercises,
    lesson_paths,
    read,
)
from bnlessons.coursework.student import ANSWER_STUB, KEY, _clean, student_notebook
from bnlessons.reproducibility import KERNEL_NAME as KERNEL
from bnlessons.reproducibility import derive_seed

CELL_TIMEOUT = 120
#: The name the grading notebook binds the guard to in the kernel.
GUARD = "_bnlessons_guard"


@dataclass
class Result:
    """The score of one part of an exercise: its check (``code``) or its written answer."""

    label: str
    kind: str  # "code" or "written"
    points: Optional[float]  # None for a written answer, which is marked by hand
    max_points: float
    status: str  # pass, fail, TODO, timeout, tampered, manual
    message: str
    #: what the grader had to guess or could not find (the answer cell, the cell ids)
    warning: str = ""
    #: a written answer in full
    answer: str = ""


@dataclass
class Report:
    """A graded notebook: one result per exercise part, and the totals of the checks."""

    notebook: str
    lesson: str
    results: list[Result] = field(default_factory=list)
    #: who handed it in (the folder under the one graded; see :func:`submissions`)
    student: str = ""
    seconds: float = 0.0
    #: lesson cells (not checks) that raised: the student's code broke the lesson around it
    lesson_errors: list[str] = field(default_factory=list)
    #: the seed the hidden tests drew from (None: the lesson's own hidden inputs)
    seed: Optional[int] = None
    #: notes about the whole notebook (no cell ids, say)
    notes: list[str] = field(default_factory=list)

    @property
    def total(self) -> float:
        return sum(r.points or 0.0 for r in self.results if r.kind == "code")

    @property
    def max_total(self) -> float:
        return sum(r.max_points for r in self.results if r.kind == "code")

    @property
    def flagged(self) -> list[str]:
        """The exercises whose checks the submission tampered with."""
        return [r.label for r in self.results if r.status == "tampered"]

    def as_dict(self) -> dict:
        return {"student": self.student, "notebook": self.notebook, "lesson": self.lesson,
                "total": self.total,
                "max_total": self.max_total, "seconds": round(self.seconds, 1),
                "seed": self.seed, "results": [asdict(r) for r in self.results],
                "lesson_errors": list(self.lesson_errors), "notes": list(self.notes),
                "flagged": self.flagged}

    def lines(self) -> list[str]:
        """The printed report: one line per part, then the total."""
        out = [f"{self.notebook} ({self.lesson})"]
        for r in self.results:
            score = "  -" if r.points is None else f"{r.points:g}"
            out.append(f"  {r.label:28s} {score}/{r.max_points:g}  {r.status:8s} {r.message}")
            if r.warning:
                out.append(f"  {'':28s} warning: {r.warning}")
        manual = [r.label for r in self.results if r.kind == "written"]
        extra = f"; to mark by hand: {', '.join(manual)}" if manual else ""
        out.append(f"  total {self.total:g}/{self.max_total:g}{extra}")
        if self.flagged:
            out.append(f"  FLAGGED: the submission tampered with the checks of "
                       f"{', '.join(self.flagged)}")
        out += [f"  note: {e}" for e in self.notes + self.lesson_errors]
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


@dataclass
class Answers:
    """What the grader takes from a submission."""

    #: solution cell index (in the lesson) -> the submission's source for it
    code: dict[int, str] = field(default_factory=dict)
    #: lesson cell index after which the student's own code cells go (-1: before every cell)
    added: dict[int, list[NotebookNode]] = field(default_factory=dict)
    #: exercise label -> what the grader had to guess or could not find
    warnings: dict[str, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)


def find_answers(lesson_nb: NotebookNode, submission: NotebookNode,
                 found: Sequence[Exercise]) -> Answers:
    """The submission's answers, matched to the lesson's solution cells.

    A submission cell is the answer to an exercise when its ``coursework``
    metadata says so (label and role ``answer``), or when its id is the
    solution cell's; a lesson cell is recognised by its id or, in a notebook
    without ids, by its text. Every other code cell is the student's own and
    runs after the lesson cell it follows. A code exercise left without an
    answer takes the student's own cell that defines the names its answer must
    define (an answer retyped in a new cell), with a warning; if there is none,
    its stub, with a warning that says why.
    """
    role = cell_roles(found)
    by_label = {ex.label: ex for ex in found}
    ids = {c.get("id"): i for i, c in enumerate(lesson_nb.cells) if c.get("id")}
    texts: dict[str, int] = {}
    for i, cell in enumerate(lesson_nb.cells):
        if i not in role and cell.source.strip():
            texts.setdefault(cell.source, i)
    out = Answers()
    if submission.cells and not any(c.get("id") for c in submission.cells):
        out.notes.append("the notebook has no cell ids: its answers were matched by their "
                         "coursework labels, its other cells by their text")
    anchor = -1
    taken: dict[str, int] = {}  # label -> answer cells matched by label so far
    for cell in submission.cells:
        meta = cell.metadata.get(KEY, {}) if isinstance(cell.metadata.get(KEY), dict) else {}
        ex = by_label.get(meta.get("label"))
        index: Optional[int] = None
        if ex is not None and meta.get("role") == "answer" and cell.cell_type == "code" \
                and ex.solution_cells:
            index = ids.get(cell.get("id"))
            if index not in ex.solution_cells:
                k = taken.get(ex.label, 0)
                index = ex.solution_cells[min(k, len(ex.solution_cells) - 1)]
            taken[ex.label] = taken.get(ex.label, 0) + 1
            out.code[index] = cell.source
            anchor = index
            continue
        if ex is not None and meta.get("role") == "check" and ex.check_cell is not None:
            anchor = ex.hidden_cell if ex.hidden_cell is not None else ex.check_cell
            continue
        if ex is not None and meta.get("role") == "written":
            anchor = max(anchor, ex.gate_end)
            continue
        index = ids.get(cell.get("id"))
        if index is not None and role.get(index, ("lesson",))[0] == "solution":
            if cell.cell_type == "code":
                out.code[index] = cell.source
            anchor = index
            continue
        if index is None and cell.source in texts and cell.cell_type == \
                lesson_nb.cells[texts[cell.source]].cell_type:
            index = texts[cell.source]
        if index is not None:
            anchor = index
            continue
        if cell.cell_type == "code":
            out.added.setdefault(anchor, []).append(_clean(cell))
    for ex in found:
        missing = [i for i in ex.solution_cells if i not in out.code]
        if not missing:
            continue
        for i in missing:
            want = defined_names(lesson_nb.cells[i].source)
            mine = [(a, c) for a, cells in out.added.items() for c in cells
                    if want and want <= defined_names(c.source)]
            if mine:
                a, cell = mine[-1]
                out.added[a].remove(cell)
                out.code[i] = cell.source
                out.warnings[ex.label] = (
                    "its answer cell is missing; graded with the cell you added that defines "
                    f"{', '.join(sorted(want))}")
            else:
                names = f" and no cell you added defines {', '.join(sorted(want))}" if want \
                    else ""
                out.warnings[ex.label] = (
                    "no answer found: the cell marked as its answer (coursework label "
                    f"{ex.label!r}, role 'answer') is missing{names}; keep the answer cell "
                    "and write the answer in it")
    return out


def _imports(lesson_nb: NotebookNode) -> dict[str, tuple[str, Optional[str]]]:
    """The names the lesson's import statements bind: alias -> (module, attribute or None)."""
    names: dict[str, tuple[str, Optional[str]]] = {}
    for cell in lesson_nb.cells:
        if cell.cell_type != "code":
            continue
        try:
            tree = ast.parse(cell.source)
        except SyntaxError:
            continue
        for node in tree.body:
            if isinstance(node, ast.Import):
                for a in node.names:
                    if a.asname:
                        names[a.asname] = (a.name, None)
                    else:
                        top = a.name.split(".")[0]
                        names[top] = (top, None)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                for a in node.names:
                    if a.name != "*":
                        names[a.asname or a.name] = (node.module, a.name)
    return names


def _loaded(source: str) -> set[str]:
    try:
        tree = ast.parse(source)
    except SyntaxError:
        return set()
    return {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}


def reseed(source: str, seed: int, label: str) -> str:
    """Hidden tests with every ``seed=<int>`` drawn from the grader's ``seed`` instead."""
    tree = ast.parse(source)
    changed = False
    for node in ast.walk(tree):
        if isinstance(node, ast.Call):
            for kw in node.keywords:
                if kw.arg == "seed" and isinstance(kw.value, ast.Constant) and \
                        isinstance(kw.value.value, int):
                    new = derive_seed(seed, f"{label}:{kw.value.value}") % 1_000_000
                    kw.value = ast.Constant(new)
                    changed = True
    return ast.unparse(tree) if changed else source


def sources_digest(check: str, hidden: str) -> str:
    """What the guard signs as the sources it ran (the grader compares it)."""
    return hashlib.sha256((check + "\0" + hidden).encode()).hexdigest()


def grading_notebook(lesson_nb: NotebookNode, submission: NotebookNode, lesson: str,
                     seed: Optional[int] = None, key_file: str = "KEY", to_end: bool = False,
                     parameters: Optional[str] = None) -> tuple[NotebookNode, list[Exercise]]:
    """The notebook that is executed: the guard armed first, the lesson, the student's answers,
    and each exercise's check and hidden tests run by the guard, cut after the last graded
    cell (``to_end``: the whole lesson, as Run All runs it). ``seed`` (the grader's) redraws
    the hidden tests' inputs; ``key_file`` is where the guard reads the run's key;
    ``parameters``, if given, is code run right after the lesson's ``parameters`` cell (other
    seeds for the whole lesson, say). What was guessed or missing is in the notebook's
    ``coursework`` metadata (``warnings``, ``notes``)."""
    check_bool(to_end, "to_end")
    if parameters is not None and not isinstance(parameters, str):
        raise TypeError(f"parameters must be a string of code or None, got {parameters!r}")
    found = exercises(lesson_nb, lesson)
    student = student_notebook(lesson_nb, lesson)
    answers = find_answers(lesson_nb, submission, found)
    role = cell_roles(found)
    graded = [i for ex in found if ex.graded for i in (ex.check_cell, ex.hidden_cell)
              if i is not None]
    stop = len(lesson_nb.cells) - 1 if to_end else max(graded) if graded else -1
    where = [i for i, c in enumerate(lesson_nb.cells)
             if "parameters" in c.metadata.get("tags", [])]
    if parameters is not None and not (where and where[0] <= stop):
        raise ValueError(f"parameters were given, but lesson {lesson!r} has no cell tagged "
                         "'parameters' in the part that runs")
    stubs = {c.get("id"): c for c in student.cells}
    imports = _imports(lesson_nb)
    cells: list[NotebookNode] = []
    if stop >= 0:
        arm = nbformat.v4.new_code_cell(f"import bnlessons.coursework.guard as {GUARD}\n"
                                        f"{GUARD}.arm({key_file!r}, globals())")
        arm.id = "bnlessons-guard-arm"
        cells.append(_mark(arm, "", "guard"))
    cells.extend(answers.added.pop(-1, []))
    for i, cell in enumerate(lesson_nb.cells[:stop + 1]):
        kind, ex = role.get(i, ("lesson", None))
        if kind == "solution":
            answer = _clean(cell)
            answer.source = answers.code.get(i, stubs[cell.get("id")].source)
            cells.append(_mark(answer, ex.label, "answer"))
        elif kind in ("check", "hidden") and not ex.graded:
            pass  # a written question's check is the learner's, and scores nothing
        elif kind == "check":
            check = cell.source
            hidden = lesson_nb.cells[ex.hidden_cell].source if ex.hidden_cell is not None else ""
            if seed is not None and hidden:
                hidden = reseed(hidden, seed, ex.label)
            used = (_loaded(check) | _loaded(hidden)) - set().union(
                *(defined_names(lesson_nb.cells[j].source) for j in ex.solution_cells))
            names = sorted((a, *imports[a]) for a in used if a in imports)
            run = _clean(cell)
            run.source = (f"{GUARD}.graded({ex.label!r}, {check!r},\n    {hidden!r},\n"
                          f"    {names!r})")
            run.metadata[KEY] = {"label": ex.label, "role": "graded",
                                 "sources": sources_digest(check, hidden)}
            cells.append(run)
        elif kind == "hidden":
            pass  # run by the guard with the check
        elif kind == "lesson":
            cells.append(_clean(cell))
            if parameters is not None and i == where[0]:
                cells.append(_mark(nbformat.v4.new_code_cell(parameters), "", "parameters"))
        # (the solution gate's markdown is left out)
        cells.extend(answers.added.pop(i, []))
    for cell in cells:
        cell.metadata.pop("tags", None)  # nothing is skipped or expected to raise
    nb = nbformat.v4.new_notebook(cells=cells, metadata=copy.deepcopy(lesson_nb.metadata))
    nb.metadata[KEY] = {"warnings": answers.warnings, "notes": answers.notes}
    return nb, found


def _text(cell: NotebookNode, name: str) -> str:
    return "".join(o.get("text", "") for o in cell.get("outputs", [])
                   if o.get("output_type") == "stream" and o.get("name") == name)


def _error(cell: NotebookNode) -> Optional[str]:
    for o in cell.get("outputs", []):
        if o.get("output_type") == "error":
            return f"{o.get('ename')}: {o.get('evalue')}".strip()
    return None


def _score(ex: Exercise, nb: NotebookNode, ran: bool, key: bytes) -> Result:
    cell = next((c for c in nb.cells if c.metadata.get(KEY, {}).get("label") == ex.label
                 and c.metadata.get(KEY, {}).get("role") == "graded"), None)
    warning = nb.metadata.get(KEY, {}).get("warnings", {}).get(ex.label, "")

    def result(points: float, status: str, message: str) -> Result:
        return Result(ex.label, "code", points, ex.points, status, message, warning=warning)

    if cell is None:
        return result(0.0, "fail", "the grading notebook has no graded cell for it")
    if not ran or cell.get("execution_count") is None:
        return result(0.0, "timeout", "not run: the notebook stopped before this check (time "
                      "limit or a dead kernel)")
    want = cell.metadata[KEY]["sources"]
    signed = [r for r in read_signed(_text(cell, "stdout"), key)
              if r.get("label") == ex.label and r.get("sources") == want]
    if not signed:
        error = _error(cell) or ""
        if error.startswith(("KeyboardInterrupt", "CellTimeoutError")):
            return result(0.0, "timeout", f"a cell ran past the time limit ({error})")
        return result(0.0, "tampered", "the check left no signed result: the submission hid "
                      "its output or replaced the grader's code" + (f" ({error})" if error
                                                                      else ""))
    outcome = signed[-1]
    status = outcome.get("status", "fail")
    if status == "tampered":
        replaced = outcome.get("replaced", [])
        shown = ", ".join(replaced[:3]) + (f" and {len(replaced) - 3} more"
                                           if len(replaced) > 3 else "")
        return result(0.0, "tampered", f"the submission replaced {shown}: the checks, "
                      "Verdict, require and the grader's code must stay as the package has "
                      "them")
    message = outcome.get("message", "")
    if status == "pass":
        return result(ex.points, "pass", message)
    return result(0.0, status, message)


def _written(ex: Exercise, submission: NotebookNode) -> Result:
    text = ""
    for cell in submission.cells:
        meta = cell.metadata.get(KEY, {}) if isinstance(cell.metadata.get(KEY), dict) else {}
        if cell.get("id") == f"answer-{ex.label}"[:64] or (meta.get("label") == ex.label
                                                          and meta.get("role") == "written"):
            text = cell.source
    text = text.replace("**Your answer.**", "", 1).strip()
    if not text or text == ANSWER_STUB:
        return Result(ex.label, "written", None, ex.points, "manual", "no answer yet")
    flat = " ".join(text.split())
    shown = f"answer: {flat[:70]}" + ("..." if len(flat) > 70 else "")
    return Result(ex.label, "written", None, ex.points, "manual", shown, answer=text)


def grade(path: Union[str, Path], book: Union[str, Path], cell_timeout: int = CELL_TIMEOUT,
          kernel_name: str = KERNEL, lesson: Optional[str] = None,
          seed: Optional[int] = None, to_end: bool = False,
          parameters: Optional[str] = None) -> Report:
    """Grade one notebook. ``book`` is the folder of lessons; ``lesson`` (``<chapter>/<name>``)
    overrides what the notebook's metadata or file name say; ``seed`` (the instructor's)
    chooses the hidden tests' random inputs (None: the lesson's own, which are public).
    ``to_end`` runs the whole lesson, not only up to its last graded cell, so that an error
    anywhere in it (a claim that fails, a cell that needs an answer) is a lesson error;
    ``parameters`` is code run right after the lesson's ``parameters`` cell."""
    path, book = Path(path), Path(book)
    if isinstance(cell_timeout, bool) or not isinstance(cell_timeout, int) or cell_timeout <= 0:
        raise ValueError(f"cell_timeout must be a positive number of seconds, got "
                         f"{cell_timeout!r}")
    if seed is not None:
        check_int(seed, "seed", 0)
    submission = read(path)
    if lesson is not None:
        lesson_path = book / f"{lesson}.ipynb"
        if not lesson_path.is_file():
            raise LessonError(f"no lesson {lesson!r} in {book}")
    else:
        lesson_path, lesson = find_lesson(submission, path, book)
    lesson_nb = read(lesson_path)
    key = secrets.token_bytes(32)
    handle, key_file = tempfile.mkstemp(prefix="bnlessons-grader-")
    with os.fdopen(handle, "wb") as f:
        f.write(key)
    nb, found = grading_notebook(lesson_nb, submission, lesson, seed=seed, key_file=key_file,
                                 to_end=to_end, parameters=parameters)
    start = time.perf_counter()
    client = NotebookClient(nb, timeout=cell_timeout, kernel_name=kernel_name,
                            allow_errors=True, interrupt_on_timeout=True,
                            resources={"metadata": {"path": str(lesson_path.parent)}})
    ran = True
    try:
        if nb.cells:
            client.execute()
    except DeadKernelError:
        ran = False
    finally:
        if os.path.exists(key_file):
            os.remove(key_file)
    report = Report(notebook=str(path), lesson=lesson, seconds=time.perf_counter() - start,
                    seed=seed, notes=list(nb.metadata[KEY]["notes"]))
    for i, cell in enumerate(nb.cells):
        err = _error(cell) if cell.cell_type == "code" else None
        if err and cell.metadata.get(KEY, {}).get("role") != "graded":
            report.lesson_errors.append(f"cell {i} raised {err.splitlines()[0][:120]}")
    warnings = nb.metadata[KEY]["warnings"]
    for ex in found:
        if ex.graded:
            report.results.append(_score(ex, nb, ran, key))
        if ex.written:
            written = _written(ex, submission)
            written.warning = warnings.get(ex.label, "")
            report.results.append(written)
    return report


def submissions(paths: Sequence[Union[str, Path]]) -> list[tuple[str, Path]]:
    """``(student, notebook)`` for every notebook to grade.

    A folder stands for a class: every notebook under it, each belonging to the
    student named by its first folder below it (``submitted/<student>/...``, as
    nbgrader lays them out), or by its own name if it sits in the folder
    itself. A notebook given by itself belongs to the folder that holds it.
    """
    out: list[tuple[str, Path]] = []
    for p in map(Path, paths):
        if p.is_dir():
            for nb in sorted(p.rglob("*.ipynb")):
                if ".ipynb_checkpoints" in nb.parts:
                    continue
                parts = nb.relative_to(p).parts
                out.append((parts[0] if len(parts) > 1 else nb.stem, nb))
        else:
            out.append((p.resolve().parent.name, p))
    return out


CSV_FIELDS = ("student", "lesson", "exercise", "kind", "points", "max_points", "status",
              "message", "warning")


def write_csv(reports: Sequence[Report], path: Union[str, Path]) -> None:
    """One row per student and exercise part (written answers have no points yet)."""
    with open(path, "w", newline="", encoding="utf-8") as f:
        writer = csv.writer(f)
        writer.writerow(CSV_FIELDS)
        for report in reports:
            for r in report.results:
                writer.writerow([report.student, report.lesson, r.label, r.kind,
                                 "" if r.points is None else f"{r.points:g}",
                                 f"{r.max_points:g}", r.status, r.message, r.warning])


def write_answers(reports: Sequence[Report], path: Union[str, Path]) -> None:
    """Every written answer in full, by exercise then student, for marking by hand."""
    by_label: dict[tuple[str, str], list[tuple[str, Result]]] = {}
    for report in reports:
        for r in report.results:
            if r.kind == "written":
                by_label.setdefault((report.lesson, r.label), []).append((report.student, r))
    lines = ["# Written answers", ""]
    for (lesson, label), entries in sorted(by_label.items()):
        lines += [f"## {label} ({lesson}, {entries[0][1].max_points:g} points)", ""]
        for student, r in entries:
            lines += [f"### {student or '(no name)'}", "",
                      r.answer if r.answer else "*(no answer)*", ""]
    Path(path).write_text("\n".join(lines), encoding="utf-8")


def grade_all(paths: Sequence[Union[str, Path]], book: Union[str, Path],
              cell_timeout: int = CELL_TIMEOUT, json_out: Optional[Union[str, Path]] = None,
              kernel_name: str = KERNEL, seed: Optional[int] = None,
              csv_out: Optional[Union[str, Path]] = None,
              answers_out: Optional[Union[str, Path]] = None) -> list[Report]:
    """Grade every notebook in ``paths`` (notebooks, or folders of them: see
    :func:`submissions`), printing each report; optionally write them as JSON, as one CSV
    row per student and exercise, and the written answers in full (Markdown)."""
    if not paths:
        raise ValueError("give at least one notebook or folder to grade")
    found = submissions(paths)
    if not found:
        raise ValueError(f"no notebooks under {', '.join(map(str, paths))}")
    reports = []
    for student, p in found:
        report = grade(p, book, cell_timeout=cell_timeout, kernel_name=kernel_name, seed=seed)
        report.student = student
        print("\n".join(report.lines()), flush=True)
        reports.append(report)
    if json_out is not None:
        Path(json_out).write_text(json.dumps([r.as_dict() for r in reports], indent=1) + "\n")
    if csv_out is not None:
        write_csv(reports, csv_out)
    if answers_out is not None:
        write_answers(reports, answers_out)
    return reports
