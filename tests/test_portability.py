"""The stored outputs do not depend on the processor (.ci/check_portability.py as tests).

* Masked dispatch: strict nbval, byte-identical, on each notebook marked for portability,
  with every dispatcher told that the processor is older still.
* Emulated processors: the numeric fingerprint (.ci/fingerprint.py) under qemu's Nehalem
  (no AVX) and Haswell (AVX2 and FMA, no AVX-512) equals the native one with the pins.
  (``bash .ci/check-portability`` also shows that without the pins an emulated Haswell
  computes another fingerprint, which shows that the fingerprint can tell; that takes two
  more runs, one emulated, and proves nothing about the course, so the tests leave it.)
"""
from __future__ import annotations

import shutil
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))
import check_portability  # noqa: E402
from test_claims import params  # noqa: E402

from bnlessons.reproducibility import kernel_env  # noqa: E402

pytestmark = pytest.mark.slow
QEMU = shutil.which("qemu-x86_64")
needs_qemu = pytest.mark.skipif(QEMU is None, reason="qemu-x86_64 not found (as root: "
                                                     "apt-get install qemu-user)")


def test_some_notebooks_are_marked_for_portability():
    assert len(check_portability.portability_notebooks()) >= 2


@pytest.mark.parametrize("path", params(check_portability.portability_notebooks()))
def test_masked_dispatch_leaves_every_output_byte_identical(path):
    assert check_portability.masked_nbval([path]), "outputs differ under masked dispatch"


@pytest.fixture(scope="session")
def native_fingerprint() -> dict[str, str]:
    return check_portability.fingerprint(kernel_env(), None)


@needs_qemu
@pytest.mark.parametrize("cpu", check_portability.EMULATED_CPUS)
def test_emulated_processor_computes_the_native_fingerprint(cpu, native_fingerprint):
    assert check_portability.fingerprint(kernel_env(), cpu) == native_fingerprint
