"""What every check shares: the verdict, the error measure, the comparison, how a
learner's code is run (``call_learner``: its value, or a ``[FAIL]`` or ``[TODO]``
verdict), and the helpers graders use (``require``, ``passed_or``, the
not-implemented-yet verdict)."""
from __future__ import annotations

import functools
import inspect
import textwrap
from dataclasses import dataclass
from typing import Any, Callable, Optional, TypeVar, Union

import torch

from bnlessons._own_work import current as current_run
from bnlessons._own_work import learner_running

F = TypeVar("F", bound=Callable[..., "Verdict"])
T = TypeVar("T")
LINE_WIDTH = 78  # the text column of the website, in characters


@dataclass(frozen=True)
class Verdict:
    """The outcome of a check: ``passed`` and a one-line explanation.

    ``todo`` marks a failure that is not a wrong answer but a missing one (the
    code still raises ``NotImplementedError``, or the answer is ``...``), so a
    learner working through a notebook, and a grader, can tell "not started"
    from "wrong".
    """

    name: str
    passed: bool
    message: str
    todo: bool = False

    def __str__(self) -> str:
        mark = "PASS" if self.passed else ("TODO" if self.todo else "FAIL")
        return f"[{mark}] {self.name}: {self.message}"

    def __bool__(self) -> bool:
        return self.passed

    def wrapped(self, width: int = LINE_WIDTH) -> str:
        """``str(self)`` broken at spaces into lines of at most ``width`` characters (a
        word longer than that keeps its own line), continued lines indented by four
        spaces: how a verdict is printed, so that it fits the page's text column."""
        return textwrap.fill(str(self), width=width, subsequent_indent="    ",
                             break_long_words=False, break_on_hyphens=False)


def elementwise_relative_error(a: torch.Tensor, b: torch.Tensor) -> float:
    """``max_i |a_i - b_i| / max(|a_i| + |b_i|, 1e-8)``: the worst entry, each relative to itself.

    Strict: every entry must be right relative to its own size, which is what
    a check of a learner's code wants. (``gradcheck.relative_error`` divides by
    the largest entry instead, which suits finite differences, whose error is
    absolute rather than relative.)
    """
    return float(_elementwise_errors(a, b).max())


