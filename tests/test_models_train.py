"""Models, the training loop, probes and the progress bar."""
import io
import math

import pytest
import torch
from torch import nn

import bnlessons
from bnlessons import data, models, probes, progress, train
from bnlessons.reference import BatchNorm


def tiny_data():
    g = torch.Generator().manual_seed(0)
    x = torch.randn(400, 6, generator=g)
    y = (x[:, 0] + x[:, 1] > 0).long()
    return data.Dataset("tiny", x[:300], y[:300], x[300:], y[300:])


@pytest.mark.parametrize("norm", [None, "bn", "reference", "ln", "gn"])
@pytest.mark.parametrize("position", ["before", "after"])
def test_mlp_shapes_and_layers(norm, position):
    m = models.MLP(6, 3, width=16, depth=2, activation="tanh", norm=norm, norm_position=position,
                   dropout=0.1)
    assert m(torch.randn(5, 6)).shape == (5, 3)
    assert len(m.blocks) == 2
    kinds = {None: nn.Identity, "bn": nn.BatchNorm1d, "reference": BatchNorm,
             "ln": nn.LayerNorm, "gn": nn.GroupNorm}
    assert isinstance(m.blocks[0].norm, kinds[norm])
    # a bias right before BN is redundant and dropped
    expect_bias = not (norm in ("bn", "reference") and position == "before")
    assert (m.blocks[0].linear.bias is not None) == expect_bias


def test_mlp_init_std_and_bad_arguments():
    m = models.MLP(784, 10, width=100, depth=3, activation="sigmoid", init=0.01)
    assert abs(m.blocks[1].linear.weight.std().item() - 0.01) < 0.001
    with pytest.raises(ValueError, match="activation"):
        models.MLP(4, 2, activation="gelu")
    with pytest.raises(ValueError, match="norm must be one of"):
        models.MLP(4, 2, norm="batchnorm")
    with pytest.raises(ValueError, match="dropout"):
        models.MLP(4, 2, dropout=1.0)
    with pytest.raises(ValueError, match="init"):
        models.MLP(4, 2, init="orthogonal")


def test_residual_blocks_scale_and_styles():
    block = models.ResidualBlock(8, norm="bn", scale=0.0)
    x = torch.randn(4, 8)
    assert torch.equal(block(x), x)  # SkipInit: the block starts as the identity
    post = models.ResidualBlock(8, norm="bn", style="post", branch_layers=2,
                                zero_init_last_norm=True)
    assert torch.equal(post(x), torch.relu(x))  # zero gamma: branch is silent
    net = models.ResidualMLP(6, 3, width=8, depth=4, norm="bn", scale=0.0)
    assert net(torch.randn(5, 6)).shape == (5, 3)
    cnn = models.ResidualCNN(1, 10, channels=8, depth=2, norm="bn")
    assert cnn(torch.randn(2, 1, 12, 12)).shape == (2, 10)
    with pytest.raises(ValueError, match="images"):
        cnn(torch.randn(2, 144))
    with pytest.raises(ValueError, match="affine norm"):
        models.ResidualBlock(8, norm=None, style="post", zero_init_last_norm=True)
    with pytest.raises(ValueError, match="style='post' only"):
        models.ResidualBlock(8, norm="bn", zero_init_last_norm=True)


def test_post_block_with_zero_gamma_still_learns():
    torch.manual_seed(0)
    post = models.ResidualBlock(8, norm="bn", style="post", branch_layers=2,
                                zero_init_last_norm=True)
    x = torch.randn(16, 8)
    post(x).square().sum().backward()
    last_norm = post.branch[-1]
    assert last_norm.weight.grad.abs().max() > 0  # gamma leaves zero at the first step


def test_unnormalised_residual_stack_doubles_variance():
    torch.manual_seed(0)
    net = models.ResidualMLP(64, 2, width=256, depth=6, norm=None, activation="linear",
                             init=1.0 / 16)  # std 1/sqrt(256): variance-preserving branch
    x = torch.randn(2000, 256)
    v0 = x.var().item()
    for block in net.blocks:
        x = block(x)
    assert 40 < x.var().item() / v0 < 90  # 2**6 = 64


def test_training_is_seeded_and_learns():
    bnlessons.setup(0)
    d = tiny_data()
    runs = []
    for _ in range(2):
        torch.manual_seed(1)
        model = models.MLP(6, 2, width=16, depth=2, norm="reference")
        runs.append(train.train(model, d, steps=60, lr=0.1, batch_size=32, eval_every=20,
                                seed=3, progress=False))
    assert runs[0].test_acc == runs[1].test_acc and runs[0].train_loss == runs[1].train_loss
    assert runs[0].steps == [0, 20, 40, 60]
    assert runs[0].test_acc[-1] > 0.85 > runs[0].test_acc[0]
    assert runs[0].first_step_reaching(0.85) in (20, 40, 60)
    assert not runs[0].diverged


