"""Verdicts on a learner's own implementation, measured against a reference.

Each ``check_*`` function runs the learner's code on random float64 inputs of
several shapes (with random upstream gradients, never ``sum(out)``, whose
gradient is identically zero), compares with the reference and prints one
verdict: a pass, or the first thing that is wrong (an exception, a shape, a
dtype, which output, how far off and where). It also returns a ``Verdict`` so
tests and autograders can assert on ``verdict.passed``.

Agreement is measured by the relative error
``max |a - b| / max(|a| + |b|, 1e-8)`` (elementwise), with thresholds stated
in each function. One submodule per topic; everything is re-exported here.
"""
from bnlessons.checks.common import Verdict, compare, rel_error, report
from bnlessons.checks.batchnorm import (
    BACKWARD_TOL,
    FORWARD_TOL,
    SHAPES_2D,
    SHAPES_4D,
    check_backward,
    check_forward,
)

# Topic modules add their imports below, one line each.
