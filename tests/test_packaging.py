"""The package as a user installs it: a wheel built from the repository, imported
from outside the source tree, with every subpackage present."""
from __future__ import annotations

import os
import subprocess
import sys
import zipfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent


def subpackages() -> list[str]:
    return sorted(".".join(p.parent.relative_to(ROOT).parts)
                  for p in (ROOT / "bnlessons").rglob("__init__.py"))


@pytest.mark.slow
def test_the_wheel_ships_every_subpackage_and_imports_outside_the_tree(tmp_path):
    import shutil

    source = tmp_path / "source"  # a copy, so that the build leaves no build/ in the repository
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        shutil.copy(ROOT / name, source / name)
    shutil.copytree(ROOT / "bnlessons", source / "bnlessons",
                    ignore=shutil.ignore_patterns("__pycache__"))
    wheels = tmp_path / "wheels"
    build = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
         "-w", str(wheels), str(source)], capture_output=True, text=True)
    assert build.returncode == 0, build.stderr[-3000:]
    wheel = next(wheels.glob("bnlessons-*.whl"))
    names = zipfile.ZipFile(wheel).namelist()
    for package in subpackages():
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    assert any(n.endswith("licenses/LICENSE") for n in names), "the LICENSE is not in the wheel"
    site = tmp_path / "site"
    install = subprocess.run(
        [sys.executable, "-m", "pip", "install", "--no-deps", "-q", "--target", str(site),
         str(wheel)], capture_output=True, text=True)
    assert install.returncode == 0, install.stderr[-3000:]
    code = ("import importlib, bnlessons\n"
            f"for name in {subpackages()!r}:\n"
            "    module = importlib.import_module(name)\n"
            f"    assert module.__file__.startswith({str(site)!r}), module.__file__\n"
            "print(bnlessons.__version__)")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    env["PYTHONPATH"] = str(site)
    run = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env,
                         capture_output=True, text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    import bnlessons

    assert run.stdout.strip() == bnlessons.__version__
