"""Helpers for the Batch Normalization course.

Every lesson starts with ``bnlessons.setup(seed)`` (from ``reproducibility``:
seeds, one thread, and a check that the numeric pins are in effect). The core
modules sit here: ``reference`` (batch normalization written out by hand),
``running_stats``, ``data`` (offline datasets), ``models``, ``train``,
``lr_sweep``, ``probes``, ``plots``, ``progress``. Each chapter's own tools
live in a subpackage named after its concept: ``covariate_shift``,
``bn_math``, ``inference``, ``placement`` and ``residual``. ``checks`` gives
verdicts on a learner's own implementation.
``bnlessons/README.md`` lists what lives where.
"""
from __future__ import annotations

from bnlessons.reproducibility import setup

__all__ = ["setup", "__version__"]
__version__ = "0.1.0"
