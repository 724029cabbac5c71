"""Time every notebook of the course; see .ci/benchmark.

Runs each notebook top to bottom in a fresh course kernel (pinned numerics),
in memory, from the clean environment, and prints a Markdown table of wall
times with the budget check (60 s per notebook), headed by the machine it ran
on.
"""
from __future__ import annotations

import os
import platform
import sys
from pathlib import Path

import nbformat

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clean_env import isolate  # noqa: E402
from execute_notebooks import ROOT, notebooks, run  # noqa: E402

BUDGET_S = 60.0


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def main(args: list[str]) -> int:
    isolate()
    paths = notebooks(args)
    print(f"{os.cpu_count()} cores, {cpu_model()}, Python {platform.python_version()}, "
          "course kernel (pinned numerics)\n")
    print("| notebook | wall time (s) | within 60 s |")
    print("| --- | ---: | :---: |")
    total, over = 0.0, 0
    for path in paths:
        elapsed = run(nbformat.read(path, as_version=4), path, timeout=600)
        total += elapsed
        over += elapsed > BUDGET_S
        ok = "yes" if elapsed <= BUDGET_S else "NO"
        print(f"| {path.relative_to(ROOT)} | {elapsed:.1f} | {ok} |", flush=True)
    print(f"| **total ({len(paths)} notebooks)** | **{total:.1f}** | |")
    return 1 if over else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
