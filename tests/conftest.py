"""What the tests share: toy datasets, reference solutions, and a clean global state.

Test modules import the helpers by name (``from conftest import gaussian_classes``),
which works because this file sits at the top of ``tests/`` and pytest's default
import mode puts its folder on ``sys.path``.

Every test starts from the global state the session started with: the autouse
fixture :func:`restore_global_state` undoes what a test changes in torch's,
NumPy's and Python's random generators, torch's thread count, deterministic
mode, oneDNN and NNPACK flags and default dtype, and matplotlib's rcParams.
``bnlessons.setup`` changes most of these, and a test that calls it would
otherwise leave one thread and deterministic mode to every test after it.
"""
from __future__ import annotations

import contextlib
import random
from collections.abc import Iterator
from typing import Union

import matplotlib
import numpy as np
import pytest
import torch

from bnlessons.data import Dataset

pytest_plugins = ("pytester",)


# --- global state ----------------------------------------------------------------------------

def _deterministic_mode() -> tuple[bool, bool]:
    return (torch.are_deterministic_algorithms_enabled(),
            torch.is_deterministic_algorithms_warn_only_enabled())


@contextlib.contextmanager
def restored_global_state() -> Iterator[None]:
    """Run the body, then put back every process-wide setting a test may change."""
    torch_rng, numpy_rng, python_rng = torch.get_rng_state(), np.random.get_state(), \
        random.getstate()
    threads = torch.get_num_threads()
    deterministic = _deterministic_mode()
    mkldnn = torch.backends.mkldnn.enabled
    nnpack = torch._C._get_nnpack_enabled()
    dtype = torch.get_default_dtype()
    try:
        with matplotlib.rc_context():  # restores every rcParam but the backend
            yield
    finally:
        torch.set_rng_state(torch_rng)
        np.random.set_state(numpy_rng)
        random.setstate(python_rng)
        torch.set_num_threads(threads)
        if _deterministic_mode() != deterministic:  # the first call takes a second
            torch.use_deterministic_algorithms(deterministic[0], warn_only=deterministic[1])
        torch.backends.mkldnn.enabled = mkldnn
        torch.backends.nnpack.set_flags(nnpack)
        torch.set_default_dtype(dtype)


@pytest.fixture(autouse=True)
def restore_global_state() -> Iterator[None]:
    """Each test leaves the global state as it found it (see the module's docstring)."""
    with restored_global_state():
        yield


# --- toy datasets ----------------------------------------------------------------------------

def gaussian_classes(n_train: int, n_test: int, features: Union[int, tuple[int, ...]] = 6,
                     classes: int = 2, seed: int = 0) -> Dataset:
    """Standard normal inputs labelled by how many of their first ``classes - 1``
    values are positive.

    With two classes the label is the sign of the first input, with three the
    signs of the first two: a rule a small network learns in a few dozen steps
    at any reasonable learning rate, so a test can tell learning from
    diverging. ``features`` may be a shape, e.g. ``(1, 8, 8)`` for images. The
    draws come from a generator seeded with ``seed``, not from the global one.
    """
    shape = (features,) if isinstance(features, int) else tuple(features)
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(n_train + n_test, *shape, generator=g)
    y = (x.flatten(1)[:, :classes - 1] > 0).sum(1)
    return Dataset("toy", x[:n_train], y[:n_train], x[n_train:], y[n_train:])


# --- reference solutions of the exercises, written independently of bnlessons ----------------

def forward_by_pytorch(x: torch.Tensor, gamma: torch.Tensor, beta: torch.Tensor,
                       eps: float) -> tuple[torch.Tensor, tuple]:
    """BN's training-mode forward pass by ``torch.nn.functional.batch_norm``, with a
    cache for :func:`backward_by_autograd`: a solution that owes nothing to
    ``bnlessons.reference``, which the checks compare against."""
    out = torch.nn.functional.batch_norm(x, None, None, gamma, beta, training=True, eps=eps)
    return out, (x, gamma, beta, eps)


def backward_by_autograd(dout: torch.Tensor, cache: tuple) -> tuple[torch.Tensor, ...]:
    """dx, dgamma and dbeta of :func:`forward_by_pytorch`, by autograd."""
    x, gamma, beta, eps = cache
    leaves = [t.detach().requires_grad_() for t in (x, gamma, beta)]
    out, _ = forward_by_pytorch(*leaves, eps)
    return torch.autograd.grad(out, leaves, dout)


def staged_backward(dout: torch.Tensor, cache) -> dict[str, torch.Tensor]:
    """A correct staged backward: the six nodes of the lesson's computational graph."""
    x, mu, var, eps = cache.x, cache.mu, cache.var, cache.eps
    m = x.shape[0]
    centred = x - mu
    dxhat = dout * cache.gamma
    dvar = (dxhat * centred).sum(0) * -0.5 * (var + eps) ** -1.5
    dmu = (-dxhat * cache.inv_std).sum(0) + dvar * (-2 * centred).sum(0) / m
    dx = dxhat * cache.inv_std + dvar * 2 * centred / m + dmu / m
    return {"dbeta": dout.sum(0), "dgamma": (dout * cache.xhat).sum(0), "dxhat": dxhat,
            "dvar": dvar, "dmu": dmu, "dx": dx}


def variance_prediction(design: str, depth: int, alpha: float) -> torch.Tensor:
    """A correct answer to the residual chapter's exercise: Var(x_l), l = 0..depth.

    A variance-preserving linear branch adds alpha^2 Var(x_{l-1}) at each block;
    a branch that normalises first adds alpha^2.
    """
    steps = torch.arange(depth + 1, dtype=torch.float64)
    return (1 + alpha**2) ** steps if design == "linear" else 1 + alpha**2 * steps


def largest_stable_lr(train_at, lrs, min_accuracy):
    """A correct answer to the largest-stable-rate exercise: the largest rate of an
    ascending walk whose run trained (``History.trained``, the library's one rule)."""
    best = None
    for lr in sorted(lrs):
        if not train_at(lr).trained(min_accuracy):
            break
        best = lr
    return best


def by_hand(fn):
    """``fn``, one of the package's own answers to an exercise, standing in for a learner's
    correct answer written by hand: while it runs, a check does not refuse it (the checks
    refuse the package's answers inside the learner's code; see ``bnlessons._own_work``).
    For tests of what a check says about a correct answer."""
    from bnlessons import _own_work

    def run(*args, **kwargs):
        outer = _own_work._run
        _own_work._run = None
        try:
            return fn(*args, **kwargs)
        finally:
            _own_work._run = outer

    return run
