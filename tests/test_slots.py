"""The lock that keeps timed notebooks alone (.ci/slots.py)."""
from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / ".ci"))
import slots  # noqa: E402


def hold(kind: str, seconds: float, started: threading.Event, spans: list) -> None:
    with getattr(slots, kind)(mark=False):
        started.set()
        begin = time.monotonic()
        time.sleep(seconds)
        spans.append((kind, begin, time.monotonic()))


def test_the_exclusive_slot_waits_for_shared_ones_and_holds_them_off(tmp_path, monkeypatch):
    monkeypatch.setattr(slots, "LOCK", tmp_path / "slots.lock")
    monkeypatch.setattr(slots, "TURNSTILE", tmp_path / "slots.turnstile")
    spans: list = []
    first = threading.Event()
    reader = threading.Thread(target=hold, args=("shared", 0.4, first, spans))
    reader.start()
    first.wait()
    writer_started = threading.Event()
    writer = threading.Thread(target=hold, args=("exclusive", 0.4, writer_started, spans))
    writer.start()
    time.sleep(0.1)  # the writer now waits for the reader
    late = threading.Thread(target=hold, args=("shared", 0.1, threading.Event(), spans))
    late.start()  # ... and a reader that comes later waits for the writer
    for t in (reader, writer, late):
        t.join(10)
    spans.sort(key=lambda s: s[1])
    assert [s[0] for s in spans] == ["shared", "exclusive", "shared"], spans
    (_, _, reader_end), (_, writer_begin, writer_end), (_, late_begin, _) = spans
    assert writer_begin >= reader_end and late_begin >= writer_end, spans


def test_two_shared_slots_run_side_by_side(tmp_path, monkeypatch):
    monkeypatch.setattr(slots, "LOCK", tmp_path / "slots.lock")
    monkeypatch.setattr(slots, "TURNSTILE", tmp_path / "slots.turnstile")
    spans: list = []
    threads = [threading.Thread(target=hold, args=("shared", 0.3, threading.Event(), spans))
               for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(10)
    (_, b1, e1), (_, b2, e2) = sorted(spans, key=lambda s: s[1])
    assert b2 < e1, spans  # overlapping


def test_a_slot_inside_a_held_one_is_not_taken_again(monkeypatch):
    monkeypatch.setenv(slots.HELD, "shared")
    monkeypatch.setattr(slots, "LOCK", Path("/nonexistent/never-opened"))
    with slots.exclusive():  # would fail to open the lock file if it tried
        pass
