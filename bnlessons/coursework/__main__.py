"""``python -m bnlessons.coursework``: build the coursework, check the lessons, grade.

    build [--book book] [--out _build/coursework]
    check [--book book]
    grade NOTEBOOK_OR_FOLDER... [--csv OUT] [--answers OUT] [--json OUT] [--seed N]
          [--book book] [--timeout SECONDS]
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

from bnlessons.coursework.build import build_coursework, check_book
from bnlessons.coursework.grade import CELL_TIMEOUT, grade_all
from bnlessons.coursework.lesson import LessonError


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bnlessons.coursework",
                                     description="Coursework from the lesson notebooks.")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("build", help="write student notebooks and the nbgrader source tree")
    b.add_argument("--book", default="book", help="the folder of lessons (default: book)")
    b.add_argument("--out", default="_build/coursework", help="default: _build/coursework")
    c = sub.add_parser("check", help="check the lessons' exercise markup")
    c.add_argument("--book", default="book")
    g = sub.add_parser("grade", help="grade filled-in student notebooks (runs their code "
                                     "unsandboxed)")
    g.add_argument("notebooks", nargs="+", help="notebooks, or folders of submissions "
                   "(<folder>/<student>/.../<lesson>.ipynb)")
    g.add_argument("--csv", dest="csv_out", help="write one row per student and exercise "
                   "(student, lesson, exercise, points, status, ...) here")
    g.add_argument("--answers", dest="answers_out", help="write every written answer in full "
                   "here (Markdown), for marking by hand")
    g.add_argument("--json", dest="json_out", help="also write the results as JSON here")
    g.add_argument("--seed", type=int, default=None,
                   help="the instructor's seed for the hidden tests' random inputs (default: "
                        "the lessons' own, which are public)")
    g.add_argument("--book", default="book")
    g.add_argument("--timeout", type=int, default=CELL_TIMEOUT,
                   help=f"seconds each cell may run (default {CELL_TIMEOUT})")
    args = parser.parse_args(argv)
    try:
        if args.command == "build":
            files = build_coursework(args.book, args.out)
            print(f"wrote {len(files)} notebooks under {args.out}")
        elif args.command == "check":
            problems = check_book(args.book)
            for line in problems:
                print(line)
            if problems:
                return 1
            print("every lesson follows the exercise markup")
        else:
            if args.seed is None:
                print("note: the hidden tests use the lessons' own inputs, which are public; "
                      "pass --seed N (kept private) for inputs a class cannot share",
                      file=sys.stderr)
            grade_all(args.notebooks, args.book, cell_timeout=args.timeout,
                      json_out=args.json_out, seed=args.seed, csv_out=args.csv_out,
                      answers_out=args.answers_out)
    except (LessonError, FileNotFoundError, ValueError) as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
