"""Bad input gets a clear error that names the problem, never a wrong number."""
import pytest
import torch

from bnlessons import reference
from bnlessons.reference import BatchNorm

G = torch.ones(3, dtype=torch.float64)
B = torch.zeros(3, dtype=torch.float64)


def x64(*shape):
    return torch.randn(*shape, dtype=torch.float64)


@pytest.mark.parametrize("shape", [(3,), (2, 3, 4, 5, 6)])
def test_wrong_rank(shape):
    with pytest.raises(ValueError, match="must have shape"):
        reference.forward(x64(*shape), G, B)


def test_one_value_per_channel_in_training():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        reference.forward(x64(1, 3), G, B)
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        BatchNorm(3, dtype=torch.float64)(x64(1, 3, 1, 1))


def test_one_value_per_channel_is_fine_in_eval_mode():
    bn = BatchNorm(3, dtype=torch.float64).eval()
    assert bn(x64(1, 3)).shape == (1, 3)


@pytest.mark.parametrize("which", ["gamma", "beta"])
def test_parameter_of_wrong_shape(which):
    bad = torch.ones(4, dtype=torch.float64)
    args = {"gamma": G, "beta": B, which: bad}
    with pytest.raises(ValueError, match=f"{which} must have shape \\(3,\\)"):
        reference.forward(x64(5, 3), args["gamma"], args["beta"])


def test_integer_dtype():
    with pytest.raises(TypeError, match="floating-point dtype.*torch.int64"):
        reference.forward(torch.ones(4, 3, dtype=torch.int64), G, B)
    with pytest.raises(TypeError, match="floating-point"):
        BatchNorm(3)(torch.ones(4, 3, dtype=torch.int32))


def test_not_a_tensor():
    with pytest.raises(TypeError, match="must be a torch.Tensor, got list"):
        reference.forward([[1.0, 2.0, 3.0]] * 2, G, B)


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_non_finite_input(bad):
    x = x64(4, 3)
    x[2, 1] = bad
    with pytest.raises(ValueError, match="contains (NaN|inf)"):
        reference.forward(x, G, B)


def test_mixed_dtypes():
    with pytest.raises(TypeError, match="dtype"):
        reference.forward(x64(4, 3), G.float(), B)
    with pytest.raises(TypeError, match="dtype"):
        BatchNorm(3)(x64(4, 3))  # float32 parameters, float64 input


def test_channel_count_mismatch():
    with pytest.raises(ValueError, match="num_features=3"):
        BatchNorm(3, dtype=torch.float64)(x64(4, 5))


def test_bad_constructor_arguments():
    with pytest.raises(ValueError, match="num_features"):
        BatchNorm(0)
    with pytest.raises(ValueError, match="momentum"):
        BatchNorm(3, momentum=1.5)
    with pytest.raises(ValueError, match="eps"):
        BatchNorm(3, eps=-1.0)


def test_backward_with_wrong_dout():
    _, cache = reference.forward(x64(4, 3), G, B)
    with pytest.raises(ValueError, match="dout must have the shape"):
        reference.backward(x64(3, 4), cache)
    with pytest.raises(TypeError, match="Cache returned by forward"):
        reference.backward(x64(4, 3), (1, 2, 3))
