"""A test that calls ``bnlessons.setup`` does not change the tests after it.

The autouse fixture of conftest.py runs each test inside
``restored_global_state``; here that context manager undoes ``setup`` and a
change of every other setting it restores.
"""
import random

import matplotlib
import numpy as np
import torch

import bnlessons

from conftest import restored_global_state


def settings() -> dict:
    return {
        "threads": torch.get_num_threads(),
        "deterministic": torch.are_deterministic_algorithms_enabled(),
        "mkldnn": torch.backends.mkldnn.enabled,
        "nnpack": torch._C._get_nnpack_enabled(),
        "dtype": torch.get_default_dtype(),
        "font size": matplotlib.rcParams["font.size"],
    }


def draws() -> tuple:
    return torch.rand(3).tolist(), np.random.rand(3).tolist(), random.random()


def test_setup_and_every_other_change_are_undone():
    before = settings()
    with restored_global_state():
        expected_draws = draws()
        bnlessons.setup(5, threads=before["threads"] + 1)
        torch.use_deterministic_algorithms(not before["deterministic"])
        torch.backends.mkldnn.enabled = not before["mkldnn"]
        torch.backends.nnpack.set_flags(not before["nnpack"])
        torch.set_default_dtype(torch.float64)
        matplotlib.rcParams["font.size"] = before["font size"] + 3
        changed = settings()
        assert all(changed[k] != before[k] for k in before), (changed, before)
    assert settings() == before
    assert draws() == expected_draws  # the random streams are back where they were


def test_every_test_runs_inside_the_fixture(request):
    assert "restore_global_state" in request.fixturenames
