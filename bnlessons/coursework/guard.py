"""The grader's side of the kernel a submission runs in: checks that cannot be faked.

A submission's code runs in the same kernel as the checks, so anything it can
reach (a check, ``Verdict``, ``require``, the package's answers) it can
replace. The grader does not read a verdict the kernel prints. Instead:

- :func:`arm` runs first, before any lesson or submission code: it imports the
  checks, records a fingerprint of what a verdict rests on (:func:`fingerprint`:
  every name the checks, the refusals and the guard bind, and the package's own
  functions and classes, each by identity and code object) and reads the run's
  secret key from a file, which it deletes;
- every exercise's check and hidden tests run through :func:`graded`, which
  binds the names the check uses (``checks``, ``reference``) to the modules the
  lesson imports, compares the fingerprint before and after, and prints one
  result line signed with the key (an HMAC over the exercise, the result and
  the sources it ran).

The grader accepts only a correctly signed line from the exercise's own cell;
a changed fingerprint scores 0 and names what was replaced; no line (output
hidden, cell rewritten, kernel dead) scores 0 too. This defends against a
submission that replaces or wraps what the checks use; it is not a sandbox.
Torch and the standard library are not watched (lessons, and PyTorch itself,
change their attributes as they run), so a submission that replaces a torch
function the checks call is not caught; nor is code that digs the key out of
this module's closures, or attacks the machine. Grade on a machine or
container where running the submissions is acceptable.
"""
from __future__ import annotations

import base64
import builtins
import hashlib
import hmac
import importlib
import json
import os
import sys
import types
from typing import Any, Callable, Optional, Sequence

#: The modules a verdict is computed by: the checks, the refusals and the guard itself. Every
#: name they bind is watched (the functions and classes they define, the modules, functions
#: and constants they import or hold), so that a replaced binding is seen.
VERDICT_MODULES = ("bnlessons.checks", "bnlessons._own_work", "bnlessons.coursework.guard")
SIGNED_PREFIX = "[GRADED] "
CONSTANTS = (int, float, str, bytes, bool, frozenset, tuple, type(None))
#: The built-ins the checks and the guard call (IPython sets and removes others as cells run).
BUILTINS = ("exec", "compile", "print", "isinstance", "issubclass", "type", "getattr", "setattr",
            "hasattr", "callable", "len", "abs", "max", "min", "sum", "any", "all", "range", "zip",
            "enumerate", "sorted", "float", "int", "bool", "str", "tuple", "list", "dict", "set",
            "round", "repr", "iter", "next", "id", "hash", "super", "object", "__import__",
            "open", "map", "divmod", "pow", "format", "vars")

_state: dict[str, Callable[..., Any]] = {}


def _closure_ids(fn: types.FunctionType) -> tuple:
    ids = []
    for cell in fn.__closure__ or ():
        try:
            ids.append(id(cell.cell_contents))
        except ValueError:  # an empty cell
            ids.append(None)
    return tuple(ids)


def _function_print(fn: types.FunctionType) -> tuple:
    """A function by what decides what it does: itself, its code, its defaults, the objects
    its closure holds and the namespace it looks names up in."""
    return (id(fn), id(fn.__code__), id(fn.__defaults__), id(fn.__kwdefaults__),
            _closure_ids(fn), id(fn.__globals__))


def _own(value: Any) -> bool:
    """Whether ``value`` is a function, class or module of the package (not torch's, say)."""
    if isinstance(value, types.ModuleType):
        name = value.__name__
    elif isinstance(value, (types.FunctionType, type)):
        name = getattr(value, "__module__", None) or ""
    else:
        return False
    return name == "bnlessons" or name.startswith("bnlessons.")


