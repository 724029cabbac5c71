"""check_forward and check_backward: they pass a correct solution and name what is wrong
otherwise."""
import torch

from bnlessons import checks, reference

from conftest import backward_by_autograd, by_hand, forward_by_pytorch


def test_a_solution_independent_of_the_reference_passes(capsys):
    # PyTorch's batch norm and autograd: a wrong reference inside the checks fails here
    assert checks.check_forward(forward_by_pytorch).passed
    assert checks.check_forward(forward_by_pytorch, shapes=checks.SHAPES_4D).passed
    assert checks.check_backward(forward_by_pytorch, backward_by_autograd).passed
    assert checks.check_backward(forward_by_pytorch, backward_by_autograd,
                                 shapes=checks.SHAPES_4D).passed
    assert "[PASS] check_forward" in capsys.readouterr().out


def test_the_staged_backward_passes_on_images():
    assert checks.check_backward(reference.forward, by_hand(reference.backward_staged),
                                 shapes=checks.SHAPES_4D, verbose=False).passed


def test_unbiased_variance_is_caught_with_location(capsys):
    def wrong(x, g, b, eps):
        return g * (x - x.mean(0)) / torch.sqrt(x.var(0) + eps) + b

    verdict = checks.check_forward(wrong)
    assert not verdict.passed
    assert "relative error" in verdict.message and "worst at index" in verdict.message
    assert "[FAIL]" in capsys.readouterr().out


def test_shape_dtype_and_exception_messages():
    forward = by_hand(reference.forward)
    v = checks.check_forward(lambda x, g, b, e: forward(x, g, b, e)[0].T, verbose=False)
    assert "shape" in v.message and not v
    v = checks.check_forward(lambda x, g, b, e: forward(x, g, b, e)[0].float(),
                             verbose=False)
    assert "dtype torch.float32" in v.message
    v = checks.check_forward(lambda x, g, b, e: 1 / 0, verbose=False)
    assert "ZeroDivisionError" in v.message


def test_backward_names_the_wrong_output():
    def bad_backward(dout, cache):
        dx, dgamma, dbeta = by_hand(reference.backward)(dout, cache)
        return dx, dgamma * 1.01, dbeta

    v = checks.check_backward(reference.forward, bad_backward, verbose=False)
    assert not v.passed and v.message.startswith("dgamma")
    v = checks.check_backward(lambda x, g, b, e: by_hand(reference.forward)(x, g, b, e)[0],
                              reference.backward, verbose=False)
    assert "(out, cache)" in v.message


def test_call_learner_returns_what_the_code_returns(capsys):
    args = []

    def fn(*a):
        args.append(a)
        return {"answer": a[0] * 2}

    assert checks.call_learner("check_x", fn, 3, "b", verbose=True) == {"answer": 6}
    assert args == [(3, "b")] and capsys.readouterr().out == ""


def test_call_learner_says_todo_for_code_not_written(capsys):
    def stub(x):
        raise NotImplementedError("write stub")

    verdict = checks.call_learner("check_x", stub, 1, verbose=True, note="(case 1)")
    assert isinstance(verdict, checks.Verdict) and verdict.todo and not verdict.passed
    assert capsys.readouterr().out == "[TODO] check_x: not implemented yet (write stub)\n"

    def stub_bare():
        raise NotImplementedError

    assert str(checks.call_learner("check_x", stub_bare, verbose=False)) == \
        "[TODO] check_x: not implemented yet"

    def fails_inside_a_stub():  # a learner's helper that is still a stub, called in a try
        try:
            stub(0)
        except NotImplementedError:
            raise RuntimeError("could not finish") from None

    verdict = checks.call_learner("check_x", fails_inside_a_stub, verbose=False)
    assert verdict.todo and str(verdict) == "[TODO] check_x: not implemented yet (write stub)"


def test_call_learner_names_the_error_and_the_case(capsys):
    verdict = checks.call_learner("check_x", lambda d: d["k"], {}, verbose=True,
                                  who="your loop", note="(batch_size=4)")
    assert isinstance(verdict, checks.Verdict) and not verdict.passed and not verdict.todo
    assert verdict.message == "your loop raised KeyError: 'k' (batch_size=4)"
    assert capsys.readouterr().out == "[FAIL] check_x: your loop raised KeyError: 'k' " \
                                      "(batch_size=4)\n"

    def no_message():
        raise ValueError

    assert checks.call_learner("check_x", no_message, verbose=False).message == \
        "your function raised ValueError"


def test_call_learner_does_not_pass_on_a_verdict_the_code_returns():
    passing = checks.Verdict("check_x", True, "fine")
    verdict = checks.call_learner("check_x", lambda: passing, verbose=False)
    assert verdict is not passing and not verdict.passed and not verdict.todo
    assert "returned a Verdict" in verdict.message


def test_a_wrong_answer_checked_while_handling_a_stub_is_still_a_failure():
    try:
        raise NotImplementedError("the learner's code elsewhere")
    except NotImplementedError:
        verdict = checks.check_forward(lambda x, g, b, e: x, verbose=False)
    assert not verdict.passed and not verdict.todo


def test_a_check_names_which_code_failed_and_on_which_case():
    def boom(*args):
        raise ZeroDivisionError("division by zero")

    verdict = checks.check_pytorch_update(boom, verbose=False)
    assert verdict.message == ("your function raised ZeroDivisionError: division by zero "
                               "(x of shape (8, 3), momentum=0.1, num_batches_tracked=0)")
    verdict = checks.check_backward(reference.forward, boom, verbose=False)
    assert verdict.message == ("your backward raised ZeroDivisionError: division by zero "
                               "(input shape (8, 5))")
    verdict = checks.check_backward(boom, reference.backward, verbose=False)
    assert verdict.message.startswith("your forward raised ZeroDivisionError")
