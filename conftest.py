"""How the test command shares the processor between tests (pytest loads this for tests/ and book/).

* **Timed notebooks run alone.** A notebook whose metadata says ``"timed": true``
  (.ci/notebook_kinds.py) asserts what it measured with a clock, so nothing else may run
  beside it. Every test holds the shared side of a lock (``.ci/slots.py``) while it runs; a
  timed notebook holds the exclusive side from its first cell to its last. With
  ``pytest -n 2`` (pytest-xdist) the other worker therefore waits, and so do the claims
  and portability checks, which take the same lock.
* **A notebook's cells stay together.** nbval runs a notebook's cells one after another in
  one kernel, so all of them go to the same xdist worker, and so do the site tests (one
  builds the site, the others use it) and the tests of one class (which read what one
  fixture computed once): see ``pytest_xdist_make_scheduler``.
* **Long tests start first,** so that the many short unit tests fill the gaps at the end.
* **Kernels side by side do not share IPython's history database:** each xdist worker
  gives the kernels it starts an IPython folder of its own (an empty one, like the one
  .ci/clean_env.py sets).
* **Where the time went:** a table at the end, summed by kind of test.
"""
from __future__ import annotations

import os
import sys
import time
from collections import defaultdict
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent
sys.path.insert(0, str(ROOT / ".ci"))
import notebook_kinds  # noqa: E402
import slots  # noqa: E402
from clean_env import ISOLATED  # noqa: E402

#: Tests that execute notebooks or build things: they start first, longest first.
LONG_FIRST = (
    "tests/test_portability.py::test_emulated",
    "tests/test_site.py",
    "tests/coursework/test_grading.py",
    "tests/test_claims.py",
    "tests/test_portability.py",
    "book/",
    "tests/test_environment.py::test_strict_nbval",
    "tests/test_packaging.py",
)


def _notebook(item: pytest.Item) -> Path | None:
    path = Path(str(item.fspath))
    return path if path.suffix == ".ipynb" else None


def pytest_configure(config: pytest.Config) -> None:
    worker = os.environ.get("PYTEST_XDIST_WORKER")
    if worker:
        folder = ISOLATED / f"ipython-{worker}"
        folder.mkdir(parents=True, exist_ok=True)
        os.environ["IPYTHONDIR"] = str(folder)


def _rank(item: pytest.Item) -> int:
    nodeid = item.nodeid
    for i, prefix in enumerate(LONG_FIRST):
        if nodeid.startswith(prefix):
            return i
    return len(LONG_FIRST)


@pytest.hookimpl(tryfirst=True)  # before xdist reads the groups
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    timed: dict[Path, bool] = {}
    for item in items:
        path = _notebook(item)
        if path is None:
            continue
        if path not in timed:
            timed[path] = notebook_kinds.declared(notebook_kinds.read(path))["timed"]
        if timed[path]:
            item.add_marker(pytest.mark.timed)
    items.sort(key=_rank)  # stable: the order within each rank is kept


#: Test files whose tests run on one worker, in order (besides every notebook).
TOGETHER = ("tests/test_site.py",)


def pytest_xdist_make_scheduler(config: pytest.Config, log):
    """Hand out work in units: all cells of a notebook, all site tests, the tests of one
    class (which share what a class-wide fixture computed once), or one other test; in
    collection order (``pytest_collection_modifyitems`` puts long tests first)."""
    from xdist.scheduler import LoadScopeScheduling

    class Units(LoadScopeScheduling):
        def _split_scope(self, nodeid: str) -> str:
            parts = nodeid.split("::")
            if parts[0].endswith(".ipynb") or parts[0] in TOGETHER:
                return parts[0]
            return "::".join(parts[:2]) if len(parts) > 2 else nodeid

    config.option.loadscopereorder = False
    return Units(config, log)


_exclusive: list = []  # the held exclusive slot of the timed notebook now running


@pytest.hookimpl(hookwrapper=True, tryfirst=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    path = _notebook(item)
    if item.get_closest_marker("timed") is not None:
        if not _exclusive:
            _exclusive.append(slots.exclusive(label=item.nodeid))
            _exclusive[0].__enter__()
        try:
            yield
        finally:
            if path is None or nextitem is None or _notebook(nextitem) != path:
                _exclusive.pop().__exit__(None, None, None)
        return
    with slots.shared(label=item.nodeid):
        yield


def _kind(nodeid: str) -> str:
    if nodeid.startswith("book/"):
        return "strict nbval (book/)"
    for prefix, kind in (("tests/test_claims.py", "claims, other seeds, pins off"),
                         ("tests/test_portability.py::test_masked", "portability: masked"),
                         ("tests/test_portability.py", "portability: emulated"),
                         ("tests/coursework/test_grading.py", "coursework grading"),
                         ("tests/test_site.py", "site build and browser"),
                         ("tests/test_environment.py::test_strict", "hostile environment")):
        if nodeid.startswith(prefix):
            return kind
    return "unit tests"


def pytest_runtest_logreport(report: pytest.TestReport) -> None:
    times = getattr(pytest_runtest_logreport, "times", None)
    if times is None:
        times = pytest_runtest_logreport.times = defaultdict(float)
    times[_kind(report.nodeid)] += report.duration


def pytest_sessionstart(session: pytest.Session) -> None:
    session.config._bnlessons_start = time.perf_counter()


def pytest_terminal_summary(terminalreporter, exitstatus, config: pytest.Config) -> None:
    times = getattr(pytest_runtest_logreport, "times", None)
    if not times:
        return
    wall = time.perf_counter() - config._bnlessons_start
    tr = terminalreporter
    tr.section("where the time went (seconds of test time, summed over workers)")
    for kind, seconds in sorted(times.items(), key=lambda kv: -kv[1]):
        tr.write_line(f"{seconds:8.1f}  {kind}")
    tr.write_line(f"{sum(times.values()):8.1f}  total test time, in {wall:.1f} s of wall time")