def _entry(value: Any, constants: bool) -> Any:
    """What the fingerprint keeps of one name's value (None: not watched). Functions by
    :func:`_function_print`, everything else callable by identity; constants (``constants``)
    by value."""
    if isinstance(value, types.FunctionType):
        return _function_print(value)
    if isinstance(value, (staticmethod, classmethod)):
        inner = value.__func__
        return (id(value), _function_print(inner) if isinstance(inner, types.FunctionType)
                else id(inner))
    if isinstance(value, property):
        return (id(value), id(value.fget), id(value.fset), id(value.fdel))
    if isinstance(value, types.ModuleType) or callable(value):
        return id(value)
    if constants and isinstance(value, CONSTANTS):
        return ("value", id(value), repr(value))
    return None


def _verdict_module(name: str) -> bool:
    return any(name == m or name.startswith(m + ".") for m in VERDICT_MODULES)


def _watched_modules() -> list[tuple[str, types.ModuleType]]:
    names = sorted(n for n in list(sys.modules) if n == "bnlessons" or n.startswith("bnlessons."))
    return [(n, sys.modules[n]) for n in names if isinstance(sys.modules.get(n), types.ModuleType)]


def _class_entries(prefix: str, cls: type, out: dict[str, Any]) -> None:
    for key, value in list(vars(cls).items()):
        if key in ("__dict__", "__weakref__", "__doc__", "_abc_impl"):
            continue
        entry = _entry(value, constants=False)
        if entry is not None:
            out[f"{prefix}.{key}"] = entry


def fingerprint() -> dict[str, Any]:
    """What a verdict rests on, each by what identifies it.

    In the checks, the refusals and the guard (:data:`VERDICT_MODULES`): every name a
    module binds, and the checks' tables by their contents. Elsewhere in the package: the
    package's own functions, classes and modules that a module binds (the reference
    implementations the checks compare with); what it binds from elsewhere (torch, the
    standard library) is not watched, since lessons and PyTorch itself change those as
    they run. Classes the package defines are watched method by method, each module also
    by its entry in ``sys.modules``.
    """
    out: dict[str, Any] = {f"builtins.{k}": id(getattr(builtins, k, None)) for k in BUILTINS}
    for name, module in _watched_modules():
        out[f"sys.modules[{name!r}]"] = id(module)
        everything = _verdict_module(name)
        for key, value in list(vars(module).items()):
            if key.startswith("__") or not (everything or _own(value)):
                continue
            entry = _entry(value, constants=everything)
            if entry is None and name.startswith("bnlessons.checks") and \
                    isinstance(value, (dict, list, set)):
                entry = ("value", id(value), repr(value))  # the checks' tables of hints
            if entry is None:
                continue
            out[f"{name}.{key}"] = entry
            if isinstance(value, type) and value.__module__ == name:
                _class_entries(f"{name}.{key}", value, out)
    return out


def changed(baseline: dict[str, Any], now: dict[str, Any]) -> list[str]:
    """The names whose values differ from the baseline (names added since are ignored)."""
    return sorted(k for k, v in baseline.items() if now.get(k, object()) != v)


