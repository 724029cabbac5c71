"""Helpers for the Batch Normalization course.

Every lesson starts with ``bnlessons.setup(seed)`` (from ``reproducibility``:
seeds, one thread, and a check that the numeric pins are in effect) and then
calls the modules below: ``reference`` (batch normalization written out by
hand), ``data`` (offline datasets), ``models``, ``train``, ``probes``,
``plots`` and ``checks`` (verdicts on a learner's own implementation).
"""
from __future__ import annotations

from bnlessons.reproducibility import setup

__all__ = ["setup", "__version__"]
__version__ = "0.1.0"
