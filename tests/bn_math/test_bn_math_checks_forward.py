"""check_forward and check_backward: they pass a correct solution and name what is wrong
otherwise."""
import torch

from bnlessons import checks, reference

from conftest import backward_by_autograd, forward_by_pytorch


def test_a_solution_independent_of_the_reference_passes(capsys):
    # PyTorch's batch norm and autograd: a wrong reference inside the checks fails here
    assert checks.check_forward(forward_by_pytorch).passed
    assert checks.check_forward(forward_by_pytorch, shapes=checks.SHAPES_4D).passed
    assert checks.check_backward(forward_by_pytorch, backward_by_autograd).passed
    assert checks.check_backward(forward_by_pytorch, backward_by_autograd,
                                 shapes=checks.SHAPES_4D).passed
    assert "[PASS] check_forward" in capsys.readouterr().out


def test_the_staged_backward_passes_on_images():
    assert checks.check_backward(reference.forward, reference.backward_staged,
                                 shapes=checks.SHAPES_4D, verbose=False).passed


def test_unbiased_variance_is_caught_with_location(capsys):
    def wrong(x, g, b, eps):
        return g * (x - x.mean(0)) / torch.sqrt(x.var(0) + eps) + b

    verdict = checks.check_forward(wrong)
    assert not verdict.passed
    assert "relative error" in verdict.message and "worst at index" in verdict.message
    assert "[FAIL]" in capsys.readouterr().out


def test_shape_dtype_and_exception_messages():
    v = checks.check_forward(lambda x, g, b, e: reference.forward(x, g, b, e)[0].T, verbose=False)
    assert "shape" in v.message and not v
    v = checks.check_forward(lambda x, g, b, e: reference.forward(x, g, b, e)[0].float(),
                             verbose=False)
    assert "dtype torch.float32" in v.message
    v = checks.check_forward(lambda x, g, b, e: 1 / 0, verbose=False)
    assert "ZeroDivisionError" in v.message


def test_backward_names_the_wrong_output():
    def bad_backward(dout, cache):
        dx, dgamma, dbeta = reference.backward(dout, cache)
        return dx, dgamma * 1.01, dbeta

    v = checks.check_backward(reference.forward, bad_backward, verbose=False)
    assert not v.passed and v.message.startswith("dgamma")
    v = checks.check_backward(lambda x, g, b, e: reference.forward(x, g, b, e)[0],
                              reference.backward, verbose=False)
    assert "(out, cache)" in v.message
