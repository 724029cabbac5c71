"""What each lesson notebook does, as the test command needs to know it.

Every notebook declares, in its metadata under ``bnlessons``::

    {"trains": true, "timed": false, "portability": true}

* ``trains``: it runs an optimiser (an ``optimizer.step()``, in its own code or
  in a ``bnlessons`` function it calls). Training turns a last-bit difference
  into a different accuracy.
* ``timed``: it measures wall time (``time.perf_counter`` and the like, or
  ``bnlessons.measure.median_time``) and asserts or prints what it measured.
  The test command runs such a notebook alone, never beside another one.
* ``portability``: it is one of the notebooks that the portability check runs
  under masked dispatch (.ci/check_portability.py says how they are chosen).

:func:`detect` finds whether a notebook trains or is timed in its code: its
own cells and, through their imports, every function and class of
``bnlessons`` they reach (a class counts with all its methods).
tests/test_notebook_metadata.py checks that the metadata says what the code
does.
"""
from __future__ import annotations

import ast
import json
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import Iterable, Optional

ROOT = Path(__file__).resolve().parent.parent
PACKAGE = ROOT / "bnlessons"
KEY = "bnlessons"
FLAGS = ("trains", "timed", "portability")

TIMERS = frozenset({"perf_counter", "perf_counter_ns", "monotonic", "process_time",
                    "timeit"})


@dataclass
class Facts:
    """What a piece of code does: whether it trains and whether it measures time."""

    trains: bool = False
    timed: bool = False

    def add(self, other: "Facts") -> None:
        self.trains |= other.trains
        self.timed |= other.timed


def _dotted(node: ast.AST) -> Optional[str]:
    parts = []
    while isinstance(node, ast.Attribute):
        parts.append(node.attr)
        node = node.value
    if isinstance(node, ast.Name):
        return ".".join([node.id, *reversed(parts)])
    return None


class _Module:
    """One module's imports (alias -> dotted target) and its top-level definitions."""

    def __init__(self, name: str, tree: ast.Module):
        self.name = name
        self.imports: dict[str, str] = {}
        package = name if name.endswith("__init__") else name.rsplit(".", 1)[0]
        package = package.removesuffix(".__init__")
        for node in ast.walk(tree):
            if isinstance(node, ast.Import):
                for a in node.names:
                    self.imports[a.asname or a.name.split(".")[0]] = \
                        a.name if a.asname else a.name.split(".")[0]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")
                    up = up[:len(up) - node.level + 1]
                    base = ".".join(up + ([base] if base else []))
                for a in node.names:
                    self.imports[a.asname or a.name] = f"{base}.{a.name}"
        self.defs: dict[str, ast.AST] = {
            node.name: node for node in tree.body
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))}

    def resolve(self, dotted: str) -> str:
        head, _, rest = dotted.partition(".")
        if head in self.defs:
            target = f"{self.name}.{head}"
        elif head in self.imports:
            target = self.imports[head]
        else:
            return dotted
        return f"{target}.{rest}" if rest else target


class Index:
    """Every module of ``bnlessons`` (but its tests and the coursework tools), parsed once."""

    def __init__(self, package: Path = PACKAGE):
        self.modules: dict[str, _Module] = {}
        for path in sorted(package.rglob("*.py")):
            rel = path.relative_to(package.parent).with_suffix("")
            if {"tests", "coursework"} & set(rel.parts):
                continue
            name = ".".join(rel.parts).removesuffix(".__init__")
            self.modules[name] = _Module(name, _mark_parents(ast.parse(path.read_text())))
        self._facts: dict[str, Facts] = {}

    def _definition(self, target: str, seen: frozenset = frozenset()):
        """The (module, node) that ``target`` names, following re-exports; or None."""
        if target in seen:
            return None
        module, _, name = target.rpartition(".")
        while module:
            if module in self.modules:
                mod = self.modules[module]
                if name in mod.defs:
                    return mod, mod.defs[name]
                if name in mod.imports:
                    return self._definition(mod.imports[name], seen | {target})
                return None
            module, _, name = module.rpartition(".")  # a method: the facts of its class
        return None

    def facts_of(self, target: str) -> Facts:
        """The facts of the ``bnlessons`` function or class ``target`` and all it reaches."""
        if target in self._facts:
            return self._facts[target]
        self._facts[target] = Facts()  # recursion guard
        found = self._definition(target)
        facts = Facts()
        if found is not None:
            mod, node = found
            facts = self.facts_of_code(node, mod)
        self._facts[target] = facts
        return facts

    def facts_of_code(self, tree: ast.AST, module: _Module) -> Facts:
        facts = Facts()
        for node in ast.walk(tree):
            if (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)
                    and node.func.attr == "step" and not node.args and not node.keywords):
                facts.trains = True
            name = None
            if isinstance(node, ast.Attribute) and not isinstance(
                    getattr(node, "_parent_attr", None), ast.Attribute):
                name = _dotted(node)
                if name is None:
                    facts.timed |= node.attr in TIMERS
            elif isinstance(node, ast.Name):
                name = node.id
            if name is None:
                continue
            target = module.resolve(name)
            facts.timed |= target.rsplit(".", 1)[-1] in TIMERS or target == "time.time"
            if target.split(".", 1)[0] == "bnlessons":
                facts.add(self.facts_of(target))
        return facts


def _mark_parents(tree: ast.AST) -> ast.AST:
    """Tag each Attribute that is the ``value`` of another, so that only whole chains count."""
    for node in ast.walk(tree):
        if isinstance(node, ast.Attribute) and isinstance(node.value, ast.Attribute):
            node.value._parent_attr = node
    return tree


@lru_cache(maxsize=1)
def index() -> Index:
    return Index()


def code_of(nb: dict) -> str:
    """The notebook's code cells, IPython magics and shell lines left out."""
    lines = []
    for cell in nb["cells"]:
        if cell["cell_type"] == "code":
            source = cell["source"]
            source = "".join(source) if isinstance(source, list) else source
            lines += [ln for ln in source.splitlines() if not ln.lstrip().startswith(("%", "!"))]
    return "\n".join(lines)


def detect_source(source: str, name: str = "__notebook__") -> Facts:
    """The facts of a piece of Python code that imports from ``bnlessons``."""
    tree = _mark_parents(ast.parse(source))
    return index().facts_of_code(tree, _Module(name, tree))


def detect(nb: dict) -> Facts:
    """The facts of a notebook (a dict as ``json.load`` reads it)."""
    return detect_source(code_of(nb))


def read(path: Path) -> dict:
    return json.loads(Path(path).read_text())


def declared(nb: dict) -> dict[str, bool]:
    """The notebook's ``bnlessons`` metadata: each flag of ``FLAGS``, False when absent."""
    meta = nb.get("metadata", {}).get(KEY, {})
    return {flag: bool(meta.get(flag, False)) for flag in FLAGS}


def flagged(paths: Iterable[Path], flag: str) -> list[Path]:
    """The notebooks among ``paths`` whose metadata sets ``flag``."""
    if flag not in FLAGS:
        raise ValueError(f"flag must be one of {FLAGS}, got {flag!r}")
    return [p for p in paths if declared(read(p))[flag]]
