"""Coursework from the lessons: student notebooks, an nbgrader source tree, an autograder.

The lesson notebooks are the one source: the website shows them with
solutions in dropdowns; :mod:`~bnlessons.coursework.student` removes the
solutions for students; :mod:`~bnlessons.coursework.nbgrader` marks them up
for nbgrader; :mod:`~bnlessons.coursework.grade` scores a returned notebook.
:mod:`~bnlessons.coursework.lesson` reads the exercise markup and enforces its
rules. This is the only part of the package that reads notebooks.

Command line: ``python -m bnlessons.coursework build|check|grade``.
"""
from bnlessons.coursework.build import build_coursework, check_book
from bnlessons.coursework.grade import Report, Result, grade, grade_all
from bnlessons.coursework.lesson import Exercise, LessonError, exercises, problems

__all__ = ["build_coursework", "check_book", "grade", "grade_all", "Report", "Result", "Exercise",
           "LessonError", "exercises", "problems"]
