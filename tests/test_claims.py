"""Every lesson's claims hold on other seeds with the processor's native numerics.

The claims check of .ci/check_claims.py, as the test command runs it: each notebook
re-executed with ``SEEDS = [101, 202, 303][:len(SEEDS)]`` in a kernel without the numeric
pins; every assertion must hold. One test per notebook, so that they run side by side
with the rest; a notebook whose metadata says it is timed runs alone (see conftest.py).
"""
from __future__ import annotations

import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))
import check_claims  # noqa: E402
from execute_notebooks import notebooks  # noqa: E402
from notebook_kinds import declared, read  # noqa: E402

pytestmark = pytest.mark.slow
SEEDS = [101, 202, 303]
NOTEBOOKS = notebooks([])


def params(paths: list[Path]) -> list:
    """One pytest parameter per notebook, marked ``timed`` where its metadata says so."""
    return [pytest.param(p, id=p.relative_to(ROOT / "book").as_posix(),
                         marks=[pytest.mark.timed] if declared(read(p))["timed"] else [])
            for p in paths]


@pytest.fixture(scope="session")
def native_kernel() -> str:
    check_claims.install_native_kernel()
    return check_claims.NATIVE_KERNEL


@pytest.mark.parametrize("path", params(NOTEBOOKS))
def test_claims_hold_on_other_seeds_without_the_pins(path, native_kernel):
    verdict, _ = check_claims.check(path, SEEDS, pinned=False)
    assert verdict == "ok", verdict
