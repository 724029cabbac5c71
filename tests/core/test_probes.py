"""bnlessons.probes: what a layer sees, its percentiles and variances, during training."""
import pytest
import torch

from bnlessons import models, probes, train

from conftest import gaussian_classes


def test_recorder_percentiles_and_variances():
    torch.manual_seed(0)
    model = models.MLP(6, 2, width=16, depth=3, activation="sigmoid")
    mods = probes.activation_inputs(model)
    with probes.ActivationRecorder(mods) as rec:
        model(torch.randn(100, 6))
    assert set(rec.last) == {"layer1", "layer2", "layer3"}
    pct = probes.percentiles(rec.last["layer3"])
    assert pct.shape == (3, 16) and bool((pct[0] <= pct[1]).all() and (pct[1] <= pct[2]).all())
    v = torch.arange(101.0).unsqueeze(1)
    assert probes.percentiles(v, (15, 50, 85))[:, 0].tolist() == [15.0, 50.0, 85.0]
    x = torch.randn(50, 6)
    variances = probes.layer_variances(model, x, mods, capture="input")
    model.eval()  # so that a second pass sees exactly what the first one did
    variances = probes.layer_variances(model, x, mods, capture="input")
    with probes.ActivationRecorder(mods, "input") as rec:
        model(x)
    for name, value in variances.items():  # the variance of everything each layer saw
        assert value == pytest.approx(float(rec.last[name].var(unbiased=False)))
    model.train()
    with pytest.raises(ValueError, match="capture"):
        probes.ActivationRecorder(mods, capture="grad")
    with pytest.raises(ValueError, match="percentiles"):
        probes.percentiles(v, (150,))


def test_statistics_recorder_through_training():
    d = gaussian_classes(300, 100, features=6)
    torch.manual_seed(0)
    model = models.MLP(6, 2, width=8, depth=2, activation="sigmoid", norm="bn")
    record = probes.statistics_recorder(probes.activation_inputs(model), d.x_test[:50])
    h = train.train(model, d, steps=20, lr=0.1, eval_every=10, record=record, progress=False)
    assert len(h.records["layer2/percentiles"]) == 3
    assert h.records["layer2/percentiles"][0].shape == (3, 8)
    # the records are what the probe batch gives in eval mode at that step: the last one
    # must equal a fresh measurement on the trained network
    last = probes.capture_in_eval(model, d.x_test[:50], probes.activation_inputs(model))
    torch.testing.assert_close(h.records["layer1/var"][-1],
                               last["layer1"].var(dim=0, unbiased=False))
    assert model.training
    with pytest.raises(ValueError, match="x_probe"):
        probes.statistics_recorder(probes.activation_inputs(model), d.x_test[:1])
