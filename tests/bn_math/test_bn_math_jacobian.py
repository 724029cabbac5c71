"""BN's Jacobian: the formula against autograd, the projection, layer Jacobians."""
import pytest
import torch

from bnlessons import checks, models
from bnlessons.bn_math import jacobian as jb

from conftest import by_hand

#: the package's formula as a learner's correct answer (see conftest.by_hand)
own_jacobian = by_hand(jb.bn_jacobian)


def _column(m=12, seed=0):
    g = torch.Generator().manual_seed(seed)
    return torch.randn(m, generator=g, dtype=torch.float64) * 3 + 1


@pytest.mark.parametrize("eps", [0.0, 1e-3, 2.0])
@pytest.mark.parametrize("gamma", [1.0, -0.7, 2.5])
def test_formula_matches_autograd(eps, gamma):
    x = _column()
    torch.testing.assert_close(jb.bn_jacobian(x, gamma, eps),
                               jb.autograd_bn_jacobian(x, gamma, eps), rtol=1e-12, atol=1e-12)


def test_zero_eps_gives_a_projection_of_rank_m_minus_2():
    x = _column(m=10)
    report = jb.projection_report(jb.bn_jacobian(x, 1.7, 0.0), x, 1.7, 0.0)
    assert report.symmetry < 1e-13 and report.idempotence < 1e-13 and report.kernel < 1e-13
    sv = report.singular_values
    torch.testing.assert_close(sv[:8], torch.ones(8, dtype=torch.float64))
    assert sv[8:].abs().max() < 1e-12


def test_positive_eps_shrinks_the_xhat_direction_to_eps_s_squared():
    x, eps = _column(m=10), 0.5
    s = 1 / (x.var(unbiased=False) + eps).sqrt()
    xhat = (x - x.mean()) * s
    p = jb.bn_jacobian(x, 1.0, eps) / s
    torch.testing.assert_close(p @ xhat, eps * s ** 2 * xhat)
    report = jb.projection_report(p * s, x, 1.0, eps)
    assert report.idempotence > 1e-3  # no longer a projection


def test_a_wrong_jacobian_is_not_reported_as_a_projection():
    x = _column()
    report = jb.projection_report(torch.eye(12, dtype=torch.float64), x)
    assert report.kernel > 0.9


def test_bad_input():
    with pytest.raises(ValueError, match=r"shape \(m,\)"):
        jb.bn_jacobian(torch.randn(4, 2))
    with pytest.raises(ValueError, match="at least 3"):
        jb.bn_jacobian(torch.randn(2))
    with pytest.raises(ValueError, match="constant"):
        jb.bn_jacobian(torch.ones(5))
    with pytest.raises(TypeError, match="x must be a torch.Tensor"):
        jb.bn_jacobian([1.0, 2.0, 3.0])
    with pytest.raises(ValueError, match="eps"):
        jb.bn_jacobian(torch.randn(5), eps=-1.0)
    with pytest.raises(ValueError, match="shape"):
        jb.projection_report(torch.eye(3), torch.randn(5))


def _mlp(norm, seed=0):
    torch.manual_seed(seed)
    return models.MLP(6, 3, width=5, depth=3, norm=norm, init="he").double()