def arm(key_file: str, namespace: dict) -> None:
    """Record the fingerprint and keep the key; the grader runs this in the kernel first.

    The checks run in ``namespace``: the kernel's, ``globals()`` of the cell that arms."""
    if _state:
        raise RuntimeError("the guard is already armed in this kernel")
    with open(key_file, "rb") as f:
        key = f.read()
    os.remove(key_file)
    import bnlessons.checks  # noqa: F401 - the checks, and what they import, are watched
    from bnlessons import _own_work
    from bnlessons.checks.common import Verdict

    user_ns = namespace
    out = sys.stdout
    baseline = fingerprint()
    # the guard's own helpers as they are now (the fingerprint also watches their names)
    watch, diff, outcome = fingerprint, changed, _outcome
    counter = [0]
    hmac_new, sha256, dumps, b64 = hmac.new, hashlib.sha256, json.dumps, base64.b64encode
    import_module = importlib.import_module
    genuine_exec, genuine_compile = builtins.exec, builtins.compile

    def bind(names: Sequence[tuple[str, str, Optional[str]]]) -> None:
        for alias, module, attr in names:
            value = import_module(module)
            user_ns[alias] = value if attr is None else getattr(value, attr)

    def run(source: str, where: str) -> Optional[BaseException]:
        try:
            genuine_exec(genuine_compile(source, where, "exec"), user_ns)
        except BaseException as err:  # noqa: BLE001 - every failure is a result
            return err
        return None

    def graded(label: str, check: str, hidden: str,
               names: Sequence[tuple[str, str, Optional[str]]] = ()) -> None:
        counter[0] += 1
        result: dict[str, Any] = {"label": label, "n": counter[0],
                                  "sources": sha256((check + "\0" + hidden).encode()).hexdigest()}
        before = diff(baseline, watch())
        if before or _own_work._run is not None:
            result.update(status="tampered", replaced=before or ["bnlessons._own_work._run"])
        else:
            bind(names)
            user_ns.pop("verdict", None)
            check_error = run(check, f"<check {label}>")
            verdict = user_ns.get("verdict")
            hidden_error = run(hidden, f"<hidden tests {label}>") if hidden else None
            after = diff(baseline, watch())
            if after or _own_work._run is not None:
                result.update(status="tampered",
                              replaced=after or ["bnlessons._own_work._run"])
            else:
                result.update(outcome(verdict, Verdict, check_error, hidden_error))
        payload = b64(dumps(result, sort_keys=True).encode()).decode()
        mac = hmac_new(key, payload.encode(), "sha256").hexdigest()
        out.write(f"\n{SIGNED_PREFIX}{payload} {mac}\n")
        out.flush()

    _state["graded"] = graded


def _error_text(err: BaseException) -> str:
    return f"{type(err).__name__}: {err}".strip()


def _outcome(verdict: Any, verdict_class: type, check_error: Optional[BaseException],
             hidden_error: Optional[BaseException]) -> dict[str, Any]:
    """The result of one exercise from its visible verdict and the two cells' errors."""
    genuine = type(verdict) is verdict_class
    for err in (check_error, hidden_error):
        if isinstance(err, KeyboardInterrupt):
            return {"status": "timeout", "message": "a cell ran past the time limit"}
    if genuine and verdict.todo:
        return {"status": "TODO", "message": verdict.message}
    if check_error is not None:
        if genuine and not verdict.passed:
            return {"status": "fail", "message": verdict.message}
        return {"status": "fail", "message": _error_text(check_error)}
    if not genuine:
        return {"status": "fail", "message": "the check cell left no verdict"}
    if hidden_error is not None:
        return {"status": "fail", "message": "hidden tests: " + _error_text(hidden_error)}
    if not verdict.passed:
        return {"status": "fail", "message": verdict.message}
    return {"status": "pass", "message": verdict.message}


def graded(label: str, check: str, hidden: str,
           names: Sequence[tuple[str, str, Optional[str]]] = ()) -> None:
    """Run exercise ``label``'s check and hidden tests and print the signed result."""
    if "graded" not in _state:
        raise RuntimeError("the guard is not armed: the grader runs arm() first")
    _state["graded"](label, check, hidden, names)


def read_signed(text: str, key: bytes) -> list[dict[str, Any]]:
    """The correctly signed results in ``text`` (a cell's output); forged lines are dropped."""
    found = []
    for line in text.splitlines():
        if not line.startswith(SIGNED_PREFIX):
            continue
        parts = line[len(SIGNED_PREFIX):].split(" ")
        if len(parts) != 2:
            continue
        payload, mac = parts
        want = hmac.new(key, payload.encode(), "sha256").hexdigest()
        if not hmac.compare_digest(want, mac):
            continue
        try:
            found.append(json.loads(base64.b64decode(payload)))
        except ValueError:
            continue
    return found
