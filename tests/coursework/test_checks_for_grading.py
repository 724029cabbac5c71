"""What graders need from the checks: other inputs, a TODO verdict, require, passed_or."""
from __future__ import annotations

import pytest
import torch

from bnlessons import checks, reference
from bnlessons.checks.residual import predicted_variance

from conftest import backward_by_autograd, by_hand, forward_by_pytorch, variance_prediction


def not_written(*args, **kwargs):
    raise NotImplementedError("ex-demo: write my_forward")


def test_not_implemented_is_todo_not_fail(capsys):
    verdict = checks.check_forward(not_written)
    assert not verdict.passed and verdict.todo
    out = capsys.readouterr().out
    assert out.startswith("[TODO] check_forward: not implemented yet (ex-demo: write my_forward)")
    assert not checks.check_backward(reference.forward, not_written, verbose=False).passed


def test_an_ellipsis_answer_is_todo(capsys):
    verdict = checks.check_scale_answers(...)
    assert verdict.todo and "[TODO] check_scale_answers: not implemented yet" in \
        capsys.readouterr().out
    assert checks.check_variance_prediction(..., verbose=False).todo


def test_every_check_says_todo_for_a_stub():
    class Stub(torch.nn.Module):
        def __init__(self, *args):
            raise NotImplementedError("stub")

    cases = [
        (checks.check_saturation, (not_written,)), (checks.check_percentile_probe, (not_written,)),
        (checks.check_noise_layer, (Stub,)), (checks.check_forward, (not_written,)),
        (checks.check_staged_backward, (reference.forward, not_written)),
        (checks.check_dx_properties, (reference.forward, not_written)),
        (checks.check_pytorch_update, (not_written,)), (checks.check_cs231n_update, (not_written,)),
        (checks.check_evaluate, (not_written,)), (checks.check_precise_bn, (not_written,)),
        (checks.check_fold_linear, (not_written,)), (checks.check_drop_bias, (not_written,)),
        (checks.check_dropout_variance_ratio, (not_written,)),
        (checks.check_weighted_dropout_ratio, (not_written,)),
        (checks.check_preact_block, (Stub,)), (checks.check_causal_norm, (Stub,)),
        (checks.check_variance_prediction, (not_written,)),
        (checks.check_skipinit_block, (Stub,)), (checks.check_largest_stable_lr, (not_written,)),
    ]
    for check, args in cases:
        verdict = check(*args, verbose=False)
        assert verdict.todo and not verdict.passed, (check.__name__, verdict)


def test_a_wrong_answer_is_still_a_failure():
    verdict = checks.check_forward(lambda x, g, b, e: x, verbose=False)
    assert not verdict.passed and not verdict.todo and str(verdict).startswith("[FAIL]")


def test_other_inputs_pass_a_correct_solution_and_change_what_is_checked():
    assert checks.check_forward(forward_by_pytorch, shapes=((5, 7),), seed=3, verbose=False)
    assert checks.check_backward(forward_by_pytorch, backward_by_autograd, shapes=((8, 2),),
                                 seed=9, verbose=False)
    assert checks.check_variance_prediction(variance_prediction, cases=(("linear", 3, 0.5),),
                                            verbose=False)

    # the cases given are the ones checked: an answer wrong only from l = 2 passes depth 1
    def wrong_beyond_one(design, depth, alpha):
        v = variance_prediction(design, depth, alpha)
        v[2:] *= 1.5
        return v

    assert checks.check_variance_prediction(wrong_beyond_one, cases=(("bn-linear", 1, 0.5),),
                                            verbose=False)
    assert not checks.check_variance_prediction(wrong_beyond_one, cases=(("bn-linear", 2, 0.5),),
                                                verbose=False)
    seen = []

    def spy(x, gamma, beta, eps):
        seen.append(x.clone())
        return reference.forward(x, gamma, beta, eps)

    checks.check_forward(spy, shapes=((4, 2),), verbose=False)
    checks.check_forward(spy, shapes=((4, 2),), seed=101, verbose=False)
    checks.check_forward(spy, shapes=((4, 2),), verbose=False)
    assert not torch.equal(seen[0], seen[1]) and torch.equal(seen[0], seen[2])


def test_default_messages_are_unchanged(capsys):
    checks.check_variance_prediction(by_hand(predicted_variance))
    assert capsys.readouterr().out == ("[PASS] check_variance_prediction: all 6 predictions "
                                       "match the derivation\n    (relative error 1e-08)\n")


def test_require():
    ok = checks.check_forward(forward_by_pytorch, verbose=False)
    bad = checks.check_forward(lambda x, g, b, e: x, verbose=False)
    assert checks.require(ok) is None
    with pytest.raises(checks.CheckFailed, match=r"^\[FAIL\] check_forward: out is off"):
        checks.require(ok, bad, ok)
    with pytest.raises(AssertionError):
        checks.require(checks.check_forward(not_written, verbose=False))
    with pytest.raises(TypeError, match="argument 1 is bool"):
        checks.require(ok, True)
    with pytest.raises(ValueError, match="at least one"):
        checks.require()


def test_passed_or(capsys):
    ok = checks.check_forward(forward_by_pytorch, verbose=False)
    todo = checks.check_forward(not_written, verbose=False)
    assert checks.passed_or(ok, "yours", "reference") == "yours"
    assert capsys.readouterr().out == ""
    assert checks.passed_or(todo, "yours", "reference") == "reference"
    assert "uses the reference" in capsys.readouterr().out
    with pytest.raises(TypeError, match="Verdict"):
        checks.passed_or(True, "yours", "reference")
