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


def _mlp():
    from bnlessons.models import MLP
    return MLP(4, 2, width=3, depth=2)


def _batch():
    return torch.randn(6, 4), torch.tensor([0, 1, 0, 1, 0, 1])


def _site_calls():
    """One wrong type and one bad value per argument checked through ``_validate``."""
    from bnlessons import data, lr_sweep, models, probes, reproducibility, running_stats, train
    from bnlessons.bn_math import jacobian, scale_invariance
    from bnlessons.covariate_shift import ics, landscape, noise, shift
    from bnlessons.inference import deploy, precise_bn, small_batch
    from bnlessons.placement import dropout
    from bnlessons.residual import propagation, variants

    x, y = _batch()
    rm, rv = torch.zeros(4), torch.ones(4)
    return [
        (lambda: ics.internal_covariate_shift(_mlp(), x, y, "0.1"), TypeError, "lr"),
        (lambda: ics.internal_covariate_shift(_mlp(), x, y, 0.0), ValueError, "lr"),
        (lambda: (lambda m: ics.percentile_probe(m, x.numpy(), m.blocks[-1].act))(_mlp()),
         TypeError, "x must be a"),
        (lambda: ics.spread_growth([[1.0]], [0], 0), TypeError, "pcts"),
        (lambda: landscape.along_gradient(_mlp(), x, y, None), TypeError, "lr"),
        (lambda: landscape.along_gradient(_mlp(), x, y, 0.1, (1.0, -2.0)), ValueError,
         r"multipliers\[1\]"),
        (lambda: noise.step_drift(_mlp(), x, y, True, {}, steps=2), TypeError, "lr"),
        (lambda: noise.step_drift(_mlp(), x, y, float("inf"), {}, steps=2), ValueError, "lr"),
        (lambda: noise.ShiftScaleNoise(relative=1), TypeError, "relative"),
        (lambda: shift.fit_linear_classifier(torch.zeros(4, 2), [0, 1, 0, 1]), TypeError, "y"),
        (lambda: shift.fit_linear_classifier(torch.zeros(4, 2), torch.zeros(3)), ValueError,
         "y must have shape"),
        (lambda: scale_invariance.linear_bn_layer(3, 3, eps="0"), TypeError, "eps"),
        (lambda: scale_invariance.equilibrium_norm_sq(0.1, 0.5, "1"), TypeError,
         "mean_grad_sq"),
        (lambda: scale_invariance.equilibrium_norm_sq(0.1, 0.5, -1.0), ValueError,
         "mean_grad_sq"),
        (lambda: scale_invariance.equilibrium_norm_sq(0.1, None, 1.0), TypeError,
         "weight_decay"),
        (lambda: scale_invariance.equilibrium_norm_sq(0.1, 10.0, 1.0), ValueError,
         r"weight_decay must be in \[0, 1/lr\)"),
        (lambda: jacobian.singular_value_summary([torch.eye(2)], band=0.5), TypeError, "band"),
        (lambda: jacobian.singular_value_summary([torch.eye(2)], band=(1.0, 1.0)), ValueError,
         "band"),
        (lambda: jacobian.correlation_eigenvalues(_mlp(), torch.randn(8, 4), 1.0), TypeError,
         "layer"),
        (lambda: jacobian.correlation_eigenvalues(_mlp(), torch.randn(8, 4), 2), ValueError,
         r"layer must be an int in \[0, 1\]"),
        (lambda: train.History().trained("0.5"), TypeError, "min_accuracy"),
        (lambda: train.History().trained(1.5), ValueError, "min_accuracy"),
        (lambda: train.make_optimizer(_mlp(), "sgd", "0.1", 0.0, 0.0), TypeError, "lr"),
        (lambda: train.make_optimizer(_mlp(), "sgd", -0.1, 0.0, 0.0), ValueError, "lr"),
        (lambda: train.eval_steps(10, 2.5), TypeError, "eval_every"),
        (lambda: train.eval_steps(10, 0), ValueError, "eval_every"),
        (lambda: lr_sweep.geometric_grid(0.1, 1.0, factor="2"), TypeError, "factor"),
        (lambda: running_stats.new_batch_weight(None, 1.0), TypeError, "num_batches_tracked"),
        (lambda: running_stats.new_batch_weight(None, 0), ValueError, "num_batches_tracked"),
        (lambda: running_stats.new_batch_weight(True, 1), TypeError, "momentum"),
        (lambda: running_stats.pytorch_update(rm, rv, -1, x), ValueError,
         "num_batches_tracked"),
        (lambda: running_stats.pytorch_update(rm, rv, 0, x, momentum=1.5), ValueError,
         "momentum"),
        (lambda: running_stats.pytorch_update(rm, rv.double(), 0, x), TypeError, "running_var"),
        (lambda: running_stats.ema_variance_standard_error(0.9, 10, 0.0, 4, True), ValueError,
         "true_var"),
        (lambda: running_stats.ema_variance_standard_error(0.9, 10, "1", 4, True), TypeError,
         "true_var"),
        (lambda: precise_bn.EMATracker(_mlp(), "0.1"), TypeError, "momentum"),
        (lambda: precise_bn.EMATracker(_mlp(), 0.0), ValueError, "momentum"),
        (lambda: precise_bn.EMATracker(_mlp(), 0.1, bias_correction=1), TypeError,
         "bias_correction"),
        (lambda: precise_bn.recompute_bn_stats(_mlp(), x.tolist()), TypeError, "x must be a"),
        (lambda: small_batch.BatchRenorm1d(4, 2, r_max=0.5), ValueError, "r_max"),
        (lambda: small_batch.BatchRenorm1d(4, 2, d_max="5"), TypeError, "d_max"),
        (lambda: deploy.shift_images(torch.rand(2, 4), "noise", "0.1"), TypeError, "amount"),
        (lambda: deploy.shift_images(torch.rand(2, 4), "noise", float("nan")), ValueError,
         "amount"),
        (lambda: deploy.shift_images(torch.ones(2, 4, dtype=torch.uint8), "noise", 0.1),
         TypeError, "floating-point"),
        (lambda: dropout.dropout_mlp("every", in_features=6, num_classes=3, width=8, depth=2,
                                     p_drop=1.0, seed=0), ValueError, "p_drop"),
        (lambda: dropout.variance_ratio(0.0, 1.0, "0.5"), TypeError, "keep probability"),
        (lambda: propagation.residual_stack("linear", 2, 1, scale="1"), TypeError, "scale"),
        (lambda: variants.make_model("skipinit", depth=2, in_features=6, num_classes=3, width=8,
                                     seed=0, dropout=None), TypeError, "dropout"),
        (lambda: variants.branch_weight_change(_mlp(), "net"), TypeError, "trained"),
        (lambda: models.MLP(4, 2, dropout=1.0), ValueError, "dropout"),
        (lambda: models.MLP(4, 2, dropout="0.1"), TypeError, "dropout"),
        (lambda: models.MLP(4, 2, init=-1.0), ValueError, "init"),
        (lambda: models.MLP(4, 2, init=None), TypeError, "init"),
        (lambda: models.small_cnn(channels=(16, 0)), ValueError, r"channels\[1\]"),
        (lambda: models.small_cnn(channels=(16.0, 32)), TypeError, r"channels\[0\]"),
        (lambda: next(data.batches(x, y, 2.0, torch.Generator())), TypeError, "batch_size"),
        (lambda: next(data.batches(x, y, 7, torch.Generator())), ValueError, "batch_size"),
        (lambda: probes.percentiles([1.0, 2.0]), TypeError, "values"),
        (lambda: probes.ActivationRecorder({"a": "relu"}), TypeError, r"modules\['a'\]"),
        (lambda: probes.statistics_recorder({}, x.numpy()), TypeError, "x_probe"),
        (lambda: reproducibility.seed_everything(1.0), TypeError, "seed"),
        (lambda: reproducibility.seed_everything(-1), ValueError, "seed"),
        (lambda: reproducibility.setup(0, threads=True), TypeError, "threads"),
        (lambda: reproducibility.write_kernelspec("/nonexistent", name=3), TypeError, "name"),
        (lambda: BatchNorm(3, momentum="0.1"), TypeError, "momentum"),
        (lambda: BatchNorm(3, eps=float("inf")), ValueError, "eps"),
    ]


@pytest.mark.parametrize("call, error, words", _site_calls())
def test_a_wrong_type_is_a_type_error_and_a_bad_value_a_value_error(call, error, words):
    with pytest.raises(error, match=words):
        call()
