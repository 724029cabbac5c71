"""Are the stored outputs the same on other processors? Two checks on this machine.

1. **Masked dispatch.** Strict nbval, in a kernel that has the course's pins
   and, on top of them, tells every dispatcher with a knob of its own that
   the processor is older still (glibc's hwcaps also hide SSE4.1/4.2, SSSE3,
   POPCNT, BMI and more, and MKL is told the processor stops at SSE4.2), on
   the notebooks whose metadata says ``"portability": true``. The notebooks
   must come out byte-identical. A processor changes the code path of a
   kernel, not of a notebook, so the marked notebooks are chosen to run every
   kind of kernel the lessons use, in training wherever a lesson trains with
   it (training turns a last-bit difference into another accuracy):
   01/01 float64 elementwise maths and scikit-learn's solver (NumPy); 02/05 training,
   float64 and torch.linalg (eigvalsh, svdvals); 03/02 a CNN trained
   (convolution, pooling, BatchNorm2d) and an MLP; 03/04 ghost batch norm,
   batch renorm, group and layer norm in training; 04/02 dropout's random
   masks in training, float64; 05/03 residual networks trained through
   ``variants.fit_variant``. Matrix products, BatchNorm1d, cross-entropy and
   SGD with momentum run in all of these. Every other lesson combines the same
   kernels; its own outputs on this processor are checked by strict nbval and
   its claims on other seeds without the pins by the claims check.
2. **Emulated processors.** When ``qemu-x86_64`` (Debian's qemu-user) is
   present, .ci/fingerprint.py runs under it as a processor without AVX
   (``-cpu Nehalem``) and as one with AVX2 and FMA but no AVX-512
   (``-cpu Haswell``). The emulator answers CPUID for every library in the
   process, including any dispatcher the pins do not know of. With the pins,
   every fingerprint must equal the native one. Without the pins, the
   Haswell fingerprint is also shown: it differs, which shows that the check
   can tell.

Usage: python .ci/check_portability.py [--no-emulation] [NOTEBOOK ...]
(default: the notebooks marked for portability). Exit status 1 if anything
differs. The test command runs the same checks as tests/test_portability.py.
"""
from __future__ import annotations

import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from clean_env import isolate  # noqa: E402
from execute_notebooks import ROOT, install_kernel, notebooks  # noqa: E402
from notebook_kinds import flagged  # noqa: E402

from bnlessons.reproducibility import GLIBC_MASK, kernel_env  # noqa: E402

MASKED_KERNEL = "bnlessons-masked"
MASKED_EXTRA = {
    "GLIBC_TUNABLES": GLIBC_MASK + ",-SSE4_1,-SSE4_2,-SSSE3,-POPCNT,-LZCNT,-MOVBE,-BMI1,-BMI2,"
                                   "-F16C,-ERMS,-FSRM,-AVX_Fast_Unaligned_Load",
    "MKL_ENABLE_INSTRUCTIONS": "SSE4_2",
}
EMULATED_CPUS = ("Nehalem", "Haswell")


def portability_notebooks(paths: list[Path] | None = None) -> list[Path]:
    """The notebooks whose metadata marks them for the masked-dispatch check."""
    return flagged(notebooks([]) if paths is None else paths, "portability")


def install_masked_kernel() -> None:
    env = kernel_env()
    env.update(MASKED_EXTRA)
    install_kernel(MASKED_KERNEL, env, "Python 3 (bnlessons, pinned, masked processor)")


def masked_nbval(paths: list[Path]) -> bool:
    install_masked_kernel()
    before = {p: hashlib.sha256(p.read_bytes()).hexdigest() for p in paths}
    print(f"masked dispatch: strict nbval on {len(paths)} notebooks", flush=True)
    result = subprocess.run(
        [sys.executable, "-m", "pytest", "-q", "-p", "no:cacheprovider", "--nbval",
         "--nbval-kernel-name", MASKED_KERNEL, "--nbval-sanitize-with",
         "tests/nbval_sanitize.cfg", *[str(p.relative_to(ROOT)) for p in paths]],
        cwd=ROOT)
    unchanged = all(hashlib.sha256(p.read_bytes()).hexdigest() == h for p, h in before.items())
    ok = result.returncode == 0 and unchanged
    print(f"masked dispatch: {'identical outputs' if ok else 'OUTPUTS DIFFER'}", flush=True)
    return ok


def fingerprint(env_extra: dict[str, str], cpu: str | None) -> dict[str, str]:
    env = dict(os.environ)
    env.update(env_extra)
    prefix = ["qemu-x86_64", "-cpu", cpu] if cpu else []
    result = subprocess.run([*prefix, sys.executable, str(ROOT / ".ci" / "fingerprint.py")],
                            env=env, capture_output=True, text=True, timeout=1800)
    if result.returncode != 0:
        raise RuntimeError(f"fingerprint failed ({cpu or 'native'}):\n{result.stderr[-3000:]}")
    return json.loads(result.stdout.strip().splitlines()[-1])


def emulated() -> bool:
    if shutil.which("qemu-x86_64") is None:
        print("emulated processors: skipped, qemu-x86_64 not found "
              "(as root: apt-get install qemu-user)")
        return True
    pinned, native = kernel_env(), kernel_env(pinned=False)
    reference = fingerprint(pinned, None)
    print(f"emulated processors: native, pinned     {reference}", flush=True)
    ok = True
    for cpu in EMULATED_CPUS:
        got = fingerprint(pinned, cpu)
        same = got == reference
        ok &= same
        print(f"emulated processors: {cpu:8s}, pinned   {got} "
              f"{'identical' if same else 'DIFFERS'}", flush=True)
    here, there = fingerprint(native, None), fingerprint(native, "Haswell")
    differing = sorted(k for k in here if here[k] != there[k])
    print(f"emulated processors: without the pins, native and Haswell differ in "
          f"{differing or 'nothing (this check could not tell here)'}", flush=True)
    return ok


def main(argv: list[str]) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--no-emulation", action="store_true")
    parser.add_argument("notebooks", nargs="*")
    args = parser.parse_args(argv)
    isolate()
    ok = masked_nbval(notebooks(args.notebooks) if args.notebooks else portability_notebooks())
    if not args.no_emulation:
        ok &= emulated()
    print("portability: " + ("every check identical" if ok else "FAILED"))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
