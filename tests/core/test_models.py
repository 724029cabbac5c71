"""bnlessons.models: the MLP, residual blocks and networks, the small CNN."""
import pytest
import torch
from torch import nn

from bnlessons import models
from bnlessons.reference import BatchNorm


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


def test_small_cnn_layers_and_bad_channels():
    net = models.small_cnn()
    assert [type(m).__name__ for m in net][:3] == ["Conv2d", "BatchNorm2d", "ReLU"]
    assert net[0].bias is None and models.small_cnn(norm=False)[0].bias is not None
    assert net(torch.randn(2, 1, 8, 8)).shape == (2, 10)
    with pytest.raises(ValueError, match="channels"):
        models.small_cnn(channels=(4,))
