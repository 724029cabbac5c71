"""bnlessons.bn_math.gradcheck: autograd at every node, finite differences, the error measure."""
import pytest
import torch

from bnlessons import reference
from bnlessons.bn_math import gradcheck


def inputs(shape, seed=0):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(*shape, generator=g, dtype=torch.float64) * 2 + 1
    gamma = torch.rand(shape[1], generator=g, dtype=torch.float64) + 0.5
    beta = torch.randn(shape[1], generator=g, dtype=torch.float64)
    dout = torch.randn(*shape, generator=g, dtype=torch.float64)
    return x, gamma, beta, dout


@pytest.mark.parametrize("shape", [(8, 3), (2, 4), (4, 3, 5, 5)])
def test_graph_gradients_match_hand_written_backward(shape):
    x, gamma, beta, dout = inputs(shape)
    grads = gradcheck.graph_gradients(x, gamma, beta, 1e-5, dout)
    assert set(grads) == set(gradcheck.GRAPH_NODES) | {"out"}
    out, cache = reference.forward(x, gamma, beta, 1e-5)
    dx, dgamma, dbeta = reference.backward_staged(dout, cache)
    assert (grads["out"] - out).abs().max() < 1e-12
    assert (grads["x"] - dx).abs().max() < 1e-12
    assert (grads["gamma"] - dgamma).abs().max() < 1e-12
    assert (grads["beta"] - dbeta).abs().max() < 1e-12
    per_channel = gamma.reshape((1, -1) + (1,) * (len(shape) - 2))
    assert (grads["xhat"] - dout * per_channel).abs().max() < 1e-12
    assert grads["mu"].shape == (shape[1],) and grads["var"].shape == (shape[1],)


def test_graph_gradients_do_not_touch_inputs_or_need_grad_mode():
    x, gamma, beta, dout = inputs((6, 2))
    with torch.no_grad():
        grads = gradcheck.graph_gradients(x, gamma, beta, 1e-5, dout)
    assert grads["x"] is not None and x.grad is None and not x.requires_grad


def test_graph_gradients_bad_input():
    x, gamma, beta, dout = inputs((6, 2))
    with pytest.raises(ValueError, match="dout must have the shape"):
        gradcheck.graph_gradients(x, gamma, beta, 1e-5, dout[:3])
    with pytest.raises(TypeError, match="dout has dtype"):
        gradcheck.graph_gradients(x, gamma, beta, 1e-5, dout.float())
    with pytest.raises(ValueError, match="gamma must have shape"):
        gradcheck.graph_gradients(x, gamma[:1], beta, 1e-5, dout)


def test_numerical_gradient_of_a_known_function():
    x = torch.linspace(-1, 2, 7, dtype=torch.float64)
    dout = torch.arange(7, dtype=torch.float64)
    num = gradcheck.numerical_gradient(lambda v: v**3, x, dout, h=1e-5)
    assert gradcheck.relative_error(num, 3 * x**2 * dout) < 1e-9


def test_numerical_gradient_of_bn_matches_compact_backward():
    x, gamma, beta, dout = inputs((10, 3), seed=1)
    _, cache = reference.forward(x, gamma, beta, 1e-5)
    dx, dgamma, _ = reference.backward(dout, cache)
    num_x = gradcheck.numerical_gradient(lambda v: reference.forward(v, gamma, beta)[0], x, dout)
    num_gamma = gradcheck.numerical_gradient(lambda v: reference.forward(x, v, beta)[0], gamma,
                                             dout)
    assert gradcheck.relative_error(dx, num_x) < 1e-7
    assert gradcheck.relative_error(dgamma, num_gamma) < 1e-7
    # a wrong gradient is caught
    assert gradcheck.relative_error(dx * 1.001, num_x) > 1e-4


def test_numerical_gradient_bad_input():
    x = torch.zeros(3, dtype=torch.float64)
    with pytest.raises(TypeError, match="float64"):
        gradcheck.numerical_gradient(lambda v: v, x.float(), x.float())
    with pytest.raises(TypeError, match="f must be callable"):
        gradcheck.numerical_gradient(3, x, x)
    with pytest.raises(ValueError, match="h must be a finite number > 0"):
        gradcheck.numerical_gradient(lambda v: v, x, x, h=0.0)
    with pytest.raises(TypeError, match="h must be a finite number"):
        gradcheck.numerical_gradient(lambda v: v, x, x, h="1e-6")
    with pytest.raises(TypeError, match=r"f\(x\) must be a torch.Tensor"):
        gradcheck.numerical_gradient(lambda v: 1.0, x, x)
    with pytest.raises(ValueError, match="shape of dout"):
        gradcheck.numerical_gradient(lambda v: v[:2], x, x)
    with pytest.raises(ValueError, match="at most 20,000"):
        big = torch.zeros(20_001, dtype=torch.float64)
        gradcheck.numerical_gradient(lambda v: v, big, big)


def test_relative_error():
    a = torch.tensor([1.0, -4.0])
    b = torch.tensor([1.0, -3.0])
    assert gradcheck.relative_error(a, b) == pytest.approx(0.25)
    assert gradcheck.relative_error(torch.zeros(3), torch.zeros(3)) == 0.0
    with pytest.raises(ValueError, match="one shape"):
        gradcheck.relative_error(a, torch.zeros(3))
    with pytest.raises(TypeError, match="a must be a torch.Tensor"):
        gradcheck.relative_error([1.0], b)
