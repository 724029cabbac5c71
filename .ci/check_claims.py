"""Do the lessons' claims hold for other seeds, with the numeric pins on and off?

Every notebook asserts what its prose claims. Strict nbval checks those
assertions for the stored seeds on the pinned path only. This script
re-executes notebooks with other seeds put in place of ``SEEDS`` (a cell
inserted after the ``parameters`` cell keeps the notebook's number of seeds)
and reports every cell that fails, with its assertion message.

    python .ci/check_claims.py [--seeds 11,12,13 ...] [--pins on|off|both]
                               [--jobs N] [NOTEBOOK ...]

``--pins off`` runs the kernel with the processor's native dispatch (the fast
path a learner gets outside the course kernel). With ``--jobs 2`` two notebooks
run at once, except a notebook whose metadata says it is timed, which runs
alone. Exit status 1 if any claim fails. Outputs are not compared and
notebooks are not changed. The test command runs the same check as
tests/test_claims.py (seeds 101, 202, 303, pins off).
"""
from __future__ import annotations

import argparse
import concurrent.futures
import sys
import time
from pathlib import Path

import nbformat
from nbclient.exceptions import CellExecutionError

sys.path.insert(0, str(Path(__file__).resolve().parent))
import slots  # noqa: E402
from clean_env import isolate  # noqa: E402
from execute_notebooks import ROOT, inject, install_kernel, notebooks, run  # noqa: E402
from notebook_kinds import declared, read  # noqa: E402

DEFAULT_SEED_SETS = ([11, 12, 13], [101, 202, 303])
NATIVE_KERNEL = "bnlessons-native"


def install_native_kernel() -> None:
    """A kernel like the course's, with numeric dispatch left to the processor."""
    from bnlessons.reproducibility import kernel_env

    install_kernel(NATIVE_KERNEL, kernel_env(pinned=False),
                   "Python 3 (bnlessons, native numerics)")


def check(path: Path, seeds: list[int], pinned: bool) -> tuple[str, float]:
    """Run one notebook with ``seeds``; return ("ok" or the failure, seconds)."""
    nb = nbformat.read(path, as_version=4)
    inject(nb, f"SEEDS = {seeds!r}[:len(SEEDS)]  # injected by .ci/check_claims.py")
    start = time.perf_counter()
    try:
        run(nb, path, timeout=600, kernel_name=None if pinned else NATIVE_KERNEL)
    except CellExecutionError as err:
        lines = [ln for ln in str(err).splitlines() if ln.strip()]
        where = next((ln for ln in lines if ln.startswith("----- ") or "Cell" in ln), "")
        message = next((ln for ln in reversed(lines) if "Error" in ln), lines[-1] if lines else "")
        failed = [i for i, c in enumerate(nb.cells)
                  if c.cell_type == "code" and any(o.get("output_type") == "error"
                                                   for o in c.get("outputs", []))]
        cell = f"cell {failed[0] - 1}" if failed else where  # index in the original notebook
        return f"FAIL at {cell}: {message.strip()[:300]}", time.perf_counter() - start
    return "ok", time.perf_counter() - start


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", action="append", default=None,
                        help="a comma-separated seed set (repeatable)")
    parser.add_argument("--pins", choices=("on", "off", "both"), default="both")
    parser.add_argument("--jobs", type=int, default=1, help="notebooks run at once")
    parser.add_argument("notebooks", nargs="*")
    args = parser.parse_args(argv)
    isolate()
    install_native_kernel()
    seed_sets = ([[int(s) for s in group.split(",")] for group in args.seeds]
                 if args.seeds else [list(s) for s in DEFAULT_SEED_SETS])
    modes = {"on": [True], "off": [False], "both": [True, False]}[args.pins]
    jobs = [(path, seeds, pinned) for pinned in modes for seeds in seed_sets
            for path in notebooks(args.notebooks)]
    failures = 0
    def alone_if_timed(path: Path, seeds: list[int], pinned: bool) -> tuple[str, float]:
        """Timed notebooks run with nothing beside them (see .ci/slots.py)."""
        timed = declared(read(path))["timed"]
        with (slots.exclusive if timed else slots.shared)(mark=False, label=path.name):
            return check(path, seeds, pinned)

    with concurrent.futures.ThreadPoolExecutor(max_workers=max(1, args.jobs)) as pool:
        results = pool.map(lambda job: (job, alone_if_timed(*job)), jobs)
        for (path, seeds, pinned), (verdict, seconds) in results:
            failures += verdict != "ok"
            print(f"{'pinned' if pinned else 'native'} seeds {seeds}: "
                  f"{path.relative_to(ROOT)} ({seconds:.0f} s): {verdict}", flush=True)
    print(f"{len(jobs) - failures} of {len(jobs)} runs hold every claim")
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
