"""Verdicts on a learner's own implementation, measured against a reference.

Each ``check_*`` function runs the learner's code on random float64 inputs of
several shapes (with random upstream gradients, never ``sum(out)``, whose
gradient is identically zero), compares with the reference and prints one
verdict: a pass, or the first thing that is wrong (an exception, a shape, a
dtype, which output, how far off and where). It also returns a ``Verdict`` so
tests and autograders can assert on ``verdict.passed``. Every check runs the
learner's code through ``call_learner``; code that still raises
``NotImplementedError``, or an answer left as ``...``, gets a ``[TODO] ... not
implemented yet`` verdict instead of a failure. Every check takes other inputs
(a ``seed``, shapes or cases), which hidden tests use through
``require(check_x(..., seed=..., verbose=False))``.

Agreement is measured by the elementwise relative error
``max |a - b| / max(|a| + |b|, 1e-8)`` (elementwise), with thresholds stated
in each function. One submodule per topic; everything is re-exported here.
"""
from bnlessons.checks.bn_math import (
    BACKWARD_TOL,
    FORWARD_TOL,
    SHAPES_2D,
    SHAPES_4D,
    check_backward,
    check_bn_jacobian,
    check_dx_properties,
    check_forward,
    check_scale_answers,
    check_staged_backward,
    check_update_ratio,
)
from bnlessons.checks.common import (
    CheckFailed,
    Verdict,
    call_learner,
    compare,
    elementwise_relative_error,
    passed_or,
    report,
    require,
    todo_verdict,
)

# One import per topic module.
from bnlessons.checks.covariate_shift import (
    check_noise_layer,
    check_percentile_probe,
    check_saturation,
)
from bnlessons.checks.inference import (
    check_cs231n_update,
    check_evaluate,
    check_fold_linear,
    check_precise_bn,
    check_pytorch_update,
)
from bnlessons.checks.placement import (
    check_causal_norm,
    check_drop_bias,
    check_dropout_variance_ratio,
    check_preact_block,
    check_weighted_dropout_ratio,
)
from bnlessons.checks.residual import (
    check_fixup_exponent,
    check_largest_stable_lr,
    check_skipinit_block,
    check_variance_prediction,
)

__all__ = [
    "Verdict", "call_learner", "compare", "elementwise_relative_error", "report",
    "CheckFailed", "passed_or", "require", "todo_verdict",
    "BACKWARD_TOL", "FORWARD_TOL", "SHAPES_2D", "SHAPES_4D",
    "check_backward", "check_bn_jacobian", "check_forward",
    "check_noise_layer", "check_percentile_probe", "check_saturation",
    "check_dx_properties", "check_scale_answers", "check_staged_backward",
    "check_update_ratio",
    "check_cs231n_update", "check_evaluate", "check_fold_linear", "check_precise_bn",
    "check_pytorch_update",
    "check_fixup_exponent", "check_largest_stable_lr", "check_skipinit_block",
    "check_variance_prediction",
    "check_dropout_variance_ratio", "check_causal_norm", "check_preact_block",
    "check_weighted_dropout_ratio",
    "check_drop_bias",
]