@pytest.mark.parametrize("norm", ["bn", None])
def test_layer_jacobians_match_autograd_through_the_network(norm):
    """Perturb one example's layer-l value, rerun the rest with the batch's statistics frozen."""
    net = _mlp(norm)
    x = torch.randn(16, 6, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    jacs = jb.layer_jacobians(net, x)
    assert len(jacs) == 2 and jacs[0].shape == (16, 5, 5)
    b0, b1 = net.blocks[0], net.blocks[1]
    z0, z1 = b0.linear(x), None
    if norm == "bn":
        mu0, s0 = z0.mean(0), z0.var(0, unbiased=False).add(b0.norm.eps).sqrt()
        z1 = b1.linear(torch.relu(b0.norm.weight * (z0 - mu0) / s0 + b0.norm.bias))
        mu1, s1 = z1.mean(0), z1.var(0, unbiased=False).add(b1.norm.eps).sqrt()

        def f(v):
            return (b1.linear(torch.relu(b0.norm.weight * v + b0.norm.bias)) - mu1) / s1
        v0 = ((z0 - mu0) / s0)[3]
    else:
        def f(v):
            return b1.linear(torch.relu(v))
        v0 = z0[3]
    want = torch.autograd.functional.jacobian(f, v0.detach())
    torch.testing.assert_close(jacs[0][3], want)
    whole = jb.chain(jacs)
    torch.testing.assert_close(whole[3], jacs[1][3] @ jacs[0][3])


def test_layer_jacobians_leave_the_model_alone_and_refuse_other_models():
    net = _mlp("bn")
    before = {k: v.clone() for k, v in net.state_dict().items()}
    net.train()
    jb.layer_jacobians(net, torch.randn(8, 6, dtype=torch.float64))
    assert all(torch.equal(before[k], v) for k, v in net.state_dict().items())
    assert net.training
    with pytest.raises(ValueError, match="BN in every block"):
        jb.layer_jacobians(models.MLP(6, 3, width=5, depth=3, norm="ln"), torch.randn(8, 6))
    with pytest.raises(ValueError, match="two hidden layers"):
        jb.layer_jacobians(models.MLP(6, 3, width=5, depth=1), torch.randn(8, 6))
    with pytest.raises(ValueError, match="dropout"):
        jb.layer_jacobians(models.MLP(6, 3, width=5, depth=2, dropout=0.1), torch.randn(8, 6))
    with pytest.raises(ValueError, match="at least one"):
        jb.chain([])


def test_singular_value_summary_on_known_matrices():
    eye = torch.eye(4, dtype=torch.float64).expand(3, 4, 4)
    twice = 2.5 * eye
    out = jb.singular_value_summary([eye, twice])
    assert out["in_band"] == 0.5 and out["gain_min"] == 1.0 and out["gain_max"] == 6.25
    assert out["q10"] == 1.0 and out["q90"] == 2.5
    with pytest.raises(ValueError, match="band"):
        jb.singular_value_summary([eye], band=(2.0, 1.0))


def test_correlation_eigenvalues_of_uncorrelated_and_copied_units():
    net = _mlp(None)
    x = torch.randn(4000, 6, generator=torch.Generator().manual_seed(2), dtype=torch.float64)
    with torch.no_grad():
        net.blocks[0].linear.weight.copy_(torch.eye(5, 6, dtype=torch.float64))
    ev = jb.correlation_eigenvalues(net, x, 0)  # pre-activations = 5 independent inputs
    assert ev.shape == (5,) and (ev - 1).abs().max() < 0.1
    with torch.no_grad():
        net.blocks[0].linear.weight[1] = net.blocks[0].linear.weight[0]
    ev = jb.correlation_eigenvalues(net, x, 0)  # two identical units: one eigenvalue 2, one 0
    assert abs(ev[0] - 2) < 0.1 and ev[-1] < 1e-8
    with pytest.raises(ValueError, match="layer"):
        jb.correlation_eigenvalues(net, x, 3)
    with pytest.raises(ValueError, match="more examples"):
        jb.correlation_eigenvalues(net, x[:4], 0)


def _constant_variance(x, gamma, eps):
    m = x.shape[0]
    s = 1 / torch.sqrt(x.var(unbiased=False) + eps)
    return gamma * s * (torch.eye(m, dtype=x.dtype) - torch.ones(m, m, dtype=x.dtype) / m)


def _without_eps(x, gamma, eps):
    return own_jacobian(x, gamma, 0.0)


def test_check_bn_jacobian_passes_the_formula_and_names_mistakes():
    assert checks.check_bn_jacobian(own_jacobian, verbose=False).passed
    assert checks.check_bn_jacobian(own_jacobian, sizes=(3, 30), seed=7, verbose=False).passed
    wrong = checks.check_bn_jacobian(_constant_variance, verbose=False)
    assert not wrong.passed and "variance depends on x" in wrong.message
    wrong = checks.check_bn_jacobian(_without_eps, verbose=False)
    assert not wrong.passed and "include eps" in wrong.message and "eps = 0.5" in wrong.message
    wrong = checks.check_bn_jacobian(lambda x, g, e: own_jacobian(x, g, e).T[:-1],
                                     verbose=False)
    assert not wrong.passed and "shape" in wrong.message
    with pytest.raises(ValueError, match="sizes"):
        checks.check_bn_jacobian(own_jacobian, sizes=(2,), verbose=False)


def test_check_bn_jacobian_reports_a_stub_as_todo():
    def stub(x, gamma, eps):
        raise NotImplementedError("ex-ch2-bn-jacobian: write it")

    verdict = checks.check_bn_jacobian(stub, verbose=False)
    assert not verdict.passed and verdict.todo


def _ratio(before, after):
    return {name: float((a.weight - b.weight).detach().norm() / b.weight.detach().norm())
            for (name, b), (_, a) in zip(before.named_modules(), after.named_modules())
            if isinstance(b, torch.nn.Linear)}


def _ratio_with_bias(before, after):
    out = {}
    for (name, b), (_, a) in zip(before.named_modules(), after.named_modules()):
        if isinstance(b, torch.nn.Linear):
            w_b = torch.cat([b.weight.flatten(), b.bias]).detach()
            w_a = torch.cat([a.weight.flatten(), a.bias]).detach()
            out[name] = float((w_a - w_b).norm() / w_b.norm())
    return out


def test_check_update_ratio():
    assert checks.check_update_ratio(_ratio, verbose=False).passed
    assert checks.check_update_ratio(_ratio, seed=3, verbose=False).passed
    wrong = checks.check_update_ratio(_ratio_with_bias, verbose=False)
    assert not wrong.passed and "biases" in wrong.message
    wrong = checks.check_update_ratio(lambda b, a: {"0": 0.1}, verbose=False)
    assert not wrong.passed and "one entry per nn.Linear" in wrong.message

    def mutates(before, after):
        out = _ratio(before, after)
        with torch.no_grad():
            before[0].weight.zero_()
        return out

    assert "changed the model" in checks.check_update_ratio(mutates, verbose=False).message
    assert checks.check_update_ratio(..., verbose=False).todo


def _linear_pairs(before, after):
    return [(name, b, a) for (name, b), (_, a) in zip(before.named_modules(),
                                                      after.named_modules())
            if isinstance(b, torch.nn.Linear)]


def test_check_update_ratio_names_the_near_misses_without_the_answer():
    def std_ratio(before, after):
        return {n: float((a.weight - b.weight).detach().std() / b.weight.detach().std())
                for n, b, a in _linear_pairs(before, after)}

    def after_step(before, after):
        return {n: float((a.weight - b.weight).detach().norm() / a.weight.detach().norm())
                for n, b, a in _linear_pairs(before, after)}

    def swapped(before, after):
        right = _ratio(before, after)
        names = list(right)
        return {names[0]: right[names[1]], names[1]: right[names[0]], names[2]: right[names[2]]}

    for fn, words in ((std_ratio, "standard deviations"), (after_step, "before the step"),
                      (swapped, "another layer's")):
        wrong = checks.check_update_ratio(fn, verbose=False)
        assert not wrong.passed and words in wrong.message, wrong.message
        assert "expected" not in wrong.message


def test_check_bn_jacobian_names_a_missing_gamma_or_s():
    def without_gamma(x, gamma, eps):
        return own_jacobian(x, 1.0, eps)

    def without_gamma_s(x, gamma, eps):
        s = 1 / torch.sqrt(x.var(unbiased=False) + eps)
        return own_jacobian(x, 1.0, eps) / s

    for fn, words in ((without_gamma, "factor gamma is missing"),
                      (without_gamma_s, "sqrt(var + eps) is missing")):
        wrong = checks.check_bn_jacobian(fn, verbose=False)
        assert not wrong.passed and words in wrong.message, wrong.message
