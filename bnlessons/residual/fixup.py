"""Fixup (Zhang, Dauphin & Ma 2019): a residual network trained without normalisation.

Fixup replaces what BN does at initialisation with three rules:

1. the last layer of every residual branch, and the classifier, start at zero,
   so every block is the identity and the network outputs zeros;
2. the other layers of a branch with ``k`` layers, in a network of ``D``
   branches, are He-initialised and then multiplied by ``D ** (-1 / (2k - 2))``
   (the paper writes ``L`` and ``m``; the course keeps ``m`` for the batch),
   which keeps the total change a step of SGD makes to the output independent
   of depth;
3. each branch gets a scalar multiplier (starting at 1) and scalar biases
   (starting at 0) before every linear layer and every activation, and after
   the multiplier, which recover what BN's beta and gamma would have offered.

``FixupResidualMLP`` is the fully connected, pre-activation version used in
the lessons: the same stem and head as ``models.ResidualMLP``.
"""
from __future__ import annotations

import torch
from torch import nn

from bnlessons._own_work import answers
from bnlessons._validate import check_int
from bnlessons.models import make_activation


@answers("check_fixup_exponent")
def fixup_rescale(num_branches: int, branch_layers: int) -> float:
    """Fixup's factor ``D ** (-1 / (2k - 2))`` for the non-final branch layers
    (``D = num_branches``, ``k = branch_layers``).

    With ``branch_layers == 1`` there is no non-final layer, and the factor is 1.
    """
    check_int(num_branches, "num_branches", 1)
    check_int(branch_layers, "branch_layers", 1)
    if branch_layers == 1:
        return 1.0
    return float(num_branches) ** (-1.0 / (2 * branch_layers - 2))


class FixupBlock(nn.Module):
    """``x + scale * f(x) + bias_out``, with scalar biases inside the branch.

    The branch is, for each of its ``branch_layers`` layers,
    ``h <- linear(act(h + bias_act) + bias_lin)``, starting from ``h = x``.
    The linear layers carry no bias of their own; the scalars replace them.
    Call ``reset_fixup(num_branches)`` (``FixupResidualMLP`` does) to apply the
    initialisation rules.
    """

    def __init__(self, width: int, branch_layers: int = 2, activation: str = "relu") -> None:
        super().__init__()
        check_int(width, "width", 1)
        check_int(branch_layers, "branch_layers", 1)
        self.act = make_activation(activation)
        self.linears = nn.ModuleList(nn.Linear(width, width, bias=False)
                                     for _ in range(branch_layers))
        self.bias_act = nn.Parameter(torch.zeros(branch_layers))
        self.bias_lin = nn.Parameter(torch.zeros(branch_layers))
        self.scale = nn.Parameter(torch.tensor(1.0))
        self.bias_out = nn.Parameter(torch.tensor(0.0))

    @property
    def branch_layers(self) -> int:
        return len(self.linears)

    @torch.no_grad()
    def reset_fixup(self, num_branches: int) -> None:
        """Zero the last layer, He-initialise and rescale the others, reset the scalars."""
        factor = fixup_rescale(num_branches, self.branch_layers)
        for linear in self.linears[:-1]:
            nn.init.kaiming_normal_(linear.weight, nonlinearity="relu")
            linear.weight.mul_(factor)
        nn.init.zeros_(self.linears[-1].weight)
        self.bias_act.zero_()
        self.bias_lin.zero_()
        self.scale.fill_(1.0)
        self.bias_out.zero_()

    def branch(self, x: torch.Tensor) -> torch.Tensor:
        h = x
        for i, linear in enumerate(self.linears):
            h = linear(self.act(h + self.bias_act[i]) + self.bias_lin[i])
        return h

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x + self.scale * self.branch(x) + self.bias_out


class FixupResidualMLP(nn.Module):
    """Linear stem -> ``depth`` Fixup blocks -> activation -> linear head (zero at init)."""

    def __init__(self, in_features: int, num_classes: int, width: int = 64, depth: int = 10,
                 branch_layers: int = 2, activation: str = "relu") -> None:
        super().__init__()
        check_int(in_features, "in_features", 1)
        check_int(num_classes, "num_classes", 2)
        check_int(depth, "depth", 1)
        self.stem = nn.Linear(in_features, width)
        self.blocks = nn.ModuleList(FixupBlock(width, branch_layers, activation)
                                    for _ in range(depth))
        self.final_act = make_activation(activation)
        self.head = nn.Linear(width, num_classes)
        self.reset_fixup()

    @torch.no_grad()
    def reset_fixup(self) -> None:
        """Apply Fixup's rules: He stem, rescaled branches, zero last layers and head."""
        nn.init.kaiming_normal_(self.stem.weight, nonlinearity="relu")
        nn.init.zeros_(self.stem.bias)
        for block in self.blocks:
            block.reset_fixup(len(self.blocks))
        nn.init.zeros_(self.head.weight)
        nn.init.zeros_(self.head.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x.flatten(1))
        for block in self.blocks:
            x = block(x)
        return self.head(self.final_act(x))