def _elementwise_errors(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """``|a_i - b_i| / max(|a_i| + |b_i|, 1e-8)`` for every entry, in float64."""
    a, b = a.double(), b.double()
    return (a - b).abs() / (a.abs() + b.abs()).clamp_min(1e-8)


def _worst_index(a: torch.Tensor, b: torch.Tensor) -> tuple[int, ...]:
    """Where :func:`elementwise_relative_error` finds its worst entry."""
    err = _elementwise_errors(a, b)
    flat = int(err.argmax())
    return tuple(int(i) for i in torch.unravel_index(torch.tensor(flat), err.shape))


def not_a_number(value: object) -> Optional[str]:
    """What a learner's answer ``value`` is if it is not one number (an int, a float or a
    one-element tensor), for a verdict; None if it is one (``float(value)`` then works)."""
    if isinstance(value, torch.Tensor):
        return None if value.numel() == 1 else f"a tensor of shape {tuple(value.shape)}"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return type(value).__name__
    return None


def compare(what: str, got: object, want: torch.Tensor, tol: float, shape_note: str,
            show_expected: bool = True) -> str:
    """Empty string if ``got`` matches ``want``; otherwise what is wrong.

    A numeric mismatch names the worst entry, with the expected value there unless
    ``show_expected`` is False (for checks whose hints must not hand over the answer).
    """
    if not isinstance(got, torch.Tensor):
        return f"{what} should be a torch.Tensor, got {type(got).__name__} {shape_note}"
    if got.shape != want.shape:
        return f"{what} has shape {tuple(got.shape)}, expected {tuple(want.shape)} {shape_note}"
    if got.dtype != want.dtype:
        return (f"{what} has dtype {got.dtype}, expected {want.dtype} {shape_note}: "
                "keep the input's dtype (no .float() or numpy round trips)")
    if not torch.isfinite(got).all():
        return f"{what} contains NaN or inf {shape_note}"
    err = elementwise_relative_error(got, want)
    if err > tol:
        idx = _worst_index(got, want)
        return (f"{what} is off by elementwise relative error {err:.2e} (threshold {tol:.0e}) "
                f"{shape_note}; worst at index {idx}"
                + (f": got {float(got[idx]):.6g}, expected {float(want[idx]):.6g}"
                   if show_expected else ""))
    return ""


def _not_implemented(err: Optional[BaseException]) -> Optional[NotImplementedError]:
    """The ``NotImplementedError`` behind ``err`` (itself or a cause), if there is one."""
    seen = 0
    while err is not None and seen < 10:
        if isinstance(err, NotImplementedError):
            return err
        err = err.__cause__ or err.__context__
        seen += 1
    return None


def todo_verdict(name: str, detail: str = "") -> Verdict:
    """The verdict for code that is not written yet: not a pass, not a wrong answer."""
    return Verdict(name, False, "not implemented yet" + (f" ({detail})" if detail else ""),
                   todo=True)


def report(verdict: Verdict, verbose: bool) -> Verdict:
    """Print the verdict (unless ``verbose`` is False) and return it."""
    if verbose:
        print(verdict.wrapped())
    return verdict


def call_learner(name: str, fn: Callable[..., T], *args: Any, verbose: bool,
                 who: str = "your function", note: str = "") -> Union[T, Verdict]:
    """Run ``fn(*args)``, the learner's code; return its value, or the verdict on how it failed.

    Every check runs a learner's code through this, so that a failure reads
    the same everywhere:

    - code that raises ``NotImplementedError`` (or raises while handling one)
      is not written yet: the ``[TODO]`` verdict of :func:`todo_verdict`,
      with the error's message as its detail;
    - any other exception is a ``[FAIL]``: "``who`` raised TypeError: ...",
      followed by ``note`` (the case being tried);
    - a ``Verdict`` returned by the learner's code is not an answer, so it is a
      ``[FAIL]`` too, rather than a verdict the check would pass on.

    ``name`` is the check's name; the verdict is printed unless ``verbose`` is
    False. The caller tells the two outcomes apart with
    ``isinstance(result, Verdict)`` and returns the verdict as its own.
    """
    after = f" {note}" if note else ""
    with learner_running(name) as run:
        try:
            value = fn(*args)
        except Exception as err:  # noqa: BLE001 - the learner's error is the verdict
            value, error = None, err
        else:
            error = None
        tampered = current_run() is not run
    if tampered:
        return report(Verdict(name, False, f"{who} changed which check is running (the "
                              f"package's record of it): that is the grader's, not yours{after}"),
                      verbose)
    if run.delegated:
        return report(Verdict(name, False, f"{who} calls the package's own "
                              f"{run.delegated[0]}, which is what {name} asks you to write: "
                              f"write it yourself{after}"), verbose)
    if error is not None:
        err = error
        missing = _not_implemented(err)
        if missing is not None:
            return report(todo_verdict(name, str(missing)), verbose)
        detail = f": {err}" if str(err) else ""
        return report(Verdict(name, False, f"{who} raised {type(err).__name__}{detail}{after}"),
                      verbose)
    if isinstance(value, Verdict):
        return report(Verdict(name, False, f"{who} returned a Verdict, not an answer{after}"),
                      verbose)
    return value


def gradable(check: F) -> F:
    """Make a ``check_*`` answer ``[TODO] ... not implemented yet`` for a ``...`` placeholder.

    A student notebook leaves ``...`` where an answer goes (``my_factors = ...``);
    passed to a check, it is an unanswered question rather than a wrong answer.
    """
    signature = inspect.signature(check)

    @functools.wraps(check)
    def wrapper(*args: Any, **kwargs: Any) -> Verdict:
        if any(v is Ellipsis for v in (*args, *kwargs.values())):
            bound = signature.bind_partial(*args, **kwargs)
            verbose = bound.arguments.get("verbose", True)
            return report(todo_verdict(check.__name__, "the answer is still ..."), verbose)
        return check(*args, **kwargs)

    return wrapper  # type: ignore[return-value]


class CheckFailed(AssertionError):
    """Raised by :func:`require` with the message of the first verdict that did not pass."""


def require(*verdicts: Verdict) -> None:
    """Raise :class:`CheckFailed` with the first failing verdict's message; else do nothing.

    Hidden tests call checks with ``verbose=False`` and other inputs and pass
    the verdicts here, so that a graded cell fails with the reason and passes
    silently.
    """
    if not verdicts:
        raise ValueError("require needs at least one verdict")
    for i, verdict in enumerate(verdicts):
        if not isinstance(verdict, Verdict):
            raise TypeError(f"require takes Verdicts (what a check_* returns); argument {i} is "
                            f"{type(verdict).__name__}")
    for verdict in verdicts:
        if not verdict.passed:
            raise CheckFailed(str(verdict))



def passed_or(verdict: Verdict, yours: T, reference: T) -> T:
    """``yours`` if ``verdict`` passed, otherwise ``reference``, saying so in one line.

    For a lesson cell that uses an exercise's answer after its check: with a
    working answer it runs the learner's code (and prints nothing more); with
    a missing or failing one it runs the reference, so the rest of the lesson
    still works.
    """
    if not isinstance(verdict, Verdict):
        raise TypeError(f"verdict must be the Verdict a check returned, got "
                        f"{type(verdict).__name__}")
    if verdict.passed:
        return yours
    print(f"(your answer does not pass {verdict.name} yet: this cell uses the reference instead)")
    return reference
