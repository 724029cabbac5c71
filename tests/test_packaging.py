"""The package as a user installs it: a wheel built from the repository, installed with
its dependencies into an environment of its own, imported from outside the source
tree, with every subpackage present; and every package it imports is declared.

No network: the dependencies are the ones this environment already has, which pip
is shown (without bnlessons) and must find sufficient.
"""
from __future__ import annotations

import ast
import importlib.metadata
import json
import os
import re
import subprocess
import sys
import sysconfig
import tomllib
import zipfile
from pathlib import Path

import pytest

from bnlessons import reproducibility

ROOT = Path(__file__).resolve().parent.parent


def subpackages() -> list[str]:
    return sorted(".".join(p.parent.relative_to(ROOT).parts)
                  for p in (ROOT / "bnlessons").rglob("__init__.py"))


def imported_modules(folder: Path) -> set[str]:
    """Top-level names of the modules the Python files under ``folder`` import, leaving
    out the standard library, relative imports and bnlessons itself (an AST scan)."""
    names = set()
    for path in folder.rglob("*.py"):
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in sys.stdlib_module_names and n != "bnlessons"}


def modules_the_package_needs(tmp_path: Path) -> set[str]:
    """What bnlessons imports, and what it has another process run: the course kernel
    and the inline figure backend."""
    spec = json.loads((reproducibility.write_kernelspec(tmp_path) / "kernel.json").read_text())
    kernel = spec["argv"][spec["argv"].index("-m") + 1]
    backend = reproducibility.INLINE_BACKEND.removeprefix("module://")
    return imported_modules(ROOT / "bnlessons") | {kernel.split(".")[0], backend.split(".")[0]}


def _normalised(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def needed_distributions(tmp_path: Path) -> dict[str, str]:
    """The distribution (as pip names it) that provides each module the package needs."""
    providers = importlib.metadata.packages_distributions()
    needed = {}
    for module in sorted(modules_the_package_needs(tmp_path)):
        assert module in providers, f"no installed distribution provides {module!r}"
        needed[module] = _normalised(providers[module][0])
    return needed


def declared(requirements: list[str]) -> set[str]:
    """The distribution names in requirement strings such as ``numpy>=2; extra == "x"``."""
    return {_normalised(re.match(r"[A-Za-z0-9._-]+", r).group()) for r in requirements}


def test_every_package_bnlessons_uses_is_a_declared_dependency(tmp_path):
    dependencies = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"][
        "dependencies"]
    needed = needed_distributions(tmp_path)
    assert {"torch", "nbformat", "ipykernel", "matplotlib-inline"} <= set(needed.values())
    missing = {m: d for m, d in needed.items() if d not in declared(dependencies)}
    assert not missing, f"imported or run but not in pyproject.toml's dependencies: {missing}"


def test_the_scan_finds_third_party_imports_only(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.py").write_text("import os.path\nimport numpy.linalg as la\n"
                                   "from . import b\nfrom bnlessons import data\n")
    (tmp_path / "sub" / "b.py").write_text("def f():\n    from nbclient import NotebookClient\n")
    assert imported_modules(tmp_path) == {"numpy", "nbclient"}


def _site_without_bnlessons(tmp_path: Path) -> Path:
    """This environment's site-packages seen through links, minus bnlessons itself."""
    view = tmp_path / "installed"
    view.mkdir()
    for folder in {Path(sysconfig.get_paths()[k]) for k in ("purelib", "platlib")}:
        for entry in folder.iterdir():
            if "bnlessons" not in entry.name and not (view / entry.name).exists():
                (view / entry.name).symlink_to(entry)
    return view


@pytest.mark.slow
def test_the_wheel_installs_with_its_dependencies_and_imports_outside_the_tree(tmp_path):
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

    # a fresh environment that sees the packages installed here, but not bnlessons
    env_dir = tmp_path / "env"
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(env_dir)], check=True)
    python = str(env_dir / "bin" / "python")
    site = Path(subprocess.run([python, "-c", "import sysconfig; "
                                "print(sysconfig.get_paths()['purelib'])"],
                               capture_output=True, text=True, check=True).stdout.strip())
    view = _site_without_bnlessons(tmp_path)
    (site / "installed.pth").write_text(f"import site; site.addsitedir({str(view)!r})\n")
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PIP_FIND_LINKS")}
    install = subprocess.run(
        [python, "-m", "pip", "install", "--no-index", "--find-links", str(wheels),
         "--disable-pip-version-check", "-q", "bnlessons"],
        cwd=tmp_path, env=env, capture_output=True, text=True)
    assert install.returncode == 0, install.stdout[-3000:] + install.stderr[-3000:]

    code = ("import importlib, importlib.metadata, json, bnlessons\n"
            f"for name in {subpackages()!r}:\n"
            "    module = importlib.import_module(name)\n"
            f"    assert module.__file__.startswith({str(site)!r}), module.__file__\n"
            "print(json.dumps([bnlessons.__version__,"
            " importlib.metadata.requires('bnlessons')]))")
    run = subprocess.run([python, "-c", code], cwd=tmp_path, env=env, capture_output=True,
                         text=True)
    assert run.returncode == 0, run.stderr[-3000:]
    version, requirements = json.loads(run.stdout)
    import bnlessons

    assert version == bnlessons.__version__
    missing = set(needed_distributions(tmp_path).values()) - declared(requirements)
    assert not missing, f"the wheel does not declare {sorted(missing)}"
