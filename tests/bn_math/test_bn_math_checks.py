"""The chapter 2 checks: the staged backward, dx's properties, the scale factors."""
import math

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import pytest  # noqa: E402
import torch  # noqa: E402

from bnlessons import checks, reference  # noqa: E402
from bnlessons.bn_math.diagrams import draw_graph  # noqa: E402

from conftest import by_hand, staged_backward  # noqa: E402


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
    v = checks.check_staged_backward(reference.forward, by_hand(reference.backward),
                                     verbose=False)
    assert "must return a dict" in v.message
    v = checks.check_staged_backward(reference.forward, lambda d, c: 1 / 0, verbose=False)
    assert "ZeroDivisionError" in v.message
    v = checks.check_staged_backward(lambda x, g, b, e: x, staged_backward, verbose=False)
    assert "(out, cache)" in v.message


def test_dx_properties():
    assert checks.check_dx_properties(reference.forward, by_hand(reference.backward), verbose=False)
    assert checks.check_dx_properties(reference.forward, by_hand(reference.backward_staged),
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
    assert not v and v.message.startswith("grad_weight") and "each piece" in v.message
    # the hint never gives the factor away, nor says which way it goes
    assert "0.25" not in v.message and "reciprocal" not in v.message
    assert "smaller" not in v.message
    v = checks.check_scale_answers({**right, "grad_weight": 0.5}, verbose=False)
    assert not v and "differentiate" in v.message and "0.25" not in v.message
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
    assert not v and "0.0625" not in v.message and "|g| and |w|" in v.message
    half = {"output": 1.0, "grad_input": 1.0, "grad_weight": 2.0, "effective_lr": 4.0}
    assert checks.check_scale_answers(half, a=0.5, verbose=False)


def _bn(x, dims, eps, outside=False):
    mu = x.mean(dim=dims, keepdim=True)
    var = x.var(dim=dims, unbiased=False, keepdim=True)
    return (x - mu) / ((var.sqrt() + eps) if outside else (var + eps).sqrt())


def _c(v, x):
    return v.reshape((1, -1) + (1,) * (x.dim() - 2))


WRONG_FORWARDS = {
    "under the square root": lambda x, g, b, e: _c(g, x) * _bn(x, (0,), e, outside=True) + _c(b, x),
    "eps is missing": lambda x, g, b, e: _c(g, x) * _bn(x, (0,), 0.0) + _c(b, x),
    "learned shift": lambda x, g, b, e: _c(g, x) * _bn(x, (0,), e),
    "learned scale": lambda x, g, b, e: _bn(x, (0,), e) + _c(b, x),
    "layer normalisation": lambda x, g, b, e: _c(g, x) * _bn(x, (1,), e) + _c(b, x),
}
WRONG_FORWARDS_4D = {
    "per channel and position": lambda x, g, b, e: _c(g, x) * _bn(x, (0,), e) + _c(b, x),
    "instance normalisation": lambda x, g, b, e: _c(g, x) * _bn(x, (2, 3), e) + _c(b, x),
    "permute": lambda x, g, b, e: (_bn(x.reshape(-1, x.shape[1]), (0,), e) * g + b).reshape(
        x.shape),
    "layer normalisation": lambda x, g, b, e: _c(g, x) * _bn(x, (1, 2, 3), e) + _c(b, x),
}


@pytest.mark.parametrize("reason", sorted(WRONG_FORWARDS))
def test_check_forward_names_each_usual_mistake_without_the_answer(reason):
    v = checks.check_forward(WRONG_FORWARDS[reason], verbose=False)
    assert not v and reason in v.message, v.message
    assert "expected" not in v.message and "got" not in v.message


@pytest.mark.parametrize("reason", sorted(WRONG_FORWARDS_4D))
def test_check_forward_names_each_usual_4d_mistake(reason):
    v = checks.check_forward(WRONG_FORWARDS_4D[reason], shapes=checks.SHAPES_4D, verbose=False)
    assert not v and reason in v.message, v.message


_EPS_4D = {
    "under the square root": lambda x, g, b, e: _c(g, x) * _bn(x, (0, 2, 3), e, outside=True)
    + _c(b, x),
    "eps is missing": lambda x, g, b, e: _c(g, x) * _bn(x, (0, 2, 3), 0.0) + _c(b, x),
}


@pytest.mark.parametrize("reason", sorted(_EPS_4D))
def test_check_forward_names_eps_mistakes_in_4d_without_a_factor(reason):
    # per channel an eps mistake rescales out - beta by nearly one common factor
    # (1 - 3e-6 here); the named mistake must win, and the factor must not be printed
    v = checks.check_forward(_EPS_4D[reason], shapes=checks.SHAPES_4D, verbose=False)
    assert not v and reason in v.message, v.message
    assert "times" not in v.message and "0.99" not in v.message


def test_check_forward_falls_back_on_invariants():
    def shifted(x, gamma, beta, eps):  # no known mistake: the mean invariant names it
        return by_hand(reference.forward)(x, gamma, beta, eps)[0] + 0.1 * gamma

    v = checks.check_forward(shifted, verbose=False)
    assert not v and "average to zero" in v.message


def _compact(dout, cache, gamma_factor=True, eps_in_s=True, mean_term=True, var_term=True,
             sign=1.0, m_shift=0):
    g = dout * cache.gamma if gamma_factor else dout
    m = dout.shape[0] + m_shift
    s = cache.inv_std if eps_in_s else 1 / cache.var.sqrt()
    inner = dout.shape[0] * g
    if mean_term:
        inner = inner - g.sum(0)
    if var_term:
        inner = inner - cache.xhat * (g * cache.xhat).sum(0)
    dx = sign * s / m * inner
    return dx, (dout * cache.xhat).sum(0), dout.sum(0)


WRONG_BACKWARDS = {
    "through the variance": dict(var_term=False),
    "through the mean": dict(mean_term=False),
    "m / (m - 1)": dict(m_shift=-1),
    "gamma * dout": dict(gamma_factor=False),
    "wrong sign": dict(sign=-1.0),
    "must include eps": dict(eps_in_s=False),
}


@pytest.mark.parametrize("reason", sorted(WRONG_BACKWARDS))
def test_check_backward_names_each_usual_mistake(reason):
    def wrong(dout, cache):
        return _compact(dout, cache, **WRONG_BACKWARDS[reason])

    v = checks.check_backward(reference.forward, wrong, verbose=False)
    assert not v and reason in v.message, v.message
    assert "expected" not in v.message


def test_check_backward_names_wrong_parameter_gradients():
    def mean_not_sum(dout, cache):
        dx, dgamma, dbeta = by_hand(reference.backward)(dout, cache)
        return dx, dgamma, dout.mean(0)

    v = checks.check_backward(reference.forward, mean_not_sum, verbose=False)
    assert not v and v.message.startswith("dbeta") and "the mean" in v.message

    def gamma_in_dgamma(dout, cache):
        dx, dgamma, dbeta = by_hand(reference.backward)(dout, cache)
        return dx, dgamma * cache.gamma, dbeta

    v = checks.check_backward(reference.forward, gamma_in_dgamma, verbose=False)
    assert not v and v.message.startswith("dgamma") and "without gamma" in v.message


def test_check_backward_passes_correct_code_on_many_seeds_and_refuses_tiny_batches():
    failures = [seed for seed in range(0, 2000, 40)
                if not checks.check_backward(reference.forward, _compact, verbose=False,
                                             seed=seed)]
    assert failures == []
    for check in (checks.check_backward, checks.check_staged_backward):
        with pytest.raises(ValueError, match="at least 8"):
            check(reference.forward, _compact, shapes=[(2, 1)])


def test_dx_properties_catch_gamma_and_eps_mistakes():
    v = checks.check_dx_properties(
        reference.forward, lambda d, c: _compact(d, c, gamma_factor=False), verbose=False)
    assert not v and "gamma doubles" in v.message
    v = checks.check_dx_properties(
        reference.forward, lambda d, c: _compact(d, c, eps_in_s=False), verbose=False)
    assert not v and "must include eps" in v.message
    assert checks.check_dx_properties(reference.forward, _compact, verbose=False)


def test_scale_answers_take_a_function_of_a_and_draw_scales_from_the_seed():
    from bnlessons.checks.bn_math import drawn_scales

    def right(a):
        return {"output": 1.0, "grad_input": 1.0, "grad_weight": 1 / a, "effective_lr": a**-2}

    assert checks.check_scale_answers(right, a=4.0, verbose=False)
    assert checks.check_scale_answers(right, a=0.3, verbose=False)
    for seed in (0, 1600, 99):
        scales = drawn_scales(seed)
        assert scales == drawn_scales(seed) and len(set(scales)) == 2
        assert all(0.1 <= s <= 10 and abs(math.log10(s / 4)) >= 0.1 and abs(math.log10(s)) >= 0.1
                   for s in scales), scales
        v = checks.check_scale_answers(right, a=None, seed=seed, verbose=False)
        assert v and all(f"{s:g}" in v.message for s in scales)
    assert drawn_scales(1) != drawn_scales(2)

    def for_four_only(a):
        return right(4.0)

    assert checks.check_scale_answers(for_four_only, a=4.0, verbose=False)
    v = checks.check_scale_answers(for_four_only, a=None, seed=1600, verbose=False)
    assert not v and f"with a = {drawn_scales(1600)[0]:g}" in v.message
    assert "0.25" not in v.message.split("Hint")[1]
    v = checks.check_scale_answers(right(4.0), a=None, verbose=False)
    assert not v and "function of a" in v.message
    v = checks.check_scale_answers(lambda a: [1, 1], a=2.0, verbose=False)
    assert not v and "must be a dict" in v.message and "returned list" in v.message

    def stub(a):
        raise NotImplementedError("ex: write scale_factors")

    assert checks.check_scale_answers(stub, a=None, verbose=False).todo
    with pytest.raises(ValueError, match="a"):
        checks.check_scale_answers(right, a=-1.0, verbose=False)
    with pytest.raises(TypeError, match="seed"):
        drawn_scales(1.5)
