"""A fingerprint of the numerics the lessons rely on, for the portability check.

Prints one JSON object: a SHA-256 prefix of the bytes of each result (a short
BN training run, a convolutional one, NumPy float64 maths, scikit-learn's
logistic regression). Two processes agree on every entry only if every
kernel on the way rounded identically. Small on purpose: .ci/check-portability
also runs it under an emulated processor, about a hundred times slower.
"""
from __future__ import annotations

import hashlib
import json

import numpy as np
import torch
from torch import nn

import bnlessons
from bnlessons import data, models, train
from bnlessons.covariate_shift import shift


def digest(*arrays) -> str:
    h = hashlib.sha256()
    for a in arrays:
        a = a.detach().cpu().numpy() if isinstance(a, torch.Tensor) else np.asarray(a)
        h.update(np.ascontiguousarray(a).tobytes())
    return h.hexdigest()[:16]


def params(model: nn.Module) -> list[torch.Tensor]:
    return [p for p in model.state_dict().values() if p.is_floating_point()]


def main() -> None:
    generator = bnlessons.setup(0)
    mnist = data.mnist_subset()
    result = {}

    mlp = models.MLP(784, 10, width=64, depth=2, norm="bn", init="he")
    history = train.train(mlp, mnist, 20, 0.5, batch_size=64, momentum=0.9, seed=0,
                          eval_every=20, progress=False)
    result["mlp"] = digest(*params(mlp), history.train_loss, history.test_acc)

    torch.manual_seed(0)
    cnn = nn.Sequential(nn.Unflatten(1, (1, 28, 28)), nn.Conv2d(1, 4, 3), nn.BatchNorm2d(4),
                        nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(4, 8, 3), nn.BatchNorm2d(8),
                        nn.ReLU(), nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(32, 10))
    history = train.train(cnn, mnist, 3, 0.1, batch_size=32, seed=0, eval_every=3,
                          progress=False)
    result["cnn"] = digest(*params(cnn), history.train_loss, history.test_acc)

    a = np.random.default_rng(0).standard_normal((200, 200))
    result["numpy"] = digest(np.exp(a), np.tanh(a), np.log1p(np.abs(a)), np.sin(a), a @ a,
                             np.linalg.solve(a @ a.T + np.eye(200), a[:, 0]))

    x = torch.randn(500, 2, generator=generator, dtype=torch.float64)
    y = (x[:, 1] > torch.sin(x[:, 0])).long()
    clf = shift.fit_linear_classifier(x, y)
    result["sklearn"] = digest(clf.weight, np.array([clf.bias]))
    print(json.dumps(result, sort_keys=True))


if __name__ == "__main__":
    main()
