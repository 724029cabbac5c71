"""bnlessons.train: the seeded training loop, History, evaluate and eval_mode."""
import math

import pytest
import torch

import bnlessons
from bnlessons import models, train
from bnlessons.train import History

from conftest import gaussian_classes


def tiny_data():
    return gaussian_classes(300, 100, features=6)


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


def test_training_with_replacement_respects_frozen_parameters():
    torch.manual_seed(0)
    net = models.small_cnn()
    for p in net.parameters():
        p.requires_grad_(False)
    for p in net[8].parameters():
        p.requires_grad_(True)
    conv, head = net[0].weight.clone(), net[8].weight.clone()
    images = gaussian_classes(20, 6, features=(1, 8, 8), classes=10)
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


def test_history_trained_is_finite_loss_and_accuracy():
    ok = History(steps=[0, 10], test_acc=[0.1, 0.8])
    assert ok.trained(0.8) and not ok.trained(0.81)
    blew_up = History(steps=[0, 10], test_acc=[0.1, 0.9], diverged_at=7)
    assert not blew_up.trained(0.5)  # a high accuracy before the blow-up does not count
    assert not History().trained(0.0)  # never evaluated: NaN accuracy
    with pytest.raises(ValueError, match="min_accuracy"):
        ok.trained(80)


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
    with pytest.raises(ValueError, match=r"param_lrs\['head.weight'\] must be a finite number > 0"):
        train.make_optimizer(model, "sgd", 0.1, 0.0, 0.0, param_lrs={"head.weight": -1.0})
    with pytest.raises(TypeError, match="param_lrs"):
        train.make_optimizer(model, "sgd", 0.1, 0.0, 0.0, param_lrs=[("head.weight", 0.1)])
    with pytest.raises(TypeError, match="after_step"):
        train.train(model, d, steps=1, lr=0.1, after_step="renormalise", progress=False)