def test_training_stops_on_divergence_and_records():
    d = tiny_data()
    torch.manual_seed(0)
    model = models.MLP(6, 2, width=16, depth=2, init=5.0)
    seen = []

    def record(m, step):
        seen.append(step)
        return {"norm": sum(p.norm().item() for p in m.parameters())}

    h = train.train(model, d, steps=50, lr=1e6, eval_every=10, record=record, progress=False)
    assert h.diverged and h.diverged_at <= 50
    assert h.test_acc and math.isnan(h.final_acc)  # the last evaluation predates the blow-up
    assert not h.trained(0.0)
    assert len(h.records["norm"]) == len(h.steps) == len(seen)
    with pytest.raises(ValueError, match="lr"):
        train.train(model, d, steps=1, lr=0.0, progress=False)
    with pytest.raises(ValueError, match="optimizer"):
        train.train(model, d, steps=1, lr=0.1, optimizer="lbfgs", progress=False)


def test_evaluate_restores_training_mode():
    d = tiny_data()
    model = models.MLP(6, 2, width=8, depth=1, norm="bn")
    model.train()
    train.evaluate(model, d.x_test, d.y_test)
    assert model.training


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
    d = tiny_data()
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


def test_progress_bar_final_text_is_deterministic():
    buffers = []
    for _ in range(2):
        buf = io.StringIO()
        bar = progress.progress_bar(1000, "run", file=buf)
        for _ in range(1000):
            bar.update(1)
        bar.close()
        buffers.append(buf.getvalue().split("\r")[-1])
    assert buffers[0] == buffers[1]
    assert "it/s" not in buffers[0] and "1000/1000" in buffers[0]


def test_setup_is_reproducible_and_validates():
    g1 = bnlessons.setup(7)
    a = (torch.rand(3).tolist(), torch.rand(2, generator=g1).tolist())
    g2 = bnlessons.setup(7)
    b = (torch.rand(3).tolist(), torch.rand(2, generator=g2).tolist())
    assert a == b
    assert torch.get_num_threads() == 1
    with pytest.raises(TypeError, match="seed"):
        bnlessons.setup("0")
    with pytest.raises(ValueError, match="threads"):
        bnlessons.setup(0, threads=0)


def test_eval_mode_restores_every_submodule_even_after_an_error():
    from bnlessons.train import eval_mode

    model = torch.nn.Sequential(torch.nn.Linear(3, 3), torch.nn.BatchNorm1d(3),
                                torch.nn.Dropout(0.5))
    model.train()
    model[1].eval()  # a frozen BN inside a model in training mode
    before = [m.training for m in model.modules()]
    with eval_mode(model):
        assert not any(m.training for m in model.modules())
    assert [m.training for m in model.modules()] == before
    with pytest.raises(RuntimeError, match="boom"):
        with eval_mode(model):
            raise RuntimeError("boom")
    assert [m.training for m in model.modules()] == before
    with pytest.raises(TypeError, match="nn.Module"):
        with eval_mode("not a model"):
            pass


def test_moving_average_is_trailing_and_validates():
    from bnlessons.plots import moving_average

    out = moving_average([2.0, 4.0, 6.0, 8.0], 3)
    assert out.tolist() == [2.0, 3.0, 4.0, 6.0]  # 8's window is 4, 6, 8: no look-ahead
    assert moving_average(torch.tensor([1.0, 3.0]), 1).tolist() == [1.0, 3.0]
    with pytest.raises(ValueError, match="window"):
        moving_average([1.0], 0)
    with pytest.raises(TypeError, match="window"):
        moving_average([1.0], 2.5)
    with pytest.raises(ValueError, match="non-empty"):
        moving_average([], 2)


def test_small_cnn_layers_and_bad_channels():
    net = models.small_cnn()
    assert [type(m).__name__ for m in net][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert net[0].bias is None and models.small_cnn(norm=False)[0].bias is not None
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="channels"):
        models.small_cnn(channels=(4,))


def test_training_with_replacement_respects_frozen_parameters():
    torch.manual_seed(0)
    net = models.small_cnn()
    for p in net.parameters():
        p.requires_grad_(False)
    for p in net[8].parameters():
        p.requires_grad_(True)
    conv, head = net[0].weight.clone(), net[8].weight.clone()
    images = data.Dataset("toy", torch.randn(20, 1, 8, 8), torch.randint(10, (20,)),
                          torch.randn(6, 1, 8, 8), torch.randint(10, (6,)))
    history = train.train(net, images, steps=3, lr=0.1, batch_size=4, momentum=0.9,
                          replacement=True, progress=False)
    assert len(history.train_loss) == 3
    assert torch.equal(conv, net[0].weight) and not torch.equal(head, net[8].weight)
    assert int(net[1].num_batches_tracked) == 3  # BN still updated its statistics


