"""Marks for work the learner did: the package's own answers refuse to stand in for theirs.

Many exercises ask a learner to write what the package already ships (the
forward pass, the running-statistics update, folding BN into a layer). While a
check runs the learner's code (:func:`learner_running`, entered by
``checks.common.call_learner``), each function of the package that answers that
check refuses to run (:func:`answers`, :func:`refuse`), so an answer that only
calls the package fails with a message saying why. Everywhere else, the lessons
and the checks' own reference computations included, these functions run as
usual: the refusal is keyed to the check being run and lasts only while the
learner's code does.
"""
from __future__ import annotations

import contextlib
import functools
import inspect
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Optional, TypeVar

F = TypeVar("F", bound=Callable[..., Any])


class DelegatedAnswer(RuntimeError):
    """Raised by the package's own answer to an exercise while that exercise's check runs
    the learner's code."""


@dataclass
class LearnerRun:
    """The check whose learner code is running, and the package answers it reached for."""

    check: str
    delegated: list[str] = field(default_factory=list)


#: The learner run in progress. A module global rather than a context variable, so that
#: neither a thread nor a fresh ``contextvars.Context`` started by the learner's code
#: escapes it.
_run: Optional[LearnerRun] = None


@contextlib.contextmanager
def learner_running(check: str) -> Iterator[LearnerRun]:
    """Run the block as the learner's code under ``check``; yields the run's record."""
    global _run
    run, outer = LearnerRun(check), _run
    _run = run
    try:
        yield run
    finally:
        _run = outer


def current() -> Optional[LearnerRun]:
    """The learner run in progress, or None outside one."""
    return _run


def refuse(what: str, checks: tuple[str, ...]) -> None:
    """Raise :class:`DelegatedAnswer` if the learner's code under one of ``checks`` is running.

    ``what`` names the package's implementation (``bnlessons.reference.forward``).
    The attempt is also recorded, so that code catching the error still fails.
    """
    run = _run
    if run is not None and run.check in checks:
        run.delegated.append(what)
        raise DelegatedAnswer(f"your answer calls the package's own {what}, which is what "
                              f"{run.check} asks you to write: write it yourself")


def answers(*checks: str) -> Callable[[F], F]:
    """Decorate a package function that answers the exercises of ``checks``: it refuses to run
    inside the learner's code under those checks (and only there)."""
    if not checks:
        raise ValueError("answers needs at least one check name")

    def decorate(fn: F) -> F:
        what = f"{fn.__module__}.{fn.__qualname__}"

        @functools.wraps(fn)
        def wrapper(*args: Any, **kwargs: Any) -> Any:
            refuse(what, checks)
            return fn(*args, **kwargs)

        # the signature stays visible; the unguarded function is not one attribute away
        wrapper.__signature__ = inspect.signature(fn)  # type: ignore[attr-defined]
        del wrapper.__wrapped__  # type: ignore[attr-defined]
        wrapper.__bnlessons_answers__ = checks  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate
