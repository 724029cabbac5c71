"""The chapter 2 checks: the staged backward, dx's properties, the scale factors."""
import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from bnlessons import checks, reference  # noqa: E402
from bnlessons.bn_math.diagrams import draw_graph  # noqa: E402

from conftest import staged_backward  # noqa: E402


def test_staged_check_passes_a_correct_backward(capsys):
    assert checks.check_staged_backward(reference.forward, staged_backward).passed
    assert "[PASS] check_staged_backward" in capsys.readouterr().out


@pytest.mark.parametrize("key", ["dgamma", "dvar", "dmu", "dx"])
def test_staged_check_names_the_first_wrong_node(key):
    def wrong(dout, cache):
        grads = staged_backward(dout, cache)
        grads[key] = grads[key] * 1.01
        return grads

    v = checks.check_staged_backward(reference.forward, wrong, verbose=False)
    assert not v.passed and v.message.startswith(key) and "Hint:" in v.message


def test_staged_check_other_failures():
    def missing(dout, cache):
        grads = staged_backward(dout, cache)
        del grads["dmu"]
        return grads

    v = checks.check_staged_backward(reference.forward, missing, verbose=False)
    assert "no dmu" in v.message and not v
    v = checks.check_staged_backward(reference.forward, lambda d, c: reference.backward(d, c),
                                     verbose=False)
    assert "must return a dict" in v.message
    v = checks.check_staged_backward(reference.forward, lambda d, c: 1 / 0, verbose=False)
    assert "ZeroDivisionError" in v.message
    v = checks.check_staged_backward(lambda x, g, b, e: x, staged_backward, verbose=False)
    assert "(out, cache)" in v.message


def test_dx_properties():
    assert checks.check_dx_properties(reference.forward, reference.backward, verbose=False)
    assert checks.check_dx_properties(reference.forward, reference.backward_staged,
                                      shapes=checks.SHAPES_4D, verbose=False)

    def no_mean_term(dout, cache):
        g = dout * cache.gamma
        m = dout.shape[0]
        dx = cache.inv_std / m * (m * g - cache.xhat * (g * cache.xhat).sum(0))
        return dx, None, None

    v = checks.check_dx_properties(reference.forward, no_mean_term, verbose=False)
    assert not v and "does not sum to zero" in v.message

    def no_var_term(dout, cache):
        g = dout * cache.gamma
        return cache.inv_std * (g - g.mean(0)), None, None

    v = checks.check_dx_properties(reference.forward, no_var_term, verbose=False)
    assert not v and "orthogonal" in v.message
    v = checks.check_dx_properties(reference.forward, lambda d, c: (d[:1], None, None),
                                   verbose=False)
    assert "shape" in v.message


def test_dx_properties_pass_a_correct_numpy_backward_on_any_seed():

    def numpy_backward(dout, cache):
        d, xhat = dout.numpy(), cache.xhat.numpy()
        gamma, inv_std = cache.gamma.numpy(), cache.inv_std.numpy()
        m = d.shape[0]
        dx = gamma * inv_std / m * (m * d - d.sum(0) - xhat * (d * xhat).sum(0))
        return torch.from_numpy(dx), None, None

    failures = [seed for seed in range(0, 2000, 20)
                if not checks.check_dx_properties(reference.forward, numpy_backward,
                                                  verbose=False, seed=seed)]
    assert failures == []
    with pytest.raises(ValueError, match="at least 8"):
        checks.check_dx_properties(reference.forward, numpy_backward, shapes=[(2, 1)])


def test_scale_answers():
    right = {"output": 1.0, "grad_input": 1.0, "grad_weight": 0.25, "effective_lr": 1 / 16}
    assert checks.check_scale_answers(right, verbose=False)
    assert checks.check_scale_answers({**right, "grad_weight": 0.1, "effective_lr": 0.01},
                                      a=10.0, verbose=False)
    v = checks.check_scale_answers({**right, "grad_weight": 4.0}, verbose=False)
    assert not v and v.message.startswith("grad_weight") and "0.25" in v.message
    v = checks.check_scale_answers({"output": 1.0}, verbose=False)
    assert "has no" in v.message
    v = checks.check_scale_answers({**right, "output": "one"}, verbose=False)
    assert "must be a number" in v.message
    v = checks.check_scale_answers([1, 1, 0.25, 1 / 16], verbose=False)
    assert "must be a dict" in v.message


def test_scale_answers_leave_the_global_random_state_alone():
    torch.manual_seed(7)
    expected = torch.rand(3)
    torch.manual_seed(7)
    checks.check_scale_answers({"output": 1, "grad_input": 1, "grad_weight": 0.25,
                                "effective_lr": 1 / 16}, verbose=False)
    assert torch.equal(torch.rand(3), expected)


def test_draw_graph():
    fig, ax = plt.subplots()
    out = draw_graph({"a": (0, 0), "b": (1, 1)}, [("a", "b")], ax=ax, labels={"a": "$a$"},
                     notes={"b": "db"}, inputs=("a",))
    assert out is ax and len(ax.texts) == 4  # one arrow (an annotation), two boxes, one note
    with pytest.raises(ValueError, match="unknown node"):
        draw_graph({"a": (0, 0)}, [("a", "c")], ax=ax)
    with pytest.raises(TypeError, match="must be a position"):
        draw_graph({"a": 0}, [], ax=ax)
    with pytest.raises(ValueError, match="must be a position"):
        draw_graph({"a": (0, 0, 0)}, [], ax=ax)
    with pytest.raises(TypeError, match="must be a pair"):
        draw_graph({"a": (0, 0)}, ["a"], ax=ax)
    with pytest.raises(ValueError, match="nodes is empty"):
        draw_graph({}, [], ax=ax)
    with pytest.raises(ValueError, match="notes names unknown"):
        draw_graph({"a": (0, 0)}, [], ax=ax, notes={"z": "dz"})
    plt.close(fig)


def test_check_forward_names_the_unbiased_variance_mistake():
    def with_std(x, gamma, beta, eps):
        return gamma * (x - x.mean(0)) / torch.sqrt(x.std(0) ** 2 + eps) + beta

    v = checks.check_forward(with_std, verbose=False)
    assert not v and "sqrt((m-1)/m)" in v.message and "unbiased=False" in v.message

    def shifted(x, gamma, beta, eps):  # an error that is not a rescaling gets no such hint
        return reference.forward(x, gamma, beta, eps)[0] + 0.1

    v = checks.check_forward(shifted, verbose=False)
    assert not v and "sqrt" not in v.message


def test_scale_answers_measure_the_effective_learning_rate():
    right = {"output": 1.0, "grad_input": 1.0, "grad_weight": 0.25, "effective_lr": 1 / 16}
    assert checks.check_scale_answers(right, verbose=False)
    v = checks.check_scale_answers({**right, "effective_lr": 0.25}, verbose=False)
    assert not v and "0.0625" in v.message
    half = {"output": 1.0, "grad_input": 1.0, "grad_weight": 2.0, "effective_lr": 4.0}
    assert checks.check_scale_answers(half, a=0.5, verbose=False)