def test_decay_only_restricts_weight_decay_to_the_named_parameters():
    d = tiny_data()
    torch.manual_seed(0)
    model = models.MLP(6, 2, width=4, depth=1)
    opt = train.make_optimizer(model, "sgd", 0.1, 0.0, 0.5, decay_only=["blocks.0.linear.weight"])
    decays = {id(p): group["weight_decay"] for group in opt.param_groups for p in group["params"]}
    assert decays[id(model.blocks[0].linear.weight)] == 0.5
    assert decays[id(model.head.weight)] == 0.0 and decays[id(model.blocks[0].linear.bias)] == 0.0
    with pytest.raises(ValueError, match="names no parameter"):
        train.make_optimizer(model, "sgd", 0.1, 0.0, 0.5, decay_only=["head.wieght"])
    with pytest.raises(TypeError, match="one string"):
        train.make_optimizer(model, "sgd", 0.1, 0.0, 0.5, decay_only="head.weight")
    # with every parameter decayed, the two forms train identically
    runs = []
    for decay_only in (None, [name for name, _ in model.named_parameters()]):
        torch.manual_seed(1)
        net = models.MLP(6, 2, width=4, depth=1)
        train.train(net, d, steps=5, lr=0.1, weight_decay=0.1, decay_only=decay_only,
                    progress=False)
        runs.append(torch.cat([p.detach().flatten() for p in net.parameters()]))
    assert torch.equal(runs[0], runs[1])


def test_lr_schedule_scales_each_update_and_validates():
    d = tiny_data()

    def final_weights(lr, schedule):
        torch.manual_seed(1)
        net = models.MLP(6, 2, width=4, depth=1)
        train.train(net, d, steps=4, lr=lr, lr_schedule=schedule, progress=False)
        return torch.cat([p.detach().flatten() for p in net.parameters()])

    # a constant factor is the same as a smaller rate; a zero factor freezes the model
    assert torch.allclose(final_weights(0.2, lambda step: 0.5), final_weights(0.1, None),
                          rtol=1e-6, atol=1e-7)
    torch.manual_seed(1)
    start = torch.cat([p.detach().flatten() for p in models.MLP(6, 2, width=4, depth=1)
                       .parameters()])
    assert torch.equal(final_weights(0.1, lambda step: 0.0), start)
    # the factor follows the step: only the first update is taken
    assert torch.equal(final_weights(0.1, lambda step: 1.0 if step == 1 else 0.0),
                       final_weights(0.1, None)) is False
    seen = []
    final_weights(0.1, lambda step: seen.append(step) or 1.0)
    assert seen == [1, 2, 3, 4]
    with pytest.raises(TypeError, match="lr_schedule"):
        train.train(models.MLP(6, 2, width=4, depth=1), d, steps=1, lr=0.1, lr_schedule=0.5,
                    progress=False)
    with pytest.raises(ValueError, match="lr_schedule"):
        train.train(models.MLP(6, 2, width=4, depth=1), d, steps=1, lr=0.1,
                    lr_schedule=lambda step: -1.0, progress=False)


def test_param_lrs_give_named_parameters_their_own_rate():
    d = tiny_data()
    torch.manual_seed(1)
    model = models.MLP(6, 2, width=4, depth=1)
    start = {n: p.detach().clone() for n, p in model.named_parameters()}
    seen = []

    def after(m, step):
        assert not torch.is_grad_enabled()
        seen.append(step)

    # plain SGD, one step: each parameter moves by its own rate times its gradient
    h = train.train(model, d, steps=1, lr=0.1, param_lrs={"head.weight": 0.4},
                    after_step=after, progress=False)
    assert seen == [1] and not h.diverged
    torch.manual_seed(1)
    twin = models.MLP(6, 2, width=4, depth=1)
    train.train(twin, d, steps=1, lr=0.1, progress=False)
    for name, p in model.named_parameters():
        moved = p.detach() - start[name]
        moved_twin = dict(twin.named_parameters())[name].detach() - start[name]
        factor = 4.0 if name == "head.weight" else 1.0
        assert torch.allclose(moved, factor * moved_twin, rtol=1e-5, atol=1e-8), name
    with pytest.raises(ValueError, match="names no parameter"):
        train.make_optimizer(model, "sgd", 0.1, 0.0, 0.0, param_lrs={"head.wieght": 0.1})
    with pytest.raises(ValueError, match="positive"):
        train.make_optimizer(model, "sgd", 0.1, 0.0, 0.0, param_lrs={"head.weight": -1.0})
    with pytest.raises(TypeError, match="param_lrs"):
        train.make_optimizer(model, "sgd", 0.1, 0.0, 0.0, param_lrs=[("head.weight", 0.1)])
    with pytest.raises(TypeError, match="after_step"):
        train.train(model, d, steps=1, lr=0.1, after_step="renormalise", progress=False)
