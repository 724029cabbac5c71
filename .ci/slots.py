"""Running alone when a clock is measured: a readers-writer lock across processes.

Every notebook execution and test of the test command holds a *shared* slot while it
runs; a notebook that times itself holds the *exclusive* slot, which waits until no
shared slot is held and lets no new one be taken meanwhile (a second lock, the
turnstile, gives the waiting writer priority). The locks are files under _build/, so
pytest-xdist workers, the claims check's threads and subprocesses all take part.

With ``BNLESSONS_SLOT_LOG=FILE`` in the environment, each slot taken and given back is
appended to FILE (time, process, kind, event, label), which shows who ran beside whom.

A process that runs inside a held slot (a test that starts pytest or a notebook in a
subprocess) sets ``BNLESSONS_SLOT`` in its environment; a slot asked for under it is
already held and is not taken again (taking it again could wait forever on a writer
that waits for the outer slot).
"""
from __future__ import annotations

import contextlib
import fcntl
import os
import time
from pathlib import Path
from typing import Iterator

ROOT = Path(__file__).resolve().parent.parent
LOCK = ROOT / "_build" / "slots.lock"
TURNSTILE = ROOT / "_build" / "slots.turnstile"
HELD = "BNLESSONS_SLOT"


def _log(event: str, kind: str, label: str) -> None:
    where = os.environ.get("BNLESSONS_SLOT_LOG")
    if where:
        with open(where, "a") as log:
            log.write(f"{time.time():.3f}\t{os.getpid()}\t{kind}\t{event}\t{label}\n")


def _open(path: Path) -> int:
    path.parent.mkdir(parents=True, exist_ok=True)
    return os.open(path, os.O_RDWR | os.O_CREAT, 0o644)


@contextlib.contextmanager
def _holding(kind: str, mark: bool, label: str) -> Iterator[None]:
    if mark and os.environ.get(HELD):
        yield
        return
    lock, turnstile = _open(LOCK), _open(TURNSTILE)
    try:
        if kind == "exclusive":
            fcntl.flock(turnstile, fcntl.LOCK_EX)  # no new shared slot from now on
            fcntl.flock(lock, fcntl.LOCK_EX)  # wait for the shared slots held now
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        else:
            fcntl.flock(turnstile, fcntl.LOCK_SH)  # waits while a writer is waiting
            fcntl.flock(lock, fcntl.LOCK_SH)
            fcntl.flock(turnstile, fcntl.LOCK_UN)
        _log("taken", kind, label)
        if mark:
            os.environ[HELD] = kind
        try:
            yield
        finally:
            if mark:
                del os.environ[HELD]
            _log("given back", kind, label)
            fcntl.flock(lock, fcntl.LOCK_UN)
    finally:
        os.close(lock)
        os.close(turnstile)


def shared(mark: bool = True, label: str = "") -> contextlib.AbstractContextManager[None]:
    """Hold a shared slot: other shared slots may run beside it, the exclusive one may not.

    ``mark``: say so in ``os.environ`` for subprocesses (False in threads, which share
    the environment but each hold a slot of their own); ``label`` names the holder in the
    log."""
    return _holding("shared", mark, label)


def exclusive(mark: bool = True, label: str = "") -> contextlib.AbstractContextManager[None]:
    """Hold the exclusive slot: nothing else that takes a slot runs meanwhile."""
    return _holding("exclusive", mark, label)
