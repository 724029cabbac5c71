"""One validation rule: argument checks go through ``bnlessons/_validate.py``.

The scan reads every module of ``bnlessons`` but ``_validate.py`` and looks at
each ``if`` that tests ``isinstance`` and raises. It reports three idioms:

* a hand-written type check of an argument that ``_validate`` already
  provides: ``isinstance(name, bool)``, or ``not isinstance(name, T)`` with
  ``T`` among ``int``, ``float``, ``torch.Tensor`` and ``nn.Module`` (use
  ``check_number``, ``check_positive``, ``check_fraction``, ``check_int``,
  ``check_bool``, ``check_tensor``, ``as_float_tensor``, ``check_module``);
* a ``ValueError`` raised from a type test (a wrong type is a ``TypeError``);
* a ``TypeError`` raised from a test that also compares values or asks
  whether a number is finite (a bad value is a ``ValueError``).

``ALLOWED`` lists the sites that stay, each with its reason; an entry that
no longer matches anything fails too, so the list cannot go stale.
"""
from __future__ import annotations

import ast
import textwrap
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parents[1] / "bnlessons"
HELPERS = {"int", "float", "torch.Tensor", "nn.Module"}
VALUE_TESTS = {"isfinite", "isnan", "isinf"}

# (path under bnlessons/, the if-test as ast.unparse writes it) -> why it stays
ALLOWED: dict[tuple[str, str], str] = {
    ("bn_math/jacobian.py", "not isinstance(getattr(block, 'drop', nn.Identity()), nn.Identity)"):
        "the model is a network of the right type; a block holding dropout is a "
        "configuration layer_jacobians does not measure, a bad value",
    ("checks/bn_math.py", "isinstance(m, bool) or not isinstance(m, int) or m < 3"):
        "check_bn_jacobian's sizes: to be replaced by check_int(m, 'sizes[i]', 3)",
    ("coursework/grade.py",
     "isinstance(cell_timeout, bool) or not isinstance(cell_timeout, int) or cell_timeout <= 0"):
        "grade's cell_timeout: to be replaced by check_int(cell_timeout, 'cell_timeout', 1)",
    ("coursework/lesson.py",
     "isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0"):
        "coursework.points in a notebook's metadata: to be checked by check_positive, "
        "its error re-raised as a LessonError",
}


def _raised(body: list[ast.stmt]) -> str | None:
    """The name of the exception an ``if`` body raises directly, if any."""
    for statement in body:
        if isinstance(statement, ast.Raise) and statement.exc is not None:
            exc = statement.exc.func if isinstance(statement.exc, ast.Call) else statement.exc
            return ast.unparse(exc)
    return None


def _type_names(node: ast.expr) -> set[str]:
    if isinstance(node, ast.Tuple):
        return set().union(*(_type_names(e) for e in node.elts))
    return {ast.unparse(node)}


def idioms(source: str) -> list[tuple[int, str, str]]:
    """``(line, if-test, what is wrong)`` for each hand-written check in ``source``."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.If):
            continue
        exc = _raised(node.body)
        calls = [n for n in ast.walk(node.test) if isinstance(n, ast.Call)
                 and isinstance(n.func, ast.Name) and n.func.id == "isinstance"
                 and len(n.args) == 2]
        if exc is None or not calls:
            continue
        negated = {id(n.operand) for n in ast.walk(node.test)
                   if isinstance(n, ast.UnaryOp) and isinstance(n.op, ast.Not)}
        helped = set()
        for c in calls:
            if isinstance(c.args[0], ast.Name):
                types = _type_names(c.args[1])
                helped |= (types & {"bool"}) | (types & HELPERS if id(c) in negated else set())
        compares = any(isinstance(n, ast.Compare) and any(
            isinstance(op, (ast.Lt, ast.LtE, ast.Gt, ast.GtE)) for op in n.ops)
            for n in ast.walk(node.test))
        finite = any(isinstance(n, (ast.Attribute, ast.Name))
                     and (n.attr if isinstance(n, ast.Attribute) else n.id) in VALUE_TESTS
                     for n in ast.walk(node.test))
        test = ast.unparse(node.test)
        if helped:
            found.append((node.lineno, test, f"hand-written check of {sorted(helped)}: "
                                             "use the _validate helper"))
        elif exc == "ValueError":
            found.append((node.lineno, test, "ValueError for a wrong type"))
        elif exc == "TypeError" and (compares or finite):
            found.append((node.lineno, test, "TypeError for a bad value"))
    return found


def _scan() -> dict[tuple[str, str], list[str]]:
    sites: dict[tuple[str, str], list[str]] = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        if path.name == "_validate.py" and path.parent == PACKAGE:
            continue
        rel = path.relative_to(PACKAGE).as_posix()
        for line, test, why in idioms(path.read_text()):
            sites.setdefault((rel, test), []).append(f"bnlessons/{rel}:{line}: {why}: if {test}")
    return sites


def test_no_hand_written_checks_outside_validate():
    sites = _scan()
    unexplained = [msg for key, msgs in sites.items() if key not in ALLOWED for msg in msgs]
    assert not unexplained, "\n".join(unexplained)


def test_every_allowed_site_still_exists():
    stale = sorted(set(ALLOWED) - set(_scan()))
    assert not stale, f"remove these entries from ALLOWED: {stale}"


@pytest.mark.parametrize("source, why", [
    ("""
     def f(lr):
         if isinstance(lr, bool) or not isinstance(lr, (int, float)) or not lr > 0:
             raise ValueError(f"lr must be a positive number, got {lr!r}")
     """, "hand-written check of ['bool', 'float', 'int']"),
    ("""
     def f(x):
         if not isinstance(x, torch.Tensor):
             raise TypeError("x must be a torch.Tensor")
     """, "hand-written check of ['torch.Tensor']"),
    ("""
     def f(pos):
         if not isinstance(pos, (tuple, list)) or len(pos) != 2:
             raise ValueError("pos must be a pair")
     """, "ValueError for a wrong type"),
    ("""
     def f(alpha):
         if not isinstance(alpha, Real) or not math.isfinite(alpha):
             raise TypeError("alpha must be a finite number")
     """, "TypeError for a bad value"),
])
def test_the_scan_finds_each_idiom(source, why):
    found = idioms(textwrap.dedent(source))
    assert len(found) == 1 and found[0][2].startswith(why)


def test_the_scan_passes_the_helpers_way():
    source = textwrap.dedent("""
        def f(lr, pos, model):
            check_positive(lr, "lr")
            if not isinstance(pos, (tuple, list)):
                raise TypeError("pos must be a pair")
            if len(pos) != 2:
                raise ValueError("pos must be a pair")
            if isinstance(model, nn.Linear):
                return model
            if isinstance(pos, tuple):
                pos = list(pos)
            if isinstance(model, nn.Module) or not callable(model):
                raise TypeError("model must be a function that builds a network")
            if not isinstance(getattr(model, "weight", None), torch.Tensor):
                raise TypeError("model has no weight tensor")
    """)
    assert idioms(source) == []
