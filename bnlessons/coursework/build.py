"""Build the coursework from the lessons: student notebooks and the nbgrader source tree.

``build_coursework(book, out)`` writes ``out/student/<chapter>/<lesson>.ipynb`` and
``out/nbgrader/source/<chapter>/<lesson>.ipynb`` (one nbgrader assignment per
chapter), replacing whatever an earlier build left there. The output depends
only on the lessons: cell ids come from the lessons, JSON is written with
sorted keys, so two builds are byte-identical.
"""
from __future__ import annotations

import shutil
from pathlib import Path
from typing import Union

import nbformat

from bnlessons.coursework.lesson import LessonError, exercises, lesson_paths, problems, read
from bnlessons.coursework.nbgrader import source_notebook, validate
from bnlessons.coursework.student import student_notebook


def check_book(book: Union[str, Path]) -> list[str]:
    """Every authoring-rule violation in the book's lessons, one line each (empty if none).

    Besides each notebook's own rules, labels must be unique across the book
    (nbgrader and the website both key on them).
    """
    book = Path(book)
    out: list[str] = []
    seen: dict[str, str] = {}
    for path in lesson_paths(book):
        rel = path.relative_to(book).as_posix()
        nb = read(path)
        found = problems(nb)
        out += [f"{rel}: {p}" for p in found]
        if found:
            continue
        for ex in exercises(nb, rel):
            if ex.label in seen:
                out.append(f"{rel}: label {ex.label} is also used in {seen[ex.label]}")
            seen[ex.label] = rel
    return out


def _write(nb: nbformat.NotebookNode, path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    nbformat.validate(nb)
    path.write_text(nbformat.writes(nb), encoding="utf-8")


def build_coursework(book: Union[str, Path], out: Union[str, Path]) -> list[Path]:
    """Write the student notebooks and the nbgrader source tree; return the files written.

    Lessons without exercises are handed out too (students read and run them).
    Raises :class:`LessonError` listing every authoring-rule violation first.
    """
    book, out = Path(book), Path(out)
    broken = check_book(book)
    if broken:
        raise LessonError("the lessons break the exercise markup:\n  " + "\n  ".join(broken))
    for sub in ("student", "nbgrader"):
        if (out / sub).exists():
            shutil.rmtree(out / sub)
    written = []
    for path in lesson_paths(book):
        lesson = path.relative_to(book).with_suffix("").as_posix()
        nb = read(path)
        student = out / "student" / f"{lesson}.ipynb"
        _write(student_notebook(nb, lesson), student)
        source = source_notebook(nb, lesson)
        bad = validate(source)
        if bad:
            raise LessonError(f"{lesson}: nbgrader metadata is invalid:\n  " + "\n  ".join(bad))
        target = out / "nbgrader" / "source" / f"{lesson}.ipynb"
        _write(source, target)
        written += [student, target]
    return written
